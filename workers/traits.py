"""Identify and group traits to profile and company fields, and the rest to custom attributes.

No database here.

Which standard traits fill which field, and what a trait in a shape no field takes becomes, is
described in docs/workers.md ("Standard traits").
"""

from __future__ import annotations

from typing import Any

from shared.ids import normalize_id
from workers.coerce import IGNORED, clears, coerce

__all__ = ["identify_traits", "map_company_traits", "map_user_traits"]

_USER_CONSUMED = frozenset(
    {
        "email",
        "first_name",
        "firstName",
        "last_name",
        "lastName",
        "name",
        "phone",
        "gender",
        "address",
    }
)
_COMPANY_CONSUMED = frozenset({"name", "description", "email", "employees", "phone", "address"})

_MALE = frozenset({"m", "male", "man", "2"})
_FEMALE = frozenset({"f", "female", "woman", "3"})
_UNKNOWN = frozenset({"unknown", "1"})
_GENDER_CODES = {1: "unknown", 2: "male", 3: "female"}


def _text(value: Any) -> Any:
    """A standard string field's value: str, None to clear, or IGNORED for objects and arrays."""
    if clears(value):
        return None
    if isinstance(value, str):
        text = value.replace("\x00", "").strip()
        return text or None
    if isinstance(value, bool | int | float):
        return coerce(value, "string")
    return IGNORED


def _first_text(source: dict[str, Any], *keys: str) -> Any:
    """The first usable text under `keys`; None if only nulls/blanks are there; else IGNORED."""
    result: Any = IGNORED
    for key in keys:
        if key not in source:
            continue
        value = _text(source[key])
        if isinstance(value, str):
            return value
        if value is None:
            result = None
    return result


def _put(fields: dict[str, Any], key: str, value: Any) -> None:
    if value is not IGNORED:
        fields[key] = value


def _gender(value: Any) -> Any:
    """male, female or unknown; None for null or blank; IGNORED for anything else."""
    if clears(value):
        return None
    if isinstance(value, bool):
        return IGNORED
    if isinstance(value, float):
        if not value.is_integer():
            return IGNORED
        value = int(value)
    if isinstance(value, int):
        return _GENDER_CODES.get(value, IGNORED)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _MALE:
            return "male"
        if text in _FEMALE:
            return "female"
        if text in _UNKNOWN:
            return "unknown"
    return IGNORED


def _address(fields: dict[str, Any], traits: dict[str, Any]) -> None:
    if "address" not in traits:
        return
    address = traits["address"]
    if isinstance(address, list):
        # RudderStack's JS SDK passes a list of addresses through as sent: the first one fills the
        # fields, and the list is kept whole as a custom attribute (see _kept).
        address = next((item for item in address if isinstance(item, dict)), IGNORED)
    if clears(address):
        fields.update(country=None, region=None, city=None)
    elif isinstance(address, dict):
        _put(fields, "country", _first_text(address, "country"))
        _put(fields, "region", _first_text(address, "state", "region"))
        _put(fields, "city", _first_text(address, "city"))


_NAME_PARTS = (
    ("first_name", "firstName", "first", "given_name"),
    ("last_name", "lastName", "last", "family_name"),
)
"""Keys of a name sent as an object, first name then last name (OpenID Connect's claims last)."""


def _names(traits: dict[str, Any]) -> tuple[Any, Any]:
    """(first name, last name) from first_name/firstName, last_name/lastName, else from `name`."""
    first = _first_text(traits, "first_name", "firstName")
    last = _first_text(traits, "last_name", "lastName")
    if isinstance(first, str) or isinstance(last, str) or "name" not in traits:
        return first, last
    name = traits["name"]
    if isinstance(name, dict):
        parts = _first_text(name, *_NAME_PARTS[0]), _first_text(name, *_NAME_PARTS[1])
        return (first, last) if parts == (IGNORED, IGNORED) else parts
    name = _text(name)
    if isinstance(name, str):
        first, *rest = name.split()
        return first, " ".join(rest) if rest else last
    if name is None:
        return None, None
    return first, last


def _kept(traits: dict[str, Any], consumed: frozenset[str]) -> dict[str, Any]:
    """The custom attributes of `traits`: every key no standard field consumes, and every standard
    trait sent in a shape no field takes (an object or a list where text is expected, an address
    as text or as a list), under its own name, so that nothing is dropped unseen. A shape the field
    takes but a value it cannot (a gender of its own) is counted instead (`refused`)."""
    custom: dict[str, Any] = {}
    for key, value in traits.items():
        if key not in consumed:
            custom[key] = value
        elif key == "address":
            if not isinstance(value, dict) and not clears(value):
                custom[key] = value
        elif isinstance(value, dict | list):
            custom[key] = value
    return custom


IDENTITY_TRAITS = ("userId", "anonymousId")
"""Trait keys that restate the call's ids (classic analytics-android puts both in every identify's
traits); never attributes. `id` is one too where it equals the call's userId."""


def identify_traits(call: dict[str, Any], user_id: str | None) -> dict[str, Any]:
    """The traits of an identify: `traits` merged over `context.traits` (RudderStack's
    SDKs send identify traits only there; classic analytics-android sends both), without the keys
    that only restate the call's identity."""
    own, context = call.get("traits"), call.get("context")
    base = context.get("traits") if isinstance(context, dict) else None
    traits = {**(base if isinstance(base, dict) else {}), **(own if isinstance(own, dict) else {})}
    for key in IDENTITY_TRAITS:
        traits.pop(key, None)
    if "id" in traits and user_id is not None and normalize_id(traits["id"]) == user_id:
        del traits["id"]
    return traits


def map_user_traits(
    traits: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """(standard profile fields, custom attributes, standard traits whose value no field could
    take, to count) from identify traits."""
    if not isinstance(traits, dict):
        return {}, {}, []
    fields: dict[str, Any] = {}
    refused: list[str] = []
    _put(fields, "email", _first_text(traits, "email"))
    first, last = _names(traits)
    _put(fields, "first_name", first)
    _put(fields, "last_name", last)
    _put(fields, "phone", _first_text(traits, "phone"))
    if "gender" in traits:
        gender = _gender(traits["gender"])
        _put(fields, "gender", gender)
        if gender is IGNORED and not isinstance(traits["gender"], dict | list):
            refused.append("gender")
    _address(fields, traits)
    return fields, _kept(traits, _USER_CONSUMED), refused


def map_company_traits(
    traits: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """(standard company fields, custom company attributes, standard traits whose value no field
    could take, to count) from group traits."""
    if not isinstance(traits, dict):
        return {}, {}, []
    fields: dict[str, Any] = {}
    refused: list[str] = []
    for key in ("name", "description", "email", "phone"):
        _put(fields, key, _first_text(traits, key))
    if "employees" in traits:
        employees = coerce(traits["employees"], "integer")
        if employees is None or (employees is not IGNORED and employees >= 0):
            fields["employees"] = employees
        elif not isinstance(traits["employees"], dict | list):
            refused.append("employees")
    _address(fields, traits)
    return fields, _kept(traits, _COMPANY_CONSUMED), refused
