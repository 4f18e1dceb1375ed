"""Which user ids count, shared by the receiver's checks and the workers' resolution (SPEC 5.1)."""

from __future__ import annotations

from typing import Any

ABSENT_IDS = frozenset(
    {"anonymous", "guest", "null", "none", "undefined", "nan", "0", "[object object]"}
)
"""Ids that would join strangers into one profile; compared case-insensitively, quotes stripped."""

_QUOTES = "\"'`"


def normalize_id(value: Any) -> str | None:
    """The id as a string, or None where it is missing, blank, not a scalar id or a placeholder.

    Numbers are accepted (Segment's libraries allow them) and keep their shortest decimal form, so
    `42` and `"42"` name the same user.
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        text = str(value)
    elif isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return None
        text = str(int(value)) if value.is_integer() else repr(value)
    elif isinstance(value, str):
        text = value.strip()
    else:
        return None
    if not text:
        return None
    text = clean_text(text)
    bare = text.strip(_QUOTES).strip().lower()
    if not bare or bare in ABSENT_IDS:
        return None
    return text


def clean_text(text: str) -> str:
    """Text Postgres can store: it refuses NUL characters, so they become U+FFFD."""
    return text.replace("\x00", "\ufffd") if "\x00" in text else text
