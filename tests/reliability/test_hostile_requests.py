"""The production receiver (gunicorn with api/gunicorn_conf.py, as the image starts it) facing
oversize bodies and requests gunicorn cannot parse.

Oversize bodies are sent by a client that writes its whole body before it reads the answer, as
urllib, requests and most server libraries do: the sender must get the 400 payload_too_large, not
a reset connection it would retry forever."""

from __future__ import annotations

import http.client
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import orjson
import pytest
from sqlalchemy import Engine

from api.body import DRAIN_BYTES
from shared.settings import Settings
from tests.support.fixtures import fixture
from tests.support.receiver import basic, make_tenant, queued
from tests.support.stack import log_records, receiver, stack_env, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture
def production_receiver(
    clean_db: Engine, settings: Settings, redis_client: object, tmp_path: Path
) -> Iterator[tuple[str, int]]:
    """Its log is tmp_path / "receiver.log"."""
    env = stack_env(settings)
    env.pop("WEB_CONCURRENCY", None)
    with receiver(env, tmp_path / "receiver.log") as url:
        parts = urlsplit(url)
        yield str(parts.hostname), int(parts.port or 80)


def _batch(size: int) -> bytes:
    """A batch of a backend library's track calls, each its own messageId, of at least `size`
    bytes."""
    call = fixture("server-track")
    one = len(orjson.dumps(call)) + 1
    calls = [{**call, "messageId": str(uuid.uuid4())} for _ in range(size // one + 1)]
    return orjson.dumps({"batch": calls})


def _post_whole_body(
    host: str, port: int, body: bytes, headers: dict[str, str]
) -> tuple[int, dict[str, object], str | None]:
    """http.client writes the request, body included, before it reads a byte of the answer."""
    conn = http.client.HTTPConnection(host, port, timeout=30)
    try:
        conn.request("POST", "/v1/batch", body, headers)
        response = conn.getresponse()
        return response.status, orjson.loads(response.read()), response.getheader("Connection")
    finally:
        conn.close()


@pytest.mark.parametrize("size", [600 * 1024, 4 * 1024 * 1024])
@pytest.mark.parametrize(
    "connection",
    # urllib.request sends `Connection: close` on every request; requests keeps connections.
    [{"Connection": "close"}, {}],
    ids=["urllib-style", "keep-alive"],
)
def test_an_oversize_batch_written_whole_gets_its_400(
    production_receiver: tuple[str, int],
    clean_db: Engine,
    redis_client: object,
    size: int,
    connection: dict[str, str],
) -> None:
    host, port = production_receiver
    tenant = make_tenant(clean_db)
    headers = {**basic(tenant.api_key), "Content-Type": "application/json", **connection}
    body = _batch(size)
    assert size <= len(body) < DRAIN_BYTES

    status, answer, closing = _post_whole_body(host, port, body, headers)

    assert status == 400
    assert answer["code"] == "payload_too_large"
    assert closing == "close"
    assert queued(redis_client) == []  # type: ignore[arg-type]


def test_a_body_announced_past_the_drain_bound_is_answered_and_closed(
    production_receiver: tuple[str, int], clean_db: Engine
) -> None:
    """Nothing of a body announced larger than DRAIN_BYTES is read: the answer comes at once and
    the connection closes (before, the receiver answered keep-alive and read on, for the next
    request, whatever the client sent)."""
    host, port = production_receiver
    tenant = make_tenant(clean_db)
    auth = basic(tenant.api_key)["Authorization"]
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/batch HTTP/1.1\r\nHost: x\r\nAuthorization: " + auth.encode()
            + b"\r\nContent-Type: application/json\r\nContent-Length: "
            + str(DRAIN_BYTES + 1).encode() + b"\r\n\r\n" + b'{"batch": ['
        )  # fmt: skip
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), head
    assert b"connection: close" in head.lower()
    assert orjson.loads(body)["code"] == "payload_too_large"


MARK = "probe-5521"


@pytest.mark.parametrize(
    "request_head",
    [
        f"GET /v1/track?writeKey={MARK} HTTP/1.1 extra\r\nHost: x\r\n\r\n",
        f"POST /v1/track HTTP/1.1\r\nHost: x\r\nX {MARK}: v\r\n\r\n",
        f"{MARK}\x01 / HTTP/1.1\r\nHost: x\r\n\r\n",
    ],
    ids=["request-line", "header-name", "method"],
)
def test_a_request_gunicorn_cannot_parse_is_logged_without_address_or_bytes(
    production_receiver: tuple[str, int], tmp_path: Path, request_head: str
) -> None:
    host, port = production_receiver
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(request_head.encode("latin-1"))
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 400"), answer[:100]
    log = tmp_path / "receiver.log"

    def warnings() -> list[dict[str, object]]:
        return [r for r in log_records(log) if r.get("level") == "WARNING"]

    wait_for(lambda: bool(warnings()), timeout=10, what="the invalid request's log line")
    [line] = warnings()
    assert line["msg"] == "invalid request" and line["error"]
    text = log.read_text()
    assert MARK not in text
    assert "ip=" not in text and host not in str(line)
