"""Every answer is JSON: unknown routes, wrong methods, bugs; plus health, readiness and CORS."""

from __future__ import annotations

import dataclasses

import pytest
from flask import Flask
from sqlalchemy import event

from api.errors import answer
from api.views import Receiver
from shared.calls import Refusal
from tests.support.receiver import basic, jdump

CALL = {"type": "track", "event": "Clicked", "userId": "u1"}


def test_an_unknown_route_is_a_json_404(client):
    response = client.get("/v2/nothing")
    assert response.status_code == 404
    assert response.is_json
    assert response.json == {"success": False, "code": "not_found", "message": "Not Found"}


@pytest.mark.parametrize(
    ("method", "path"), [("get", "/v1/track"), ("delete", "/v1/batch"), ("post", "/healthz")]
)
def test_a_wrong_method_is_a_json_405_with_allow(method, path, client):
    response = getattr(client, method)(path)
    assert response.status_code == 405
    assert response.json["code"] == "method_not_allowed"
    assert "Allow" in response.headers


def test_a_bug_is_a_json_500_without_a_traceback(client, receiver_app: Flask, monkeypatch, tenant):
    def boom(*args, **kwargs):
        raise RuntimeError("secret detail from deep inside")

    monkeypatch.setattr("api.views.check_calls", boom)
    response = client.post("/v1/track", data=jdump(CALL), headers=basic(tenant.api_key))
    assert response.status_code == 500
    assert response.is_json
    assert response.json["code"] == "internal_error"
    assert b"Traceback" not in response.data
    assert b"secret detail" not in response.data


def test_api_error_carries_its_headers_and_errors():
    error = Refusal(
        429,
        "rate_limited",
        "slow down",
        errors=[{"code": "x", "message": "y"}],
        headers={"Retry-After": "5"},
    )
    response = answer(error)
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "5"
    assert response.json == {
        "success": False,
        "code": "rate_limited",
        "message": "slow down",
        "errors": [{"code": "x", "message": "y"}],
    }


def test_healthz(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json["success"] is True


def test_readyz_when_redis_and_postgres_answer(client, engine):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json == {"success": True, "checks": {"redis": "ok", "postgres": "ok"}}


def test_readyz_reports_postgres_down_but_stays_ready(make_receiver, redis_client):
    # Cached keys keep working without Postgres; a load balancer must not drop every
    # receiver for it.
    app = make_receiver(database_url="postgresql://postgres@127.0.0.1:1/nowhere")
    response = app.test_client().get("/readyz")
    assert response.status_code == 200
    assert response.json["checks"] == {"redis": "ok", "postgres": "unreachable"}


def test_readyz_is_503_when_redis_is_unreachable(make_receiver, engine):
    app = make_receiver(redis_url="redis://127.0.0.1:1/0", broker_timeout=0.5)
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    assert response.json["checks"] == {"redis": "unreachable", "postgres": "ok"}
    assert response.json["code"] == "not_ready"
    assert response.headers["Retry-After"]


def test_readyz_answers_from_its_last_check_for_its_ttl(settings, engine, redis_client):
    """Each check takes a connection from the pool key lookups use: probes and scrapers, or a
    loop on the admin port, get the last answer for READYZ_CACHE_TTL seconds."""
    now = [100.0]
    receiver = Receiver(
        dataclasses.replace(settings, readyz_cache_ttl=2.0),
        engine,
        redis_client,
        clock=lambda: now[0],
    )
    checks: list[str] = []

    def count(conn, cursor, statement, *rest):
        checks.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        for _ in range(50):
            assert receiver.readiness().status_code == 200
        assert checks == ["SELECT 1"]
        now[0] += 1.9
        receiver.readiness()
        assert len(checks) == 1
        now[0] += 0.2
        assert receiver.readiness().status_code == 200
        assert checks == ["SELECT 1", "SELECT 1"]
    finally:
        event.remove(engine, "before_cursor_execute", count)


# What Chrome puts in Access-Control-Request-Headers for each library's request (lower case, sorted;
# CORS-safelisted headers such as analytics.js's `Content-Type: text/plain` are not asked for).
# analytics-next: packages/browser/src/plugins/segmentio (fetch-dispatcher, batched-dispatcher);
# RudderStack: packages/analytics-js-plugins/src/xhrQueue and services/HttpClient/xhr.
PREFLIGHTS = {
    "analytics.js": ("/v1/t", "authorization"),
    "analytics.js retry": ("/v1/t", "authorization,x-retry-count"),
    "analytics.js batching retry": ("/v1/b", "authorization,x-retry-count"),
    "rudderstack": ("/v1/track", "anonymousid,authorization,content-type,sentat"),
    "rudderstack batch": ("/v1/batch", "authorization,content-type,sentat"),
    "rudderstack retry": (
        "/v1/track",
        "anonymousid,authorization,content-type,rsa-recovered,rsa-retry-attempt,rsa-retry-reason,"
        "rsa-since-first-attempt,rsa-since-last-attempt,sentat",
    ),
    "a site's own header": ("/v1/p", "authorization,x-custom-tenant"),
}


@pytest.mark.parametrize("name", sorted(PREFLIGHTS))
def test_a_preflight_allows_every_header_the_library_asks_for(name, client):
    path, requested = PREFLIGHTS[name]
    response = client.options(
        path,
        headers={
            "Origin": "https://shop.example.com",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": requested,
        },
    )
    assert response.status_code == 204
    assert response.data == b""
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert "POST" in response.headers["Access-Control-Allow-Methods"]
    allowed = {
        h.strip().lower() for h in response.headers["Access-Control-Allow-Headers"].split(",")
    }
    assert set(requested.split(",")) <= allowed
    assert int(response.headers["Access-Control-Max-Age"]) > 0


def test_a_preflight_naming_no_header_still_allows_the_libraries_ones(client):
    response = client.options("/v1/t", headers={"Access-Control-Request-Method": "POST"})
    assert response.status_code == 204
    allowed = {
        h.strip().lower() for h in response.headers["Access-Control-Allow-Headers"].split(",")
    }
    assert {"authorization", "content-type", "x-retry-count", "anonymousid", "sentat"} <= allowed


def test_a_preflight_with_a_malformed_header_list_gets_the_fixed_one(client):
    response = client.options(
        "/v1/t",
        headers={
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "a b\x01",
        },
    )
    assert response.status_code == 204
    assert "a b" not in response.headers["Access-Control-Allow-Headers"]


def test_answers_expose_retry_after_request_id_and_rate_limit_headers(client, tenant):
    response = client.post("/v1/track", data=jdump(CALL), headers=basic(tenant.api_key))
    exposed = {h.strip() for h in response.headers["Access-Control-Expose-Headers"].split(",")}
    assert {"Retry-After", "X-Request-Id", "X-RateLimit-Reset"} <= exposed


def test_call_answers_carry_cors_and_operational_ones_do_not(client, tenant):
    response = client.post("/v1/track", data=jdump(CALL), headers=basic(tenant.api_key))
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Origin" not in client.get("/healthz").headers
