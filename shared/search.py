"""Profile filters for `users list --where` and the read API's `POST /v1/users/search`: and/or trees
of comparisons on standard fields, custom attributes with their types, times and company
membership, turned into one bounded SQL condition.

A filter is `{"field": F, "op": O, "value": V}` or `{"and": [...]}` / `{"or": [...]}`. The tree is
bounded (MAX_CONDITIONS comparisons, MAX_DEPTH levels of groups) and the statement runs under a
timeout; every refusal is a BadFilter with a stable code for a 400 answer.
"""

from __future__ import annotations

import re
from typing import Any

import orjson
from sqlalchemy import (
    ColumnElement,
    String,
    and_,
    cast,
    exists,
    false,
    literal,
    not_,
    or_,
    select,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session

from shared.models import PROFILE_FIELDS, AttributeDefinition, Company, Membership, User
from shared.timeparse import parse_iso

MAX_CONDITIONS = 15
"""Comparisons one filter may hold (Intercom's contact search allows as many)."""
MAX_DEPTH = 2
"""Levels of and/or groups one filter may nest."""
OPS = ("=", "!=", "<", ">", "contains", "exists")
TIMES = ("first_seen", "last_seen", "updated_at")
ATTRIBUTE_PREFIX = "attributes."


class BadFilter(ValueError):
    """A filter the read side refuses: `code` is stable (the API's 400 error code)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _count(tree: Any, depth: int) -> int:
    if not isinstance(tree, dict):
        raise BadFilter("bad_filter", "a filter is an object: a comparison or an and/or group")
    group = [k for k in ("and", "or") if k in tree]
    if not group:
        return 1
    if len(group) != 1 or len(tree) != 1 or not isinstance(tree[group[0]], list):
        raise BadFilter("bad_filter", 'a group is {"and": [...]} or {"or": [...]}, alone')
    if depth >= MAX_DEPTH:
        raise BadFilter("filter_too_deep", f"groups nest at most {MAX_DEPTH} levels")
    return sum(_count(child, depth + 1) for child in tree[group[0]])


def condition(session: Session, app_id: int, tree: Any) -> ColumnElement[bool]:
    """The SQL condition on `users` for the filter `tree`; BadFilter if it is malformed, too large
    or names an attribute the app has not defined."""
    if _count(tree, 0) > MAX_CONDITIONS:
        raise BadFilter("too_many_filters", f"a filter holds at most {MAX_CONDITIONS} comparisons")
    rows = session.execute(
        select(AttributeDefinition.name, AttributeDefinition.type).where(
            AttributeDefinition.app_id == app_id, AttributeDefinition.scope == "user"
        )
    )
    types = {str(name): str(kind) for name, kind in rows}
    return _build(tree, types, app_id)


def _build(tree: dict[str, Any], types: dict[str, str], app_id: int) -> ColumnElement[bool]:
    if "and" in tree:
        return and_(literal(True), *(_build(c, types, app_id) for c in tree["and"]))
    if "or" in tree:
        parts = [_build(c, types, app_id) for c in tree["or"]]
        return or_(*parts) if parts else false()
    field, op, value = tree.get("field"), tree.get("op"), tree.get("value")
    if not isinstance(field, str) or op not in OPS:
        raise BadFilter("bad_filter", f"a comparison is field, op (one of {', '.join(OPS)}), value")
    if op != "exists" and value is None:
        raise BadFilter("bad_filter", f"{field} {op} needs a value")
    if field == "company":
        if op not in ("=", "exists"):
            raise BadFilter("bad_filter", "company takes = (a groupId) or exists")
        member = select(Membership.user_pk).join(Company, Company.id == Membership.company_id)
        member = member.where(Membership.user_pk == User.id, Company.app_id == app_id)
        if op == "=":
            member = member.where(Company.group_id == str(value))
        return exists(member)
    if field.startswith(ATTRIBUTE_PREFIX):
        return _attribute(field[len(ATTRIBUTE_PREFIX) :], op, value, types)
    if field in TIMES:
        return _compare(getattr(User, field), op, _time(field, value) if op != "exists" else None)
    if field == "page_views":
        if op != "exists" and (type(value) is not int):
            raise BadFilter("bad_filter", "page_views compares with an integer")
        return _compare(User.page_views, op, value)
    if field in (*PROFILE_FIELDS, "user_id"):
        if op != "exists" and not isinstance(value, str):
            raise BadFilter("bad_filter", f"{field} compares with a string")
        return _compare(getattr(User, field), op, value)
    raise BadFilter("unknown_field", f"no field {field!r}: standard fields, times, page_views, "
                    "company, or attributes.<name>")  # fmt: skip


def _time(field: str, value: Any) -> Any:
    when = parse_iso(value)
    if when is None:
        raise BadFilter("bad_filter", f"{field} compares with an ISO-8601 time")
    return when


def _like(value: str) -> str:
    return "%" + re.sub(r"([\\%_])", r"\\\1", value) + "%"


def _compare(column: Any, op: str, value: Any) -> ColumnElement[bool]:
    if op == "exists":
        return column.is_not(None)
    if op == "contains":
        if not isinstance(value, str):
            raise BadFilter("bad_filter", "contains takes a string")
        return cast(column, String).ilike(_like(value))
    return {
        "=": column == value,
        "!=": or_(column != value, column.is_(None)),
        "<": column < value,
        ">": column > value,
    }[op]


_NUMERIC = ("integer", "float", "number")


def _attribute(name: str, op: str, value: Any, types: dict[str, str]) -> ColumnElement[bool]:
    kind = types.get(name)
    if kind is None:
        raise BadFilter("unknown_attribute", f"the app defines no user attribute {name!r}")
    if op == "exists":
        return User.attributes.has_key(name)
    if op == "contains":
        if not isinstance(value, str):
            raise BadFilter("bad_filter", "contains takes a string")
        return User.attributes.op("->>")(name).ilike(_like(value))
    if kind in _NUMERIC and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise BadFilter("bad_filter", f"attributes.{name} is a {kind}: compare it with a number")
    if kind == "boolean" and type(value) is not bool:
        raise BadFilter("bad_filter", f"attributes.{name} is a boolean")
    if kind in ("string", "fixed", "date", "datetime") and not isinstance(value, str):
        raise BadFilter("bad_filter", f"attributes.{name} is a {kind}: compare it with a string")
    if kind == "json" and op in ("<", ">"):
        raise BadFilter("bad_filter", f"attributes.{name} is json: only =, !=, contains, exists")
    # jsonb compares numbers as numbers and strings as strings, so a stored value of the
    # attribute's type orders as that type (ISO dates and times sort as they compare).
    stored = User.attributes.op("->")(name)
    given = cast(literal(orjson.dumps(value).decode()), JSONB)
    return {
        "=": stored == given,
        "!=": not_(User.attributes.contains({name: value})),
        "<": stored < given,
        ">": stored > given,
    }[op]


_WHERE = re.compile(r"^\s*([A-Za-z_][\w.\-]*)\s*(!=|=|<|>|~|\?)\s*(.*?)\s*$", re.S)


def parse_where(expression: str) -> dict[str, Any]:
    """One `--where` of the CLI as a comparison: `plan=pro`, `last_seen>2026-01-01`,
    `name~ann` (contains), `phone?` (exists). A value that reads as JSON (a number, true, false)
    is that value; anything else is a string."""
    match = _WHERE.match(expression)
    if match is None:
        raise BadFilter(
            "bad_filter", f"not a comparison: {expression!r} (field=value, !=, <, >, ~, ?)"
        )
    field, op, raw = match.groups()
    if op == "?":
        return {"field": field, "op": "exists"}
    value: Any = raw
    if raw in ("true", "false"):
        value = raw == "true"
    elif re.fullmatch(r"-?\d+", raw):
        value = int(raw)
    elif re.fullmatch(r"-?\d+\.\d+", raw):
        value = float(raw)
    return {"field": field, "op": "contains" if op == "~" else op, "value": value}
