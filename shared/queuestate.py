"""What waits in the Redis queues, read without consuming anything: for `userdest queue stats` and
for the queue gauges of /metrics (one reading for both, so they never disagree). The layout it
reads (queues, `unacked`, `unacked_index`) is described in shared/wire.py; what a reading costs is
in docs/operations.md, with the command that measures it.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime

import redis

from shared import wire
from shared.envelope import Envelope
from shared.queues import QUEUES
from shared.timeparse import parse_iso, utcnow


def lag_seconds(envelope: Envelope, now: datetime) -> float | None:
    received = parse_iso(envelope.received_at)
    if received is None:
        return None
    return round(max(0.0, (now - received).total_seconds()), 3)


@dataclass(frozen=True, slots=True)
class QueueState:
    """One queue, at one instant."""

    waiting: int
    unacked: int
    lag_seconds: float | None
    """Age of the oldest waiting message, from its envelope's received_at (None when none waits
    or it cannot be read)."""
    oldest_unacked_seconds: float | None
    """Time since the oldest unacknowledged message was delivered (None when there is none)."""

    def answer(self) -> dict[str, int | float | None]:
        return {
            "waiting": self.waiting,
            "unacked": self.unacked,
            "lag_seconds": self.lag_seconds,
            "oldest_unacked_seconds": self.oldest_unacked_seconds,
        }


def _unacked(client: redis.Redis, clock: float) -> tuple[Counter[str], dict[str, float]]:
    """Unacknowledged messages by queue, and the age of each queue's oldest."""
    queue_of: dict[bytes, str] = {}
    for tag, value in wire.unacked_entries(client):
        key = wire.unacked_queue(value)
        if key is not None:
            queue_of[tag] = key
    counts: Counter[str] = Counter(queue_of.values())
    oldest: dict[str, float] = {}
    if queue_of:
        for tag, delivered in wire.delivery_times(client):
            queue = queue_of.get(tag)
            if queue is not None and queue not in oldest:
                oldest[queue] = round(max(0.0, clock - float(delivered)), 3)
                if len(oldest) == len(counts):
                    break
    return counts, oldest


def read_queues(client: redis.Redis) -> dict[str, QueueState]:
    """Each queue's state: waiting and unacknowledged messages, and the age of the oldest of each."""
    pipe = client.pipeline(transaction=True)
    for queue in QUEUES:
        pipe.llen(queue)
        pipe.lindex(queue, -1)
    answers = pipe.execute()
    clock, now = time.time(), utcnow()
    unacked, oldest_unacked = _unacked(client, clock)
    states: dict[str, QueueState] = {}
    for position, queue in enumerate(QUEUES):
        waiting, oldest = answers[2 * position], answers[2 * position + 1]
        lag = None
        if oldest is not None:
            try:
                lag = lag_seconds(wire.decode_envelope(oldest), now)
            except wire.ForeignMessage:
                lag = None
        states[queue] = QueueState(
            waiting=int(waiting),
            unacked=unacked[queue],
            lag_seconds=lag,
            oldest_unacked_seconds=oldest_unacked.get(queue),
        )
    return states
