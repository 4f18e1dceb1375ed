"""Call endpoints against the run's real Redis and Postgres: what is answered, what lands on `ingest`."""

from __future__ import annotations

import copy
import json
import uuid
from typing import Any

import pytest
import redis
from sqlalchemy import text

from shared.envelope import EnvelopeKeys, SignatureError
from shared.settings import Settings
from shared.timeparse import parse_iso
from tests.support.fixtures import all_fixtures
from tests.support.receiver import Tenant, gz, jdump
from tests.support.tasks import FakeTask

FIXTURES = all_fixtures()
SINGLE = {name: call for name, call in FIXTURES.items() if name != "webhook-forwarded"}


def ok_call(**changes: Any) -> dict[str, Any]:
    call = {"type": "track", "event": "Clicked", "userId": "u1", "messageId": "m-1"}
    call.update(changes)
    return {k: v for k, v in call.items() if v is not ...}


# --- single calls -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SINGLE))
def test_each_fixture_is_enqueued_raw_on_its_endpoint(name, send, ingest_queue, tenant: Tenant):
    call = SINGLE[name]
    response = send(f"/v1/{call['type']}", call, headers={"X-Request-Id": "req-42"})

    assert response.status_code == 200, response.json
    assert response.json == {"success": True}
    assert response.headers["X-Request-Id"] == "req-42"
    [envelope] = ingest_queue()
    # Exactly as sent, nulls included; only the key analytics.js puts in the body is taken out.
    sent = {k: v for k, v in call.items() if k != "writeKey"}
    assert envelope["calls"] == [sent]
    assert envelope["message_ids"] == [call["messageId"]]
    assert envelope["defaults"] == {"type": call["type"]}
    assert envelope["app_id"] == tenant.app_id
    assert envelope["key_id"] == tenant.key_id
    assert envelope["request_id"] == "req-42"
    assert envelope["source"] == "http"
    assert envelope["sent_at"] is None
    assert envelope["rejected"] == []
    assert envelope["remote_addr"] == "127.0.0.1"
    assert envelope["v"] == 1
    received = parse_iso(envelope["received_at"])
    assert received is not None and envelope["received_at"].endswith("Z")


@pytest.mark.parametrize(
    ("short", "kind"),
    [("t", "track"), ("i", "identify"), ("p", "page"), ("s", "screen"), ("g", "group")],
)
def test_short_paths_of_the_browser_library(short, kind, send, ingest_queue):
    call = next(c for c in SINGLE.values() if c["type"] == kind)
    assert send(f"/v1/{short}", call).status_code == 200
    assert ingest_queue()[0]["defaults"] == {"type": kind}


def test_alias_short_path(send, ingest_queue):
    assert send("/v1/a", FIXTURES["alias"]).status_code == 200
    assert ingest_queue()[0]["calls"] == [FIXTURES["alias"]]


def test_a_call_without_type_gets_the_endpoint_type_in_defaults_not_in_the_call(send, ingest_queue):
    call = {"event": "Clicked", "userId": "u1"}
    assert send("/v1/track", call).status_code == 200
    [envelope] = ingest_queue()
    assert envelope["calls"] == [call]
    assert "type" not in envelope["calls"][0]
    assert envelope["defaults"] == {"type": "track"}


def test_a_call_whose_type_disagrees_with_the_endpoint_is_refused(send, ingest_queue):
    response = send("/v1/identify", ok_call(type="track"))
    assert response.status_code == 400
    assert response.json["code"] == "type_mismatch"
    assert ingest_queue() == []


def test_text_plain_as_the_browser_library_sends_it(send, ingest_queue):
    call = FIXTURES["browser-page"]
    response = send("/v1/p", call, headers={"Content-Type": "text/plain"})
    assert response.status_code == 200
    assert len(ingest_queue()) == 1


def test_message_id_is_assigned_where_missing_or_blank(send, ingest_queue):
    send("/v1/track", ok_call(messageId=...))
    send("/v1/track", ok_call(messageId=""))
    send("/v1/track", ok_call(messageId=None))
    ids = [e["message_ids"][0] for e in ingest_queue()]
    assert len(set(ids)) == 3
    for value in ids:
        assert uuid.UUID(value).version == 4


def test_the_call_is_not_modified_when_a_message_id_is_assigned(send, ingest_queue):
    call = ok_call(messageId=...)
    send("/v1/track", call)
    [envelope] = ingest_queue()
    assert envelope["calls"] == [call]
    assert "messageId" not in envelope["calls"][0]


