"""Call requests are answered in front of Flask (api.views `dispatch`): as Flask's own request
handling, with the receiver's hooks and error handlers, answers the same request."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.support.receiver import Tenant, basic, jdump

CALL = {"userId": "u1", "event": "Signed Up", "messageId": "m-dispatch"}


def _through_flask(app: Flask, method: str, path: str, **kwargs: Any) -> Any:
    with app.test_request_context(path, method=method, **kwargs):
        return app.full_dispatch_request()


@pytest.mark.parametrize(
    ("method", "path", "body", "extra"),
    [
        ("POST", "/v1/track", jdump(CALL), {}),
        ("POST", "/v1/t", jdump(CALL), {"Origin": "https://shop.example"}),
        ("POST", "/v1/batch", jdump({"batch": [{**CALL, "type": "track"}, {"type": "page"}]}), {}),
        ("PUT", "/webhook", jdump({**CALL, "type": "track"}), {}),
        ("POST", "/v1/track", b"{not json", {}),
        ("POST", "/v1/track", jdump({"userId": "u1"}), {}),
        ("POST", "/v1/track", jdump(CALL), {"Content-Encoding": "br"}),
        ("POST", "/v1/track", jdump(CALL), {"Authorization": "Basic eHh4Og=="}),
    ],
)
def test_a_call_request_is_answered_as_flask_answers_it(
    receiver_app: Flask,
    client: FlaskClient,
    tenant: Tenant,
    method: str,
    path: str,
    body: bytes,
    extra: dict[str, str],
) -> None:
    headers = {**basic(tenant.api_key), "X-Request-Id": "r-dispatch", **extra}
    dispatched = client.open(path, method=method, data=body, headers=headers)
    flask = _through_flask(receiver_app, method, path, data=body, headers=headers)
    assert dispatched.status == flask.status
    assert list(dispatched.headers.items()) == list(flask.headers.items())
    if path != "/v1/batch":  # a refused call of a batch gets a new messageId each time
        assert dispatched.get_data() == flask.get_data()


def test_other_requests_go_to_flask(client: FlaskClient) -> None:
    assert client.get("/v1/track").status_code == 405
    assert client.options("/v1/track").status_code == 204
    assert client.post("/v1/track/").status_code == 404
    assert client.get("/healthz").status_code == 200
