"""The production receiver (gunicorn with api/gunicorn_conf.py, as the image and `make run` start
it) facing clients that connect and send nothing, or send half a request and stall."""

from __future__ import annotations

import http.client
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from sqlalchemy import Engine

from shared.settings import Settings
from tests.support.receiver import basic, make_tenant, queued
from tests.support.stack import receiver, stack_env

pytestmark = pytest.mark.e2e

IDLE = 300
"""Connections held open: a few hundred (docs/abuse.md); under the default 1,024 open files."""


@pytest.fixture
def one_process_receiver(
    clean_db: Engine, settings: Settings, redis_client: object, tmp_path: Path
) -> Iterator[tuple[str, int]]:
    """The image's default: one receiver process (WEB_CONCURRENCY unset)."""
    env = stack_env(settings)
    env.pop("WEB_CONCURRENCY", None)
    with receiver(env, tmp_path / "receiver.log") as url:
        parts = urlsplit(url)
        yield str(parts.hostname), int(parts.port or 80)


def _post(host: str, port: int, path: str, body: bytes, headers: dict[str, str]) -> int:
    conn = http.client.HTTPConnection(host, port, timeout=5)
    try:
        conn.request("POST", path, body, headers)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def test_idle_and_stalled_connections_do_not_stop_the_receiver(
    one_process_receiver: tuple[str, int], clean_db: Engine, redis_client: object
) -> None:
    host, port = one_process_receiver
    tenant = make_tenant(clean_db)
    with ExitStack() as held:
        for n in range(IDLE):
            sock = held.enter_context(socket.create_connection((host, port), timeout=5))
            if n % 2:
                # Half a request: headers never finished (slowloris).
                sock.sendall(b"POST /v1/track HTTP/1.1\r\nHost: x\r\nContent-Type: applic")
        # A body announced and never sent.
        stalled = held.enter_context(socket.create_connection((host, port), timeout=5))
        stalled.sendall(b"POST /v1/track HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{")
        time.sleep(0.5)

        started = time.monotonic()
        health = http.client.HTTPConnection(host, port, timeout=5)
        held.callback(health.close)
        health.request("GET", "/healthz")
        assert health.getresponse().status == 200
        call = b'{"userId": "u1", "event": "Signed Up"}'
        headers = {**basic(tenant.api_key), "Content-Type": "application/json"}
        assert _post(host, port, "/v1/track", call, headers) == 200
        assert time.monotonic() - started < 5
    assert len(queued(redis_client)) == 1  # type: ignore[arg-type]


def test_a_chunked_body_cut_short_is_a_400(
    one_process_receiver: tuple[str, int], clean_db: Engine
) -> None:
    host, port = one_process_receiver
    tenant = make_tenant(clean_db)
    auth = basic(tenant.api_key)["Authorization"]
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/track HTTP/1.1\r\nHost: x\r\nAuthorization: " + auth.encode()
            + b"\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b'40\r\n{"userId": "u1", "event"'
        )  # fmt: skip
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert b'"code":"truncated_body"' in answer
