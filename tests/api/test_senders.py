"""What real senders send, at the receiver: Segment's Webhooks (Actions) forms, numeric
ids kept exactly, and the header sets of the browser libraries."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import pytest

from tests.support.fixtures import fixture
from tests.support.receiver import Tenant, basic

WEBHOOK = fixture("webhook-forwarded")


def js_stringify(value: Any) -> bytes:
    """JSON as JavaScript's JSON.stringify writes it (compact, non-ASCII as is), which is how
    Segment's Actions destinations serialize a request body."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def sign(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha1).hexdigest()


def actions_batch(n: int = 3) -> list[dict[str, Any]]:
    calls = []
    for i in range(n):
        call = json.loads(json.dumps(WEBHOOK))
        call["messageId"] = f"ajs-next-webhook-{i}"
        call["properties"] = {"method": "google", "note": "zażółć", "n": i}
        calls.append(call)
    return calls


# --- Segment's Webhooks (Actions) ---------------------------------------------------------------


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH"])
def test_actions_sends_one_call_with_the_method_chosen(
    method, client, tenant: Tenant, ingest_queue
):
    tenant.set_secret("s3cret")
    body = js_stringify(WEBHOOK)
    headers = {**basic(tenant.api_key), "X-Signature": sign("s3cret", body)}
    response = client.open("/webhook", method=method, data=body, headers=headers)
    assert response.status_code == 200, response.json
    assert response.json == {"success": True}
    [envelope] = ingest_queue()
    assert envelope["source"] == "webhook"
    assert envelope["calls"] == [WEBHOOK]


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH"])
def test_a_batched_actions_delivery_signed_over_its_first_element_is_a_batch(
    method, client, tenant: Tenant, ingest_queue
):
    """action-destinations webhook: performBatch posts `payload.map(({data}) => data)` and
    extendRequest signs JSON.stringify(payload[0].data)."""
    tenant.set_secret("s3cret")
    calls = actions_batch()
    body = js_stringify(calls)
    headers = {**basic(tenant.api_key), "X-Signature": sign("s3cret", js_stringify(calls[0]))}
    response = client.open("/webhook", method=method, data=body, headers=headers)
    assert response.status_code == 200, response.json
    assert response.json == {"success": True, "accepted": 3, "rejected": []}
    [envelope] = ingest_queue()
    assert envelope["calls"] == calls
    assert envelope["message_ids"] == [c["messageId"] for c in calls]


def test_an_actions_array_is_signed_over_its_first_element_as_it_stands_in_the_body(
    client, tenant: Tenant, ingest_queue
):
    """Spacing and escapes as in the body, not as we would write the element again."""
    tenant.set_secret("s3cret")
    calls = actions_batch(2)
    first = json.dumps(calls[0], indent=1).encode()
    body = b"[ " + first + b" ,\n" + json.dumps(calls[1]).encode() + b"]"
    good = {**basic(tenant.api_key), "X-Signature": sign("s3cret", first)}
    assert client.post("/webhook", data=body, headers=good).status_code == 200
    for signed in (js_stringify(calls[0]), js_stringify(calls[1])):
        bad = {**basic(tenant.api_key), "X-Signature": sign("s3cret", signed)}
        response = client.post("/webhook", data=body, headers=bad)
        assert response.status_code == 401
        assert response.json["code"] == "bad_signature"
    assert len(ingest_queue()) == 1


def test_an_actions_array_signed_over_the_whole_body_is_accepted_too(client, tenant: Tenant):
    tenant.set_secret("s3cret")
    body = js_stringify(actions_batch(2))
    headers = {**basic(tenant.api_key), "X-Signature": sign("s3cret", body)}
    assert client.put("/webhook", data=body, headers=headers).status_code == 200


def test_an_actions_array_with_a_bad_call_keeps_the_good_ones(client, tenant: Tenant, ingest_queue):
    calls: list[Any] = actions_batch(2)
    calls.insert(1, {"type": "track", "userId": "u1"})  # no event
    response = client.patch("/webhook", data=js_stringify(calls), headers=basic(tenant.api_key))
    assert response.status_code == 200
    assert response.json["accepted"] == 2
    assert [(r["index"], r["errors"][0]["code"]) for r in response.json["rejected"]] == [
        (1, "missing_event")
    ]
    [envelope] = ingest_queue()
    assert len(envelope["calls"]) == 2
    assert envelope["rejected"][0]["index"] == 1


