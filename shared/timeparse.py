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
    if isinstance(value, str) and _canonical(value):
        # What most libraries send (`2026-11-28T09:15:01.031Z`, JavaScript's toISOString): a third
        # of the general path's cost. A string of that shape that still fails takes the general path.
        try:
            return datetime.fromisoformat(value[:23]).replace(tzinfo=UTC)
        except ValueError:
            pass
    return _parse_general(value)


def _canonical(value: str) -> bool:
    """Whether `value` has the shape of `YYYY-MM-DDTHH:MM:SS.mmmZ`, digits aside."""
    return (
        len(value) == 24
        and value[23] in "Zz"
        and value[19] == "."
        and value[10] in "Tt "
        and value[4] == value[7] == "-"
        and value[13] == value[16] == ":"
    )


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
