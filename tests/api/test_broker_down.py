"""Redis down: 503 with Retry-After, promptly, nothing half-accepted; back up: accepted again.

Each test runs its own redis-server on a free port and stops only that one.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest
import redis

from tests.support.receiver import Tenant, basic, jdump, queued

CALL = {"type": "track", "event": "Clicked", "userId": "u1"}

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server"),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivateRedis:
    """A redis-server of the test's own, which the test may stop and start again."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with redis.Redis(port=self.port, socket_timeout=0.2) as probe:
                    if probe.ping():
                        return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("private redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port)


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_redis_down_is_a_prompt_503_with_retry_after_and_back_up_is_200(
    private_redis: PrivateRedis, make_receiver, tenant: Tenant
):
    app = make_receiver(redis_url=private_redis.url, broker_timeout=0.5, retry_after_seconds=7)
    client = app.test_client()
    headers = basic(tenant.api_key)
    assert client.post("/v1/track", data=jdump(CALL), headers=headers).status_code == 200

    private_redis.stop()
    for path, body in (("/v1/track", CALL), ("/v1/batch", {"batch": [CALL, {"type": "x"}]})):
        started = time.monotonic()
        response = client.post(path, data=jdump(body), headers=headers)
        elapsed = time.monotonic() - started
        assert response.status_code == 503
        assert response.json["code"] == "broker_unavailable"
        assert response.headers["Retry-After"] == "7"
        assert elapsed < 1.5
    assert client.get("/readyz").status_code == 503

    private_redis.start()  # an empty Redis on the same port
    assert client.post("/v1/track", data=jdump(CALL), headers=headers).status_code == 200
    with private_redis.client() as check:
        [envelope] = queued(check)
    assert envelope["calls"] == [CALL]


def test_a_redis_that_accepts_but_never_answers_is_bounded_by_broker_timeout(
    make_receiver, tenant: Tenant
):
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)  # the kernel completes connections; nobody ever reads or answers
        port = silent.getsockname()[1]
        app = make_receiver(redis_url=f"redis://127.0.0.1:{port}/0", broker_timeout=0.5)
        started = time.monotonic()
        response = app.test_client().post(
            "/v1/track", data=jdump(CALL), headers=basic(tenant.api_key)
        )
        elapsed = time.monotonic() - started
    assert response.status_code == 503
    assert response.json["code"] == "broker_unavailable"
    assert elapsed < 0.5 * 2 + 0.5


def test_the_rate_limit_with_redis_down_is_a_503_not_a_500(
    private_redis: PrivateRedis, make_receiver, tenant: Tenant
):
    app = make_receiver(
        redis_url=private_redis.url, broker_timeout=0.5, rate_limit_per_second=100.0
    )
    client = app.test_client()
    assert (
        client.post("/v1/track", data=jdump(CALL), headers=basic(tenant.api_key)).status_code == 200
    )
    private_redis.stop()
    response = client.post("/v1/track", data=jdump(CALL), headers=basic(tenant.api_key))
    assert response.status_code == 503
    assert response.json["code"] == "broker_unavailable"
    assert response.headers["Retry-After"]
