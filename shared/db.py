"""Engines and sessions: one engine per process, made from settings by a factory."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import orjson
from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import sessionmaker

from shared.settings import Settings

CONNECT_ARGS: dict[str, object] = {
    "connect_timeout": 5,
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
}
"""libpq options every engine starts from: a host that drops packets (a dead primary, a network
split) fails a connection attempt within connect_timeout, which then tries DATABASE_URL's next host,
and an open connection to it within about 25 s of keepalives, instead of hanging until the kernel's
two-hour default. An engine's own connect_args win."""


def make_engine(settings: Settings, **kwargs: Any) -> Engine:
    """An engine for DATABASE_URL; pool_pre_ping so a restarted Postgres costs one retry, not a crash."""
    kwargs["connect_args"] = {**CONNECT_ARGS, **kwargs.get("connect_args", {})}
    kwargs.setdefault("pool_pre_ping", True)
    # Error messages then never quote a statement's parameters: they hold traits, and errors are logged.
    kwargs.setdefault("hide_parameters", True)
    kwargs.setdefault("json_serializer", json_dumps)
    kwargs.setdefault("json_deserializer", orjson.loads)
    return create_engine(settings.sqlalchemy_url, **kwargs)


def make_sessionmaker(engine: Engine) -> sessionmaker:
    return sessionmaker(engine, expire_on_commit=False)


# An escaped NUL (\u0000) that is not itself an escaped backslash followed by "u0000".
_NUL = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")


def array_literal(values: Iterable[object]) -> str:
    """A Postgres array literal of `values` (text, numbers, UUIDs), for a parameter the statement
    casts to an array type (`CAST(:ids AS text[])`): psycopg dumps a list element by element in
    Python, a cost that shows in the workers' hot statements; one string is one dump. Each element
    is quoted, so commas, braces, quotes and backslashes in ids stay inside it."""
    return "{" + ",".join(_element(v) for v in values) + "}"


def _element(value: object) -> str:
    text = str(value)
    if "\\" in text or '"' in text:
        text = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def json_dumps(value: Any) -> str:
    """JSON that Postgres's jsonb accepts: it refuses NUL characters, so they become U+FFFD."""
    text = orjson.dumps(value).decode()
    return _NUL.sub(r"\1\\ufffd", text) if "\\u0000" in text else text
