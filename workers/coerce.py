"""Attribute type coercion: a JSON value to the typed value stored, or IGNORED.

The choices behind each type's rules (numbers written as JavaScript writes them, strings cut and
counted, JSON stored only whole, dates from Unix times, choices matched by string form) are
described in docs/workers.md, "Attribute types".
"""

from __future__ import annotations

import enum
import json
import math
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Final

import orjson

from shared.attributes import TYPES, normalize_type
from shared.timeparse import iso, parse_iso

__all__ = ["IGNORED", "TYPES", "coerce", "coerce_noting", "normalize_type"]


class _Ignored(enum.Enum):
    IGNORED = "IGNORED"

    def __repr__(self) -> str:
        return "IGNORED"

    __str__ = __repr__


IGNORED: Final = _Ignored.IGNORED
"""Returned when a value cannot be converted: the stored value stays and the miss is counted."""


STRING_MAX = 255
"""Characters a string attribute holds; a longer string is stored cut, and counted (TRUNCATED)."""

UNCOERCIBLE: Final = "uncoercible"
"""Reason: a value its attribute's type cannot take; the stored value stays."""
TRUNCATED: Final = "truncated"
"""Reason: a string longer than STRING_MAX, stored cut to it."""
UNKNOWN_CHOICES: Final = "unknown_choices"
"""Reason: a list sent to a multiple-choice `fixed` attribute, stored without its members that are
not choices."""
JSON_TOO_LONG: Final = "json_too_long"
"""Reason: an object or array whose JSON is longer than STRING_MAX, sent to a string attribute:
not stored, since a cut would no longer parse (a `json` attribute keeps it whole)."""
I64_MIN: Final = -(2**63)
I64_MAX: Final = 2**63 - 1
# Unix times above this magnitude are milliseconds: 10^11 seconds is the year 5138.
_MS_THRESHOLD: Final = 10**11
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)

_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_PLAIN_INT = re.compile(r"[+-]?[0-9]{1,18}")
_TRUE: Final = frozenset({"true", "yes", "1"})
_FALSE: Final = frozenset({"false", "no", "0"})


def number_text(value: int | float) -> str:
    """A number in its shortest form, as JavaScript's String(number) writes it."""
    if isinstance(value, int):
        try:
            return str(value)
        except ValueError:
            # Beyond Python's int-to-str digit limit; no JSON parser hands us this, but never raise.
            return f"{Decimal(value):e}"
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value == 0:
        return "0"
    # repr gives the shortest digits that round-trip; only the layout differs from JavaScript.
    mantissa, _, exp_text = repr(abs(value)).partition("e")
    int_part, _, frac_part = mantissa.partition(".")
    raw = int_part + frac_part
    digits = raw.lstrip("0")
    point = len(int_part) + int(exp_text or 0) - (len(raw) - len(digits))
    digits = digits.rstrip("0")
    k = len(digits)
    if k <= point <= 21:
        text = digits + "0" * (point - k)
    elif 0 < point <= 21:
        text = f"{digits[:point]}.{digits[point:]}"
    elif -6 < point <= 0:
        text = "0." + "0" * -point + digits
    else:
        exponent = point - 1
        head = digits[0] + (f".{digits[1:]}" if k > 1 else "")
        text = f"{head}e{'+' if exponent >= 0 else '-'}{abs(exponent)}"
    return "-" + text if value < 0 else text


def _compact_json(value: Any) -> str | None:
    """Compact JSON in the sender's key order, or None for what JSON cannot write."""
    try:
        return orjson.dumps(value).decode()
    except (TypeError, ValueError):
        pass
    try:
        # orjson refuses integers beyond 64 bits and deep nesting; the standard library does not.
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):
        return None


def _string_text(value: Any) -> Any:
    """The whole text the string type makes of `value`, before any cut; IGNORED if none."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, bool):
        return "true" if value else "false"
    elif isinstance(value, int | float):
        return number_text(value)
    else:
        dumped = _compact_json(value)
        if dumped is None:
            return IGNORED
        text = dumped
    if "\x00" in text:
        text = text.replace("\x00", "")
    return text


def _to_string(value: Any) -> Any:
    return _string_noting(value)[0]


def _string_noting(value: Any) -> tuple[Any, str | None]:
    text = _string_text(value)
    if text is IGNORED:
        return IGNORED, UNCOERCIBLE
    if len(text) <= STRING_MAX:
        return text, None
    if isinstance(value, dict | list):
        # A cut would leave a fragment that no longer parses: refused whole, and counted.
        return IGNORED, JSON_TOO_LONG
    return text[:STRING_MAX], TRUNCATED


def _numeric_string(value: str) -> str | None:
    """The stripped text when it is a number as people write one, else None."""
    text = value.strip()
    return text if _NUMBER.fullmatch(text) else None


def _to_integer(value: Any) -> Any:
    if isinstance(value, bool):
        return IGNORED
    if isinstance(value, int):
        return value if I64_MIN <= value <= I64_MAX else IGNORED
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            return IGNORED
        # Compare as floats first: int() of 1e308 is a 300-digit integer for nothing.
        if not -(2.0**63) <= value < 2.0**63:
            return IGNORED
        return int(value)
    if isinstance(value, str):
        text = _numeric_string(value)
        if text is None:
            return IGNORED
        if _PLAIN_INT.fullmatch(text):
            return int(text)
        try:
            number = Decimal(text)
            if not I64_MIN <= number <= I64_MAX or number != number.to_integral_value():
                return IGNORED
            return int(number)
        except ArithmeticError:
            # An exponent too large even for Decimal ("1e99999999999999999999").
            return IGNORED
    return IGNORED


def _to_float(value: Any) -> Any:
    if isinstance(value, bool):
        return IGNORED
    if isinstance(value, int):
        try:
            return float(value)
        except OverflowError:
            return IGNORED
    if isinstance(value, float):
        return value if math.isfinite(value) else IGNORED
    if isinstance(value, str):
        text = _numeric_string(value)
        if text is None:
            return IGNORED
        number = float(text)
        return number if math.isfinite(number) else IGNORED
    return IGNORED


def _to_number(value: Any) -> Any:
    """A float's rules, but an integral value within 64 bits is an integer."""
    if isinstance(value, int) and not isinstance(value, bool) and I64_MIN <= value <= I64_MAX:
        return value
    number = _to_float(value)
    if isinstance(number, float) and number.is_integer() and I64_MIN <= number <= I64_MAX:
        return int(number)
    return number


