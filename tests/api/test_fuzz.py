"""Whatever the body and headers, the receiver answers JSON and never 500."""

from __future__ import annotations

import base64
import gzip
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.views import ROUTES
from tests.support.fixtures import all_fixtures
from tests.support.receiver import Tenant

PATHS = [path for route in ROUTES for path in route.paths] + ["/healthz", "/v1/", "/v1/unknown"]
FIXTURES = list(all_fixtures().values())
VALID_KEY = "__valid__"  # replaced by the tenant's key inside the test

printable = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40)
scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)
field_values = (
    st.sampled_from(
        [
            None,
            "",
            " ",
            "anonymous",
            "null",
            "0",
            0,
            1.5,
            True,
            [],
            {},
            ["track"],
            {"type": "track"},
            "track",
            "2026-11-28T09:15:01Z",
            "x" * 120,
        ]
    )
    | json_values
)


FIELDS = [
    "type",
    "type",
    "userId",
    "anonymousId",
    "previousId",
    "groupId",
    "event",
    "messageId",
    "traits",
    "properties",
    "context",
    "timestamp",
    "originalTimestamp",
    "sentAt",
    "writeKey",
    "integrations",
]


@st.composite
def calls(draw: st.DrawFn) -> Any:
    """A realistic call with one to six fields replaced or dropped."""
    call = dict(draw(st.sampled_from(FIXTURES)))
    changes = draw(
        st.dictionaries(
            st.sampled_from(FIELDS), field_values | st.just(...), min_size=1, max_size=6
        )
    )
    for name, value in changes.items():
        if value is ...:
            call.pop(name, None)
        else:
            call[name] = value
    return call


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["call", "call", "call", "batch", "batch", "json", "bytes"]))
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    if kind == "json":
        value: Any = draw(json_values)
    elif kind == "call":
        value = draw(calls())
    else:
        value = {"batch": draw(st.lists(calls() | json_values, max_size=5))}
        for name in ("context", "integrations", "sentAt", "writeKey"):
            if draw(st.booleans()):
                value[name] = draw(field_values)
    if isinstance(value, dict) and draw(st.booleans()):
        value["writeKey"] = draw(st.sampled_from([VALID_KEY, "ud_wrong", "", None, 5]))
    return json.dumps(value).encode()


headers_strategy = st.fixed_dictionaries(
    {},
    optional={
        "Content-Encoding": st.sampled_from(["gzip", "identity", "br", "GZIP"]) | printable,
        "Origin": st.sampled_from(["https://shop.example.com", "https://evil.net", "null"])
        | printable,
        "Referer": printable,
        "X-Request-Id": printable,
        "X-Signature": printable,
        "X-Forwarded-For": printable,
        "Content-Type": st.sampled_from(["application/json", "text/plain", "x/y"]),
    },
)


@settings(
    max_examples=600,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    path=st.sampled_from(PATHS),
    method=st.sampled_from(["POST"] * 8 + ["GET", "PUT"]),
    body=bodies(),
    headers=headers_strategy,
    auth=st.sampled_from(["basic"] * 4 + ["bearer", "none", "Basic !!", "Bearer"]) | printable,
    compress=st.booleans(),
)
def test_no_input_yields_a_500(client, tenant: Tenant, path, method, body, headers, auth, compress):
    headers = dict(headers)
    if auth == "basic":
        headers["Authorization"] = (
            "Basic " + base64.b64encode(f"{tenant.api_key}:".encode()).decode()
        )
    elif auth == "bearer":
        headers["Authorization"] = f"Bearer {tenant.api_key}"
    elif auth != "none":
        headers["Authorization"] = auth
    body = body.replace(VALID_KEY.encode(), tenant.api_key.encode())
    if compress:
        body = gzip.compress(body)
        headers.setdefault("Content-Encoding", "gzip")

    response = client.open(path, method=method, data=body, headers=headers)

    assert response.status_code < 500, response.data
    assert response.is_json
    answer = response.json
    assert isinstance(answer["success"], bool)
    if not answer["success"]:
        assert answer["code"] and answer["message"]
    assert response.headers["X-Request-Id"]


def test_no_input_yields_a_500_for_an_app_with_domains_and_a_secret(tenant: Tenant, client):
    """The same kind of traffic with an app that has trusted domains and a webhook secret."""
    tenant.add_domain("*.example.com")
    tenant.set_secret("s3cret")

    @settings(max_examples=300, deadline=None)
    @given(path=st.sampled_from(PATHS), body=bodies(), headers=headers_strategy)
    def run(path: str, body: bytes, headers: dict[str, str]) -> None:
        headers = {**headers, "Authorization": f"Bearer {tenant.api_key}"}
        response = client.post(path, data=body, headers=headers)
        assert response.status_code < 500, response.data
        assert response.is_json

    run()
