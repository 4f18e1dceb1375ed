"""Queue and task names: the one place both sides agree on them."""

INGEST = "ingest"
"""Live traffic from the receiver."""
REPLAY = "replay"
"""Backfills and dead-letter replays, kept apart so they cannot starve live traffic."""
QUEUES = (INGEST, REPLAY)

APPLY_TASK = "userdest.apply_message"
"""The one task: apply every call of one queued message."""