def _to_boolean(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        if value == 1:
            return True
        if value == 0:
            return False
        return IGNORED
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    return IGNORED


def _from_epoch(number: int | float) -> datetime | None:
    """A Unix time in seconds, or milliseconds above 10^11 in magnitude, as UTC."""
    if isinstance(number, float) and not math.isfinite(number):
        return None
    try:
        if abs(number) > _MS_THRESHOLD:
            return _EPOCH + timedelta(milliseconds=number)
        return _EPOCH + timedelta(seconds=number)
    except (OverflowError, ValueError):
        return None


def _to_datetime_value(value: Any) -> datetime | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return _from_epoch(value)
    if isinstance(value, str):
        text = _numeric_string(value)
        if text is not None:
            try:
                number: int | float = int(text) if _PLAIN_INT.fullmatch(text) else float(text)
            except ValueError:
                return None
            return _from_epoch(number)
        return parse_iso(value)
    return None


def _to_datetime(value: Any) -> Any:
    moment = _to_datetime_value(value)
    return IGNORED if moment is None else iso(moment)


def _to_date(value: Any) -> Any:
    moment = _to_datetime_value(value)
    # parse_iso reads "YYYY-MM-DD" as midnight UTC, so its UTC date is the calendar date given.
    return IGNORED if moment is None else moment.date().isoformat()


def _to_json(value: Any) -> Any:
    return value


def _choice_key(value: Any) -> str | None:
    """What a scalar is compared by against the choices; None for objects, arrays and null."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return number_text(value)
    return None


def _to_fixed(value: Any, choices: list[Any] | None, multiple: bool) -> Any:
    if not isinstance(choices, list) or not choices:
        return IGNORED
    exact: dict[str, Any] = {}
    folded: dict[str, Any] = {}
    for choice in choices:
        key = _choice_key(choice)
        if key is not None:
            exact.setdefault(key, choice)
            folded.setdefault(key.strip().casefold(), choice)

    def match(item: Any) -> tuple[bool, Any]:
        key = _choice_key(item)
        if key is None:
            return False, None
        if key in exact:
            return True, exact[key]
        folded_key = key.strip().casefold()
        if folded_key in folded:
            return True, folded[folded_key]
        return False, None

    if not multiple:
        found, choice = match(value)
        return choice if found else IGNORED
    if isinstance(value, list):
        if not value:
            return []
        kept: list[Any] = []
        seen: set[str] = set()
        for item in value:
            found, choice = match(item)
            key = _choice_key(choice)
            if found and key is not None and key not in seen:
                seen.add(key)
                kept.append(choice)
        return kept if kept else IGNORED
    found, choice = match(value)
    return [choice] if found else IGNORED


_COERCERS: Final = {
    "string": _to_string,
    "integer": _to_integer,
    "float": _to_float,
    "number": _to_number,
    "boolean": _to_boolean,
    "date": _to_date,
    "datetime": _to_datetime,
    "json": _to_json,
}


def clears(value: Any) -> bool:
    """Whether a profile or company value clears its field or attribute: `null`, and
    an empty or blank string, for standard fields and custom attributes alike."""
    return value is None or (type(value) is str and not value.strip())


def coerce(value: Any, type_: str, choices: list[Any] | None = None, multiple: bool = False) -> Any:
    """The typed, JSON-ready value to store for `value`; None clears; IGNORED when unconvertible."""
    if value is None:
        return None
    if type_ not in TYPES:
        type_ = normalize_type(type_)
    if type_ == "fixed":
        return _to_fixed(value, choices, multiple)
    return _COERCERS[type_](value)


def coerce_noting(
    value: Any, type_: str, choices: list[Any] | None = None, multiple: bool = False
) -> tuple[Any, str | None]:
    """`coerce`, and why what is stored is not what was sent: None when it is the value converted
    to its type; TRUNCATED when a string was stored cut, UNKNOWN_CHOICES when a list lost members;
    UNCOERCIBLE or JSON_TOO_LONG when the value was IGNORED. The reasons are counted where operators look (`userdest attributes ignored`)."""
    if type_ not in TYPES:
        type_ = normalize_type(type_)
    if type_ == "string" and value is not None:
        return _string_noting(value)
    typed = coerce(value, type_, choices, multiple)
    if typed is IGNORED:
        return typed, UNCOERCIBLE
    if type_ == "fixed" and isinstance(value, list) and _has_unknown_member(value, choices):
        return typed, UNKNOWN_CHOICES
    return typed, None


def _has_unknown_member(values: list[Any], choices: list[Any] | None) -> bool:
    return any(_to_fixed(item, choices, multiple=False) is IGNORED for item in values)