def test_an_actions_array_is_bounded_like_a_batch(client, tenant: Tenant, ingest_queue, settings):
    calls = [{"type": "track", "event": "e", "userId": "u"}] * (settings.max_batch_calls + 1)
    response = client.post("/webhook", data=js_stringify(calls), headers=basic(tenant.api_key))
    assert response.status_code == 400
    assert response.json["code"] == "payload_too_large"
    assert ingest_queue() == []


def test_one_webhook_call_over_32_kb_is_400_payload_too_large(client, tenant: Tenant, settings):
    call = {**WEBHOOK, "properties": {"pad": "x" * settings.max_call_bytes}}
    response = client.post("/webhook", data=js_stringify(call), headers=basic(tenant.api_key))
    assert response.status_code == 400
    assert response.json["code"] == "payload_too_large"


def test_other_methods_stay_refused(client, tenant: Tenant):
    assert client.put("/v1/track", data=b"{}", headers=basic(tenant.api_key)).status_code == 405
    assert client.delete("/webhook", headers=basic(tenant.api_key)).status_code == 405


# --- numeric ids --------------------------------------------------------------------------------

TWENTY_ONE_DIGITS = "123456789012345678901"
NEIGHBOUR = "123456789012345678902"  # the same float as TWENTY_ONE_DIGITS


def raw_call(user_id_literal: str, kind: str = "identify") -> bytes:
    return (
        b'{"type":"' + kind.encode() + b'","userId":' + user_id_literal.encode() + b',"traits":{}}'
    )


@pytest.mark.parametrize(
    "literal",
    [TWENTY_ONE_DIGITS, "99999999999999999999", "-9223372036854775809", "1" + "0" * 40],
)
def test_an_integer_id_beyond_64_bits_keeps_its_exact_digits(
    literal, send, ingest_queue, tenant: Tenant
):
    response = send("/v1/identify", raw_call(literal))
    assert response.status_code == 200, response.json
    [envelope] = ingest_queue()
    assert envelope["calls"][0]["userId"] == literal


def test_two_ids_one_float_apart_stay_two_ids(send, ingest_queue):
    body = (
        b'{"batch":['
        + raw_call(TWENTY_ONE_DIGITS)
        + b","
        + raw_call(NEIGHBOUR)
        + b',{"type":"group","userId":1,"groupId":'
        + TWENTY_ONE_DIGITS.encode()
        + b',"traits":{"big":123456789012345678901234}}]}'
    )
    response = send("/v1/batch", body)
    assert response.json == {"success": True, "accepted": 3, "rejected": []}
    [envelope] = ingest_queue()
    calls = envelope["calls"]
    assert [c["userId"] for c in calls] == [TWENTY_ONE_DIGITS, NEIGHBOUR, 1]
    assert calls[2]["groupId"] == TWENTY_ONE_DIGITS
    # not an id: the float orjson would make of it, as before
    assert calls[2]["traits"]["big"] == 1.2345678901234568e23


@pytest.mark.parametrize("literal", ["18446744073709551615", "-9223372036854775808", "42", "7.0"])
def test_ids_within_64_bits_are_left_as_sent(literal, send, ingest_queue):
    assert send("/v1/identify", raw_call(literal)).status_code == 200
    assert json.dumps(ingest_queue()[0]["calls"][0]["userId"]) == literal


@pytest.mark.parametrize("literal", ["1.5", "1e300", "123456789012345678901.0", "-0.25"])
def test_a_numeric_id_that_cannot_be_kept_exactly_is_refused(literal, send, ingest_queue):
    response = send("/v1/identify", raw_call(literal))
    assert response.status_code == 400
    assert response.json["code"] == "inexact_id"
    body = b'{"batch":[' + raw_call(literal) + b"," + raw_call('"fine"') + b"]}"
    response = send("/v1/batch", body)
    assert response.json["accepted"] == 1
    assert response.json["rejected"][0]["errors"][0]["code"] == "inexact_id"
