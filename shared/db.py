"""Engines and sessions: one engine per process, made from settings by a factory."""

from __future__ import annotations

import re
from typing import Any

import orjson
from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import sessionmaker

from shared.settings import Settings


def make_engine(settings: Settings, **kwargs: object) -> Engine:
    """An engine for DATABASE_URL; pool_pre_ping so a restarted Postgres costs one retry, not a crash."""
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


def json_dumps(value: Any) -> str:
    """JSON that Postgres's jsonb accepts: it refuses NUL characters, so they become U+FFFD."""
    text = orjson.dumps(value).decode()
    return _NUL.sub(r"\1\\ufffd", text) if "\\u0000" in text else text
