"""Engines and sessions: one engine per process, made from settings by a factory."""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import sessionmaker

from shared.settings import Settings


def make_engine(settings: Settings, **kwargs: object) -> Engine:
    """An engine for DATABASE_URL; pool_pre_ping so a restarted Postgres costs one retry, not a crash."""
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("json_serializer", _dumps)
    kwargs.setdefault("json_deserializer", orjson.loads)
    return create_engine(settings.sqlalchemy_url, **kwargs)  # type: ignore[arg-type]


def make_sessionmaker(engine: Engine) -> sessionmaker:  # type: ignore[type-arg]
    return sessionmaker(engine, expire_on_commit=False)


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()
