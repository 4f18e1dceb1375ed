"""ISO-8601 parsing as Segment's sources write it, shared by the receiver's checks and the workers."""

from __future__ import annotations

import re
from datetime import UTC, datetime

_ISO = re.compile(
    r"^\d{4}-\d{2}-\d{2}([Tt ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?([Zz]|[+-]\d{2}(:?\d{2})?)?)?$"
)

_NANOS = re.compile(r"(\.\d{6})\d+")
_HOUR_OFFSET = re.compile(r"[+-]\d{2}$")


def parse_iso(value: object) -> datetime | None:
    """An aware UTC datetime from an ISO-8601 string (no offset means UTC), else None."""
    if isinstance(value, str):
        # The shapes most libraries send, at a third of the general path's cost: JavaScript's
        # toISOString (`2026-11-28T09:15:01.031Z`: analytics.js, -node, -swift, -kotlin) and
        # Python's isoformat in UTC (`2026-11-28T09:15:01.031123+00:00`: analytics-python,
        # rudder-sdk-python). A string of such a shape that still fails takes the general path.
        end = _utc_end(value)
        if end:
            try:
                return datetime.fromisoformat(value[:end]).replace(tzinfo=UTC)
            except ValueError:
                pass
    return _parse_general(value)


def _utc_end(value: str) -> int:
    """Where the time of `value` ends if it has the shape `YYYY-MM-DDTHH:MM:SS.fff` (3 or 6
    fraction digits) followed by `Z` or `+00:00`, digits aside; else 0."""
    n = len(value)
    if n == 24 and value[23] in "Zz":
        end = 23
    elif (n == 29 or n == 32) and value.endswith("+00:00"):
        end = n - 6
    else:
        return 0
    if (
        value[19] == "."
        and value[10] in "Tt "
        and value[4] == value[7] == "-"
        and value[13] == value[16] == ":"
    ):
        return end
    return 0


def _parse_general(value: object) -> datetime | None:
    if not isinstance(value, str) or not _ISO.match(value.strip()):
        return None
    text = value.strip().replace("z", "Z")
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    # Python's parser takes at most microseconds; nanosecond digits from some SDKs are cut.
    if "." in text:
        text = _NANOS.sub(r"\1", text)
    if _HOUR_OFFSET.search(text):
        text += ":00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # 9999-12-31T23:59-05:00 is past the last representable instant
        return None


def iso(value: datetime) -> str:
    """The canonical way userdest writes a time: UTC with milliseconds and a Z."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def utcnow() -> datetime:
    return datetime.now(UTC)