def test_write_key_is_taken_out_of_the_call_and_off_the_queue(
    client, tenant: Tenant, redis_client: redis.Redis, ingest_queue
):
    call = {**ok_call(), "writeKey": tenant.api_key}
    response = client.post("/v1/track", data=jdump(call))
    assert response.status_code == 200
    [envelope] = ingest_queue()
    assert envelope["calls"] == [ok_call()]
    assert all(tenant.api_key.encode() not in raw for raw in redis_client.lrange("ingest", 0, -1))


# --- structural checks, one by one ---------------------------------------------------------------

NO_IDS = {"userId": ..., "anonymousId": ...}

BAD_CALLS = [
    ("track", ok_call(**NO_IDS), "missing_user_id"),
    ("track", ok_call(userId=None, anonymousId=None), "missing_user_id"),
    ("track", ok_call(userId="", anonymousId="   "), "missing_user_id"),
    ("track", ok_call(userId=..., anonymousId="anonymous"), "missing_user_id"),
    ("track", ok_call(userId="'undefined'"), "missing_user_id"),
    ("track", ok_call(userId="null"), "missing_user_id"),
    ("track", ok_call(userId={"id": 1}), "missing_user_id"),
    ("track", ok_call(userId=True), "missing_user_id"),
    ("track", ok_call(messageId=123), "invalid_message_id"),
    ("track", ok_call(messageId="m" * 100), "invalid_message_id"),
    ("track", ok_call(event=...), "missing_event"),
    ("track", ok_call(event=""), "missing_event"),
    ("track", ok_call(event="  "), "missing_event"),
    ("track", ok_call(event=7), "missing_event"),
    ("group", {"userId": "u1"}, "missing_group_id"),
    ("group", {"userId": "u1", "groupId": ""}, "missing_group_id"),
    ("group", {"userId": "u1", "groupId": {"id": 1}}, "missing_group_id"),
    ("group", {"userId": "u1", "groupId": "null"}, "missing_group_id"),
    ("alias", {"userId": "u1"}, "missing_previous_id"),
    ("alias", {"anonymousId": "a1", "previousId": "p1"}, "missing_user_id"),
    ("identify", {"userId": "u1", "traits": "vip"}, "invalid_traits"),
    ("identify", {"userId": "u1", "traits": [1, 2]}, "invalid_traits"),
    ("page", {"userId": "u1", "properties": []}, "invalid_properties"),
    ("page", {"userId": "u1", "context": "web"}, "invalid_context"),
    ("identify", {"userId": "u1", "timestamp": "yesterday"}, "invalid_timestamp"),
    ("identify", {"userId": "u1", "timestamp": 1732790400}, "invalid_timestamp"),
    (
        "identify",
        {"userId": "u1", "originalTimestamp": "2026-13-45T00:00:00Z"},
        "invalid_timestamp",
    ),
    ("identify", {"userId": "u1", "sentAt": "now"}, "invalid_timestamp"),
]


@pytest.mark.parametrize(("kind", "call", "code"), BAD_CALLS)
def test_a_single_call_failing_a_check_is_refused_with_its_code(
    kind, call, code, send, ingest_queue
):
    response = send(f"/v1/{kind}", call)
    assert response.status_code == 400
    body = response.json
    assert body["success"] is False
    assert body["code"] == code
    assert code in [e["code"] for e in body["errors"]]
    assert body["message"]
    assert ingest_queue() == []


GOOD_CALLS = [
    ("track", ok_call(userId=42)),
    ("track", ok_call(userId=..., anonymousId=7.0)),
    ("track", ok_call(messageId="m" * 99)),
    ("track", ok_call(userId=None, anonymousId="a1")),
    ("group", {"userId": "u1", "groupId": 123}),
    ("alias", {"userId": "u1", "previousId": 5}),
    ("identify", {"userId": "u1", "traits": None, "context": None, "properties": None}),
    ("identify", {"userId": "u1", "timestamp": None, "originalTimestamp": None, "sentAt": None}),
    ("identify", {"userId": "u1", "timestamp": "2026-11-28"}),
    ("identify", {"userId": "u1", "timestamp": "2026-11-28T09:15:01.123456789+02:00"}),
    ("page", {"anonymousId": "a1"}),
    ("screen", {"anonymousId": "a1", "name": None}),
]


@pytest.mark.parametrize(("kind", "call"), GOOD_CALLS)
def test_calls_within_the_rules_are_accepted(kind, call, send, ingest_queue):
    response = send(f"/v1/{kind}", call)
    assert response.status_code == 200, response.json
    assert ingest_queue()[0]["calls"] == [call]


