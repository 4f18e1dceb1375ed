"""A database of a test module's own, for tests that change the schema's partitions or need a
table whose statistics were never gathered: what they do must not reach the run's shared database."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from sqlalchemy import Engine

from shared.db import make_engine
from shared.migrate import upgrade
from shared.settings import Settings
from tests.support.db import ADMIN_URL, SECRETS


def _admin(sql: str) -> None:
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql)  # type: ignore[arg-type]


@contextmanager
def scratch_database(suffix: str, revision: str = "head") -> Iterator[tuple[Settings, Engine]]:
    """A fresh database migrated to `revision`, dropped afterwards."""
    name = f"userdest_test_{os.getpid()}_{suffix}"
    _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    _admin(f'CREATE DATABASE "{name}"')
    settings = Settings(database_url=f"{ADMIN_URL.rsplit('/', 1)[0]}/{name}", **SECRETS)
    upgrade(settings, revision)
    engine = make_engine(settings)
    try:
        yield settings, engine
    finally:
        engine.dispose()
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
