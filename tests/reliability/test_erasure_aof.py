"""Erasure reaches Redis's append-only file: `users delete --rewrite-aof` against a Redis of the
test's own that keeps one, and then no byte of the person in any of its files."""

from __future__ import annotations

import base64
import re
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import Engine

from shared.celery_app import make_celery
from shared.publish import Publisher
from shared.queues import INGEST
from shared.settings import Settings
from tests.support.apply import apply_envelope
from tests.support.cli import invoker, ok
from tests.support.envelopes import envelope
from tests.support.factories import make_app
from tests.support.stack import PrivateRedis, free_port, wait_for

NAMES = ("ada-7731", "ada.lovelace@example.com", "anon-ada-new")


@pytest.fixture
def aof_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    if subprocess.run(["which", "redis-server"], capture_output=True).returncode:
        pytest.skip("no redis-server to run a private Redis")
    server = PrivateRedis(free_port(), tmp_path, appendonly=True)
    try:
        yield server
    finally:
        server.stop()


def _aof_text(directory: Path) -> str:
    """Every append-only file's bytes as text, with the base64 message bodies decoded."""
    out = []
    for path in directory.rglob("*.aof*"):
        raw = path.read_bytes()
        out.append(raw.decode(errors="replace"))
        for chunk in re.findall(rb"[A-Za-z0-9+/=]{40,}", raw):
            out.append(base64.b64decode(chunk + b"===").decode(errors="replace"))
    return "\n".join(out).lower()


def test_users_delete_rewrites_the_append_only_file_without_the_person(
    aof_redis: PrivateRedis, clean_db: Engine, settings: Settings
) -> None:
    app_id = make_app(clean_db, "shop")
    private = replace(settings, redis_url=aof_redis.url).verify()
    publisher = Publisher(make_celery(private), aof_redis.client, private)
    calls = [
        {"type": "identify", "userId": "ada-7731", "traits": {"email": "Ada.Lovelace@example.com"}},
        {"type": "identify", "anonymousId": "anon-ada-new",
         "traits": {"email": "ada.lovelace@example.com"}},
        {"type": "track", "userId": "bob-1", "event": "Kept for Bob"},
    ]  # fmt: skip
    publisher.publish(envelope(app_id, calls).to_dict(), INGEST)
    wait_for(lambda: "ada-7731" in _aof_text(aof_redis.directory), 10, "the AOF to hold the call")

    # Her profile, so the CLI has someone to erase; her other calls still wait in Redis.
    with clean_db.begin() as conn:
        apply_envelope(conn, envelope(app_id, calls[:1]))
    ok(invoker(private)("users", "delete", "--app", "shop", "ada-7731", "--yes", "--rewrite-aof"))

    def rewritten() -> bool:
        info = aof_redis.client.info("persistence")
        return not info["aof_rewrite_in_progress"] and not info["aof_rewrite_scheduled"]

    wait_for(rewritten, 20, "the AOF rewrite")
    left = _aof_text(aof_redis.directory)
    for name in NAMES:
        assert name not in left, f"{name} is still in the append-only file"
    assert "kept for bob" in left
