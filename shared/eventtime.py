"""Event time: Segment's clock-skew rule, applied once and never twice."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.timeparse import parse_iso

# Rule 4: a time further than this after receivedAt comes from a wrong clock, not from the future.
MAX_FUTURE = timedelta(hours=24)


def _utc(value: datetime) -> datetime:
    """An aware UTC datetime; a naive one is taken as UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def event_time(
    call: dict[str, Any],
    received_at: datetime,
    batch_sent_at: datetime | None = None,
    replayed: bool = False,
    times: Mapping[str, datetime | None] | None = None,
) -> datetime:
    """The time a call's event happened, as an aware UTC datetime.

    Only a replayed call's own `receivedAt` counts (it was received before, and keeps that time);
    a live sender's is its own invention and is ignored. `times`: the call's time fields already
    parsed (by shared.calls.check_call), by name; a field not in it is parsed here.
    """

    def parsed(name: str) -> datetime | None:
        if times is not None and name in times:
            return times[name]
        return parse_iso(call.get(name))

    receiver_received = _utc(received_at)
    received = parse_iso(call.get("receivedAt")) if replayed else None
    # A call cannot have been received long after we received it: rule 4 applied to the call's
    # own receivedAt, so a forged or broken one cannot carry the event time into the future.
    if received is None or received > receiver_received + MAX_FUTURE:
        received = receiver_received

    timestamp = parsed("timestamp")
    original = parsed("originalTimestamp")
    if timestamp is not None and original is not None:
        # Segment already corrected this call (Webhooks destination, an export); do not again.
        result = timestamp
    else:
        own = timestamp if timestamp is not None else original
        sent = parsed("sentAt")
        if sent is None and batch_sent_at is not None:
            sent = _utc(batch_sent_at)
        if own is None:
            result = received
        elif sent is None:
            result = own
        else:
            try:
                result = received - (sent - own)
            except OverflowError:
                # The correction left the calendar: the two client times are nonsense together.
                result = received

    if result > received + MAX_FUTURE:
        return received
    return result