def test_every_problem_of_a_call_is_listed(send):
    response = send("/v1/track", {"messageId": 5, "traits": 1, "timestamp": "x"})
    assert response.status_code == 400
    codes = [e["code"] for e in response.json["errors"]]
    assert codes == [
        "missing_user_id",
        "invalid_message_id",
        "missing_event",
        "invalid_traits",
        "invalid_timestamp",
    ]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{not json", "invalid_json"),
        (b"", "invalid_json"),
        (b"   ", "invalid_json"),
        (b'{"userId": NaN}', "invalid_json"),
        (b"\xff\xfe{}", "invalid_json"),
        (b"[1, 2]", "not_an_object"),
        (b'"track"', "not_an_object"),
        (b"null", "not_an_object"),
    ],
)
def test_a_body_that_is_not_a_json_object_is_400(body, code, send, ingest_queue):
    response = send("/v1/track", body)
    assert response.status_code == 400
    assert response.json["code"] == code
    assert ingest_queue() == []


def nested(levels: int) -> Any:
    value: Any = {}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


def test_nesting_of_64_levels_is_accepted_and_65_is_not(send, ingest_queue):
    # The call itself is level 1 and properties level 2.
    deep_ok = ok_call(properties=nested(63))
    deep_bad = ok_call(properties=nested(64))
    assert send("/v1/track", deep_ok).status_code == 200
    response = send("/v1/track", deep_bad)
    assert response.status_code == 400
    assert response.json["code"] == "too_deep"
    assert len(ingest_queue()) == 1


def test_nesting_beyond_the_parser_limit_is_400_too(send):
    body = b'{"userId":"u1","event":"e","properties":' + b"[" * 5000 + b"]" * 5000 + b"}"
    response = send("/v1/track", body)
    assert response.status_code == 400
    assert response.json["code"] == "too_deep"


def test_nesting_in_a_batch_counts_from_the_batch_object(send, ingest_queue):
    # batch object (1) > list (2) > call (3) > properties (4..)
    response = send("/v1/batch", {"batch": [ok_call(properties=nested(62))]})
    assert response.status_code == 400
    assert response.json["code"] == "too_deep"
    assert send("/v1/batch", {"batch": [ok_call(properties=nested(61))]}).status_code == 200


# --- sizes ---------------------------------------------------------------------------------------


def padded(size: int, **changes: Any) -> dict[str, Any]:
    """A track call whose JSON is exactly `size` bytes as json.dumps writes it."""
    call = ok_call(properties={"pad": ""}, **changes)
    base = len(jdump(call))
    call["properties"]["pad"] = "x" * (size - base)
    assert len(jdump(call)) == size
    return call


def test_a_call_of_32_kb_is_accepted_and_one_byte_more_is_400_payload_too_large(send, ingest_queue):
    assert send("/v1/track", padded(32 * 1024)).status_code == 200
    response = send("/v1/track", padded(32 * 1024 + 1))
    assert response.status_code == 400
    assert response.json["code"] == "payload_too_large"
    assert len(ingest_queue()) == 1


def test_a_batch_over_500_kb_is_400_payload_too_large(send, ingest_queue):
    calls = [padded(20_000, messageId=f"m{i}") for i in range(26)]
    response = send("/v1/batch", {"batch": calls})
    assert response.status_code == 400
    assert response.json["code"] == "payload_too_large"
    assert ingest_queue() == []


def test_a_batch_of_2500_calls_is_accepted_and_2501_is_400_payload_too_large(send, ingest_queue):
    call = {"type": "track", "event": "e", "userId": "u"}
    response = send("/v1/batch", {"batch": [call] * 2500})
    assert response.status_code == 200
    assert response.json["accepted"] == 2500
    response = send("/v1/batch", {"batch": [call] * 2501})
    assert response.status_code == 400
    assert response.json["code"] == "payload_too_large"
    [envelope] = ingest_queue()
    assert len(envelope["calls"]) == len(envelope["message_ids"]) == 2500
    assert len(set(envelope["message_ids"])) == 2500


