"""Which user ids count, shared by the receiver's checks and the workers' resolution."""

from __future__ import annotations

import hashlib
from typing import Any

ABSENT_IDS = frozenset(
    {"anonymous", "guest", "null", "none", "undefined", "nan", "0", "[object object]"}
)
"""Ids that would join strangers into one profile; compared case-insensitively, quotes stripped."""

_QUOTES = "\"'`"


def normalize_id(value: Any) -> str | None:
    """The id as a string, or None where it is missing, blank, not a scalar id or a placeholder.

    Numbers are accepted (Segment's libraries allow them) and keep their shortest decimal form, so
    `42` and `"42"` name the same user. An id in one pair of double quotes (`"\"7e1b…\""`, an
    analytics.js cookie read raw) is the id without them.
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
        if len(text) >= 2 and text[0] == text[-1] == '"':
            # analytics.js keeps ids in cookies as JSON strings; read raw, they keep the quotes.
            text = text[1:-1].strip()
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


_EXACT_FLOAT = 2**53
"""Every integer up to this size is exactly a float, so `7.0` names one id; past it floats skip."""


def inexact_id(value: Any) -> bool:
    """Whether an id sent as a number may not be the number its sender wrote: a
    fraction, or a float past 2**53. (shared.calls.parse_json has already turned integers that
    orjson would round into their exact digits.)"""
    return type(value) is float and not (value.is_integer() and abs(value) <= _EXACT_FLOAT)


def lock_key(app_id: int, kind: str, value: str) -> int:
    """A signed 64-bit advisory-lock key for one id of one app: workers take it before reading the
    profile an id names, and an erasure before deleting it."""
    digest = hashlib.blake2b(f"{app_id}\0{kind}\0{value}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)
