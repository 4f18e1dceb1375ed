"""Admission control against a real, private `redis-server --maxmemory`: receivers
answer 503 before Redis is full, so a worker always has room to move the message it takes."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator

import pytest
import redis
from flask import Flask

from tests.support.receiver import Tenant, basic, jdump
from tests.support.stack import free_port, wait_for

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server"),
]

MAXMEMORY = 4 * 1024 * 1024


@pytest.fixture
def small_redis() -> Iterator[str]:
    """A Redis of this test's own: 4 MB, noeviction (compose's policy), nothing persisted."""
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--maxmemory", str(MAXMEMORY), "--maxmemory-policy", "noeviction"],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )  # fmt: skip
    client = redis.Redis(port=port)

    def up() -> bool:
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False

    try:
        wait_for(up, what="the private redis-server")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        client.close()
        proc.terminate()
        proc.wait(timeout=10)


def test_the_receiver_refuses_before_redis_is_full_and_readyz_says_so(
    make_receiver: Callable[..., Flask], tenant: Tenant, small_redis: str
) -> None:
    app = make_receiver(redis_url=small_redis, redis_high_water=0.8, readyz_cache_ttl=0.0)
    client = app.test_client()
    batch = jdump(
        {"batch": [{"type": "track", "userId": f"u{i}", "event": "E", "properties": {"p": "x" * 200}}
                   for i in range(100)]}
    )  # fmt: skip
    assert client.get("/readyz").status_code == 200
    for _ in range(1000):
        response = client.post("/v1/batch", data=batch, headers=basic(tenant.api_key))
        if response.status_code != 200:
            break
    assert response.status_code == 503
    assert response.json["code"] == "broker_full"
    assert response.headers["Retry-After"] == "5"

    info = redis.Redis.from_url(small_redis).info("memory")
    # Refused with room to spare (the old receiver went on to 99.9%): the mark counts payload
    # bytes, Redis adds its own overhead per list entry.
    assert info["used_memory"] < 0.95 * MAXMEMORY
    # What a worker does with a message it takes (kombu's unacked hash) still fits.
    redis.Redis.from_url(small_redis).hset("unacked", "probe", len(batch) * b"x")

    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json["checks"]["redis"] == "over_high_water"
    assert ready.headers["Retry-After"]