def test_a_call_over_32_kb_inside_a_batch_is_rejected_alone(send, ingest_queue):
    calls = [ok_call(messageId="small-1"), padded(40_000, messageId="big"), ok_call()]
    response = send("/v1/batch", {"batch": calls})
    assert response.status_code == 200
    assert response.json["accepted"] == 2
    assert response.json["rejected"][0]["index"] == 1
    assert response.json["rejected"][0]["errors"][0]["code"] == "call_too_large"
    [envelope] = ingest_queue()
    assert [c["messageId"] for c in envelope["calls"]] == ["small-1", "m-1"]
    assert envelope["rejected"][0]["call"]["messageId"] == "big"


def test_gzip_bodies_are_decompressed(send, ingest_queue):
    call = FIXTURES["browser-identify"]
    response = send("/v1/identify", gz(jdump(call)), headers={"Content-Encoding": "gzip"})
    assert response.status_code == 200
    batch = {"batch": [call, FIXTURES["ios-track"]], "sentAt": "2026-11-28T09:15:01.020Z"}
    response = send("/v1/batch", gz(jdump(batch)), headers={"Content-Encoding": "gzip"})
    assert response.status_code == 200
    assert response.json["accepted"] == 2
    first, second = ingest_queue()
    assert first["calls"] == [call]
    assert second["calls"] == batch["batch"]


def test_a_gzip_of_several_members_is_read_whole(send, ingest_queue):
    raw = jdump({"batch": [ok_call()]})
    body = gz(raw[:10]) + gz(raw[10:])
    assert send("/v1/batch", body, headers={"Content-Encoding": "gzip"}).status_code == 200
    assert len(ingest_queue()[0]["calls"]) == 1


@pytest.mark.parametrize("path", ["/v1/track", "/v1/batch"])
def test_a_gzip_bomb_is_400_payload_too_large(path, send, ingest_queue):
    # 20 MB of one byte compresses to about 20 KB.
    bomb = gz(b'{"batch": [{"userId": "' + b"a" * 20_000_000 + b'"}]}')
    assert len(bomb) < 100_000
    response = send(path, bomb, headers={"Content-Encoding": "gzip"})
    assert response.status_code == 400
    assert response.json["code"] == "payload_too_large"
    assert ingest_queue() == []


def test_a_compressed_body_within_the_bound_when_decompressed_only(send):
    # 40 KB of JSON compresses far below 32 KB; the bound applies after decompression.
    body = gz(jdump(padded(40_000)))
    assert len(body) < 32 * 1024
    response = send("/v1/track", body, headers={"Content-Encoding": "gzip"})
    assert response.status_code == 400


@pytest.mark.parametrize(
    ("body", "code"),
    [(b"not gzip at all", "invalid_gzip"), (gz(b'{"userId": "u"}')[:-6], "invalid_gzip")],
)
def test_bad_gzip_is_400(body, code, send):
    response = send("/v1/track", body, headers={"Content-Encoding": "gzip"})
    assert response.status_code == 400
    assert response.json["code"] == code


def test_an_unknown_content_encoding_is_415(send):
    response = send("/v1/track", jdump(ok_call()), headers={"Content-Encoding": "br"})
    assert response.status_code == 415
    assert response.json["code"] == "unsupported_encoding"


# --- batches -------------------------------------------------------------------------------------


def test_a_partial_batch_enqueues_the_good_calls_and_carries_the_bad_as_rejected(
    send, ingest_queue
):
    good_1 = FIXTURES["ios-track"]
    bad_1 = {"type": "track", "userId": "u1"}  # no event
    good_2 = FIXTURES["browser-page"]
    bad_2 = "not a call"
    bad_3 = {"type": "teleport", "userId": "u1"}
    good_3 = {"type": "identify", "anonymousId": "a9"}
    batch = [good_1, bad_1, good_2, bad_2, bad_3, good_3]

    response = send("/v1/batch", {"batch": batch})

    assert response.status_code == 200
    body = response.json
    assert body["success"] is True
    assert body["accepted"] == 3
    assert [r["index"] for r in body["rejected"]] == [1, 3, 4]
    assert [r["errors"][0]["code"] for r in body["rejected"]] == [
        "missing_event",
        "not_an_object",
        "unknown_type",
    ]
    [envelope] = ingest_queue()
    assert envelope["calls"] == [good_1, good_2, good_3]
    assert envelope["message_ids"][:2] == [good_1["messageId"], good_2["messageId"]]
    assert uuid.UUID(envelope["message_ids"][2]).version == 4
    assert [(r["index"], r["call"]) for r in envelope["rejected"]] == [
        (1, bad_1),
        (3, bad_2),
        (4, bad_3),
    ]
    assert envelope["rejected"][0]["errors"] == body["rejected"][0]["errors"]


