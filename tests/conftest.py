"""Shared fixtures: a Postgres database and a Redis database number of the test run's own.

The database is created and migrated once per run, named after the process so that two runs on one
machine never meet, and dropped at the end. Tests that can take a rolled-back transaction (`db`) do;
tests that need committed data across processes use `engine` and the `clean_db` fixture.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import psycopg
import pytest
import redis
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from shared.db import make_engine
from shared.migrate import upgrade
from shared.settings import Settings
from tests.support.db import ADMIN_URL, REDIS_BASE, SECRETS

for _name, _value in SECRETS.items():
    # The processes tests start (receivers, workers, the CLI) read them from the environment.
    os.environ[_name.upper()] = _value

TEST_DB = f"userdest_test_{os.getpid()}"
CLAIM = "userdest:test-run"
"""A key each test run sets in the Redis database it took, so two runs never take the same one."""


PROCESS_DIRS = ("e2e", "reliability", "bench")
"""Test folders whose tests start real processes or services: all marked `e2e`."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test under PROCESS_DIRS `e2e`, so `make test-fast` (-m "not e2e") skips it."""
    for item in items:
        if item.path.parent.name in PROCESS_DIRS:
            item.add_marker(pytest.mark.e2e)


def _claim_redis_db() -> int:
    """USERDEST_TEST_REDIS_DB, else the first of 9..15 no other live test run holds (never 0)."""
    if os.environ.get("USERDEST_TEST_REDIS_DB"):
        return int(os.environ["USERDEST_TEST_REDIS_DB"])
    for number in range(9, 16):
        client = redis.Redis.from_url(f"{REDIS_BASE}/{number}")
        try:
            if client.set(CLAIM, os.getpid(), nx=True, ex=3 * 3600):
                return number
            holder = client.get(CLAIM)
            if holder is not None and not _alive(int(holder)):
                client.set(CLAIM, os.getpid(), ex=3 * 3600)
                return number
        finally:
            client.close()
    raise RuntimeError("every test Redis database 9..15 is held by a running test run")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _admin(sql: str) -> None:
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def settings() -> Iterator[Settings]:
    base = ADMIN_URL.rsplit("/", 1)[0]
    number = _claim_redis_db()
    yield Settings(
        database_url=f"{base}/{TEST_DB}",
        redis_url=f"{REDIS_BASE}/{number}",
        auth_cache_ttl=0.5,
        **SECRETS,
    ).verify()
    client = redis.Redis.from_url(f"{REDIS_BASE}/{number}")
    client.flushdb()
    client.close()


@pytest.fixture(scope="session")
def engine(settings: Settings) -> Iterator[Engine]:
    _admin(f'DROP DATABASE IF EXISTS "{TEST_DB}"')
    _admin(f'CREATE DATABASE "{TEST_DB}"')
    upgrade(settings)
    eng = make_engine(settings)
    yield eng
    eng.dispose()
    _admin(f'DROP DATABASE IF EXISTS "{TEST_DB}" WITH (FORCE)')


@pytest.fixture
def db(engine: Engine) -> Iterator[Session]:
    """A session inside a transaction that is rolled back after the test; commits become savepoints."""
    with engine.connect() as conn:
        trans = conn.begin()
        session = Session(
            bind=conn, join_transaction_mode="create_savepoint", expire_on_commit=False
        )
        try:
            yield session
        finally:
            session.close()
            trans.rollback()


RESET = text(
    """
    DO $$
    DECLARE name text;
    BEGIN
        -- Deleting every row of every table leaves nothing to check, so the foreign keys' triggers
        -- are skipped: the tables can be emptied in any order. DELETE of a few rows costs a
        -- fraction of what TRUNCATE does (a new file for each table, an exclusive lock).
        SET LOCAL session_replication_role = replica;
        FOR name IN
            SELECT quote_ident(tablename) FROM pg_tables
            WHERE schemaname = current_schema() AND tablename <> 'alembic_version'
        LOOP
            EXECUTE 'DELETE FROM ' || name;
        END LOOP;
        PERFORM setval(c.oid, 1, false) FROM pg_class c
        WHERE c.relkind = 'S' AND c.relnamespace = current_schema()::regnamespace;
    END $$
    """
)
"""Empty every table of the schema and restart every sequence, whatever the migrations made."""


@pytest.fixture
def clean_db(engine: Engine) -> Iterator[Engine]:
    """The migrated database, emptied before and after the test, for tests whose data must really
    commit; the tests that roll back (`db`, `conn`) then start from empty tables too."""
    with engine.begin() as conn:
        conn.execute(RESET)
    yield engine
    with engine.begin() as conn:
        conn.execute(RESET)


@pytest.fixture
def redis_client(settings: Settings) -> Iterator[redis.Redis]:
    """The test run's own Redis database, emptied before the test."""
    client = redis.Redis.from_url(settings.redis_url)
    client.flushdb()
    client.set(CLAIM, os.getpid(), ex=3 * 3600)
    yield client
    client.flushdb()
    client.set(CLAIM, os.getpid(), ex=3 * 3600)
    client.close()
