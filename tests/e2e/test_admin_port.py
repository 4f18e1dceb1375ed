"""With ADMIN_PORT set, the receiver's gunicorn (as the image starts it) listens there too, and only
there serves /readyz, /metrics and /openapi.json: the public port keeps ingestion alone."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

import pytest
import redis
from sqlalchemy import Engine

from shared.settings import Settings
from tests.support.receiver import make_tenant
from tests.support.stack import free_port, receiver, stack_env

pytestmark = pytest.mark.e2e


def status(url: str, data: bytes | None = None, key: str | None = None) -> int:
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    request = urllib.request.Request(url, data=data, headers=headers)  # noqa: S310 (local URL)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
            return int(answer.status)
    except urllib.error.HTTPError as refused:
        return int(refused.code)


@pytest.mark.parametrize("admin", [True, False], ids=["admin port", "one port"])
def test_private_endpoints_answer_on_the_admin_port_only(
    admin: bool, settings: Settings, clean_db: Engine, redis_client: redis.Redis, tmp_path: Path
) -> None:
    tenant = make_tenant(clean_db)
    admin_port = free_port()
    env = {**stack_env(settings), "ADMIN_PORT": str(admin_port) if admin else "0"}
    with receiver(env, tmp_path / "receiver.log") as public:
        private = f"http://127.0.0.1:{admin_port}" if admin else public
        for path in ("/readyz", "/metrics", "/openapi.json"):
            assert status(private + path) == 200, path
            if admin:
                assert status(public + path) == 404, path
        call = b'{"userId": "u1", "event": "Paid"}'
        assert status(public + "/v1/track", call, tenant.api_key) == 200
        assert status(public + "/healthz") == 200