def test_a_refused_call_gets_an_id_its_sender_reads_in_the_answer_and_its_letter_keeps(
    send, ingest_queue
):
    own = {"type": "track", "userId": "u1", "messageId": "ajs-next-1"}  # no event
    none = {"type": "track", "userId": "u1"}
    too_long = {"type": "track", "userId": "u1", "event": "E", "messageId": "x" * 100}
    response = send("/v1/batch", {"batch": [FIXTURES["ios-track"], own, none, too_long]})

    answered = [r["messageId"] for r in response.json["rejected"]]
    assert answered[0] == "ajs-next-1"  # the sender's own id, where the checks take it
    assert uuid.UUID(answered[1]).version == 4
    assert uuid.UUID(answered[2]).version == 4 and answered[1] != answered[2]
    [envelope] = ingest_queue()
    assert [r["message_id"] for r in envelope["rejected"]] == answered


def test_a_batch_where_every_call_is_bad_is_still_enqueued_for_the_dead_letters(send, ingest_queue):
    response = send("/v1/batch", {"batch": [{"type": "track"}, 5]})
    assert response.status_code == 200
    assert response.json["accepted"] == 0
    assert len(response.json["rejected"]) == 2
    [envelope] = ingest_queue()
    assert envelope["calls"] == [] and envelope["message_ids"] == []
    assert [r["call"] for r in envelope["rejected"]] == [{"type": "track"}, 5]


def test_an_empty_batch_is_answered_and_nothing_is_enqueued(send, ingest_queue):
    response = send("/v1/batch", {"batch": []})
    assert response.status_code == 200
    assert response.json == {"success": True, "accepted": 0, "rejected": []}
    assert ingest_queue() == []


def test_batch_defaults_and_sent_at_are_recorded_and_calls_left_alone(send, ingest_queue):
    calls = [FIXTURES["server-track"], {"type": "identify", "userId": "u2"}]
    body = {
        "batch": copy.deepcopy(calls),
        "context": {"library": {"name": "analytics-go"}, "ip": "192.0.2.1"},
        "integrations": {"All": True},
        "sentAt": "2026-11-28T10:00:01.000Z",
    }
    assert send("/v1/batch", body).status_code == 200
    [envelope] = ingest_queue()
    assert envelope["calls"] == calls
    assert envelope["defaults"] == {"context": body["context"], "integrations": {"All": True}}
    assert envelope["sent_at"] == "2026-11-28T10:00:01.000Z"


def test_a_batch_without_defaults_records_none(send, ingest_queue):
    send("/v1/batch", {"batch": [ok_call()], "context": None})
    [envelope] = ingest_queue()
    assert envelope["defaults"] == {}
    assert envelope["sent_at"] is None


def test_a_call_in_a_batch_needs_its_own_type(send, ingest_queue):
    response = send("/v1/batch", {"batch": [{"event": "e", "userId": "u"}]})
    assert response.json["rejected"][0]["errors"][0]["code"] == "missing_type"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{oops", "invalid_json"),
        (jdump([ok_call()]), "invalid_batch"),
        (jdump({"calls": [ok_call()]}), "invalid_batch"),
        (jdump({"batch": ok_call()}), "invalid_batch"),
        (jdump({"batch": None}), "invalid_batch"),
        (jdump({"batch": [], "context": "x"}), "invalid_context"),
        (jdump({"batch": [], "integrations": []}), "invalid_integrations"),
        (jdump({"batch": [], "sentAt": "soon"}), "invalid_timestamp"),
    ],
)
def test_a_bad_batch_envelope_is_400(body, code, send, ingest_queue):
    response = send("/v1/batch", body)
    assert response.status_code == 400
    assert response.json["code"] == code
    assert ingest_queue() == []


def test_import_takes_batches_like_batch(send, ingest_queue):
    response = send("/v1/import", {"batch": [FIXTURES["group"], {"type": "group"}]})
    assert response.status_code == 200
    assert response.json["accepted"] == 1
    [envelope] = ingest_queue()
    assert envelope["calls"] == [FIXTURES["group"]]
    assert envelope["source"] == "http"


def test_the_browser_short_batch_path(send, ingest_queue):
    body = {"batch": [{**FIXTURES["browser-page"], "writeKey": "k"}], "sentAt": None}
    assert send("/v1/b", body).status_code == 200
    assert ingest_queue()[0]["calls"] == [FIXTURES["browser-page"]]


# --- NUL characters ----------------------------------------------------------------------------


