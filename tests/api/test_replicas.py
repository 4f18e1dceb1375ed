"""REDIS_WAIT_REPLICAS: a call the replicas did not confirm is answered 503 with Retry-After."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask

from tests.support.receiver import Tenant, basic, jdump

CALL = {"type": "track", "event": "Clicked", "userId": "u1", "messageId": "m-1"}


def test_a_call_no_replica_confirmed_is_answered_503_and_may_be_queued(
    make_receiver: Callable[..., Flask], tenant: Tenant, redis_client: Any
) -> None:
    """The test Redis has no replica, so WAIT 1 always answers 0."""
    app = make_receiver(redis_wait_replicas=1, redis_wait_timeout_ms=10)
    answer = app.test_client().post("/v1/track", data=jdump(CALL), headers=basic(tenant.api_key))
    assert answer.status_code == 503
    assert answer.json["code"] == "broker_unreplicated"
    assert answer.headers["Retry-After"] == "5"
    assert redis_client.llen("ingest") == 1  # queued all the same: the retry is deduplicated


def test_without_wait_the_same_call_is_accepted(
    make_receiver: Callable[..., Flask], tenant: Tenant, redis_client: Any
) -> None:
    app = make_receiver()
    answer = app.test_client().post("/v1/track", data=jdump(CALL), headers=basic(tenant.api_key))
    assert answer.status_code == 200