def test_a_nul_character_is_passed_on_untouched_for_the_workers_to_store_safely(send, ingest_queue):
    call = ok_call(properties={"note": "a\u0000b", "text": "\\u0000 is how JSON writes NUL"})
    assert send("/v1/track", call).status_code == 200
    assert send("/v1/batch", {"batch": [call]}).json["accepted"] == 1
    assert [e["calls"] for e in ingest_queue()] == [[call], [call]]


# --- webhook -------------------------------------------------------------------------------------


def test_a_forwarded_webhook_call_is_enqueued_with_source_webhook(send, ingest_queue):
    call = FIXTURES["webhook-forwarded"]
    response = send("/webhook", call)
    assert response.status_code == 200
    [envelope] = ingest_queue()
    assert envelope["calls"] == [call]
    assert envelope["source"] == "webhook"
    assert envelope["defaults"] == {}


@pytest.mark.parametrize(
    ("call", "code"),
    [
        ({"userId": "u", "event": "e"}, "missing_type"),
        ({"type": "x", "userId": "u"}, "unknown_type"),
    ],
)
def test_a_webhook_call_must_name_its_type(call, code, send, ingest_queue):
    response = send("/webhook", call)
    assert response.status_code == 400
    assert response.json["code"] == code
    assert ingest_queue() == []


# --- metadata ------------------------------------------------------------------------------------


@pytest.mark.parametrize("incoming", ["", "has space", "x" * 200, "ünïcode", "<script>"])
def test_an_insane_request_id_is_replaced_by_a_uuid(incoming, send, ingest_queue):
    response = send("/v1/track", ok_call(), headers={"X-Request-Id": incoming})
    rid = response.headers["X-Request-Id"]
    assert rid != incoming
    assert uuid.UUID(rid).version == 4
    assert ingest_queue()[0]["request_id"] == rid


def test_every_answer_carries_a_request_id(send, client):
    assert send("/v1/track", b"{").headers["X-Request-Id"]
    assert client.get("/nowhere").headers["X-Request-Id"]


def test_x_forwarded_for_is_ignored_without_trusted_proxies(send, ingest_queue):
    send("/v1/track", ok_call(), headers={"X-Forwarded-For": "203.0.113.9"})
    assert ingest_queue()[0]["remote_addr"] == "127.0.0.1"


@pytest.mark.parametrize(
    ("proxies", "forwarded", "expected"),
    [
        (1, "203.0.113.9", "203.0.113.9"),
        (1, "198.51.100.1, 203.0.113.9", "203.0.113.9"),
        (2, "198.51.100.1, 203.0.113.9", "198.51.100.1"),
        (2, "203.0.113.9", "127.0.0.1"),  # fewer hops than proxies: not trusted
        (1, "not-an-ip", "127.0.0.1"),
        (1, "2001:db8::1", "2001:db8::1"),
    ],
)
def test_x_forwarded_for_is_honoured_for_trusted_proxies(
    proxies, forwarded, expected, make_receiver, tenant: Tenant, redis_client, ingest_queue
):
    from tests.support.receiver import basic

    client = make_receiver(trusted_proxies=proxies).test_client()
    headers = {**basic(tenant.api_key), "X-Forwarded-For": forwarded}
    assert client.post("/v1/track", data=jdump(ok_call()), headers=headers).status_code == 200
    assert ingest_queue()[0]["remote_addr"] == expected


def test_the_queue_message_is_json_a_person_can_read(send, redis_client: redis.Redis):
    send("/v1/track", ok_call())
    [raw] = redis_client.lrange("ingest", 0, -1)
    message = json.loads(raw)
    # No pickle, no trait values in the task's argument summary.
    assert message["content-type"] == "application/json"
    assert "Clicked" not in message["headers"]["argsrepr"]


def test_what_the_receiver_queues_is_signed_and_a_worker_applies_it(
    send, ingest_queue, tenant: Tenant, settings: Settings, clean_db
):
    from workers.applier import Applier

    assert send("/v1/batch", {"batch": [ok_call(), ok_call(messageId="m-2")]}).status_code == 200
    [queued] = ingest_queue()
    EnvelopeKeys.of(settings).verify(queued)
    with pytest.raises(SignatureError):
        EnvelopeKeys(["another-deployment-s-secret"]).verify(queued)
    applier = Applier(settings)
    try:
        applier.apply(FakeTask(), queued)
    finally:
        applier.close()
    with clean_db.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM events")) == 2
        assert conn.scalar(text("SELECT count(*) FROM dead_letters")) == 0
