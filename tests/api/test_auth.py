"""API keys (four forms, 401 versus 403, revocation within the cache TTL), trusted domains and
webhook signatures, against the run's Postgres and Redis."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from datetime import timedelta
from typing import Any
from unittest.mock import ANY

import pytest
from sqlalchemy import Engine

from shared.calls import Refusal
from shared.db import make_engine
from shared.keycache import AuthCache, key_from_authorization
from shared.settings import Settings
from shared.tenancy import hash_key, url_host
from shared.timeparse import iso, utcnow
from tests.support.fixtures import fixture
from tests.support.receiver import Tenant, basic, gz, jdump

CALL = {"type": "track", "event": "Clicked", "userId": "u1"}


def post(client: Any, path: str, body: Any, headers: dict[str, str] | None = None) -> Any:
    data = body if isinstance(body, bytes) else jdump(body)
    return client.post(path, data=data, headers=headers or {})


# --- the four ways to send a key ------------------------------------------------------------------


def key_forms(key: str) -> list[tuple[dict[str, str], dict[str, Any]]]:
    return [
        (basic(key), CALL),
        ({"Authorization": f"Bearer {key}"}, CALL),
        ({"Authorization": f"Token {key}"}, CALL),
        ({"Authorization": f"bearer   {key}  "}, CALL),
        ({}, {**CALL, "writeKey": key}),
        ({"Authorization": "Basic " + base64.b64encode(f":{key}".encode()).decode()}, CALL),
    ]


@pytest.mark.parametrize("form", range(6))
def test_each_key_form_is_accepted(form, client, tenant: Tenant, ingest_queue):
    headers, body = key_forms(tenant.api_key)[form]
    response = post(client, "/v1/track", body, headers)
    assert response.status_code == 200, response.json
    [envelope] = ingest_queue()
    assert envelope["key_id"] == tenant.key_id
    assert envelope["app_id"] == tenant.app_id


def test_the_batch_write_key_is_read_from_the_top_level(client, tenant: Tenant, ingest_queue):
    body = {"batch": [CALL], "writeKey": tenant.api_key}
    assert post(client, "/v1/batch", body).status_code == 200
    assert ingest_queue()[0]["key_id"] == tenant.key_id


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        ({}, CALL),
        ({}, {**CALL, "writeKey": ""}),
        ({}, {**CALL, "writeKey": None}),
        ({}, {**CALL, "writeKey": 12345}),
        ({"Authorization": "Basic !!!not-base64"}, CALL),
        ({"Authorization": "Basic " + base64.b64encode(b":").decode()}, CALL),
        ({"Authorization": "Bearer "}, CALL),
        ({"Authorization": "Digest abc"}, CALL),
        ({}, b"this is not json"),
        ({}, b"[1,2,3]"),
        ({}, b""),
    ],
)
def test_no_key_is_401(headers, body, client, tenant: Tenant, ingest_queue):
    response = post(client, "/v1/track", body, headers)
    assert response.status_code == 401
    assert response.json["code"] == "missing_api_key"
    assert ingest_queue() == []


def test_a_body_that_is_not_json_with_a_header_key_is_400_not_401(client, tenant: Tenant):
    response = post(client, "/v1/track", b"this is not json", basic(tenant.api_key))
    assert response.status_code == 400
    assert response.json["code"] == "invalid_json"


def test_a_bad_header_key_is_refused_before_the_body_is_read(client, tenant: Tenant):
    response = post(client, "/v1/track", b"not json", basic("ud_unknown"))
    assert response.status_code == 403


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        (basic("ud_not_a_key"), CALL),
        ({"Authorization": "Bearer ud_not_a_key"}, CALL),
        ({}, {**CALL, "writeKey": "ud_not_a_key"}),
        ({}, {**CALL, "writeKey": "x" * 5000}),
    ],
)
def test_an_unknown_key_is_403(headers, body, client, tenant: Tenant, ingest_queue):
    response = post(client, "/v1/track", body, headers)
    assert response.status_code == 403
    assert response.json["code"] == "invalid_api_key"
    assert ingest_queue() == []


def test_the_header_key_wins_over_the_body_write_key(client, tenant: Tenant, ingest_queue):
    body = {**CALL, "writeKey": tenant.api_key}
    response = post(client, "/v1/track", body, basic("ud_not_a_key"))
    assert response.status_code == 403
    assert ingest_queue() == []


def test_a_key_of_another_app_lands_in_that_app(client, tenant: Tenant, clean_db, ingest_queue):
    from tests.support.receiver import make_tenant

    other = make_tenant(clean_db, "other")
    assert post(client, "/v1/track", CALL, basic(other.api_key)).status_code == 200
    assert ingest_queue()[0]["app_id"] == other.app_id != tenant.app_id


def test_a_revoked_key_is_refused_within_the_cache_ttl(
    client, tenant: Tenant, settings: Settings, ingest_queue
):
    headers = basic(tenant.api_key)
    assert post(client, "/v1/track", CALL, headers).status_code == 200
    tenant.revoke()
    revoked_at = time.monotonic()
    status = 200
    while status == 200 and time.monotonic() - revoked_at < 10:
        status = post(client, "/v1/track", CALL, headers).status_code
        time.sleep(0.05)
    refused_after = time.monotonic() - revoked_at
    assert status == 403
    assert refused_after <= settings.auth_cache_ttl + 1.0
    # A new key of the same app keeps working.
    _, fresh = tenant.new_key()
    assert post(client, "/v1/track", CALL, basic(fresh)).status_code == 200


def test_a_revoked_key_is_refused_at_once_by_a_receiver_that_never_saw_it(client, tenant: Tenant):
    tenant.revoke()
    response = post(client, "/v1/track", CALL, basic(tenant.api_key))
    assert response.status_code == 403
    assert response.json["code"] == "invalid_api_key"


# --- the key cache --------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_cache_keeps_answers_and_misses_for_the_ttl(engine: Engine, tenant: Tenant):
    clock = Clock()
    cache = AuthCache(tenant.engine, ttl=5.0, retry_after=3, clock=clock)
    view = cache.authenticate(tenant.api_key)
    assert view.key_id == tenant.key_id and view.app_id == tenant.app_id
    with pytest.raises(Refusal) as unknown:
        cache.authenticate("ud_unknown")
    assert unknown.value.status == 403

    tenant.revoke()
    clock.now += 4.9
    assert cache.authenticate(tenant.api_key).key_id == tenant.key_id  # still cached
    with pytest.raises(Refusal):
        cache.authenticate("ud_unknown")  # the miss is cached too
    clock.now += 0.2
    with pytest.raises(Refusal) as revoked:
        cache.authenticate(tenant.api_key)
    assert revoked.value.code == "invalid_api_key"


def test_the_cache_sees_a_new_domain_after_the_ttl(tenant: Tenant):
    clock = Clock()
    cache = AuthCache(tenant.engine, ttl=5.0, retry_after=3, clock=clock)
    assert cache.authenticate(tenant.api_key).domains == ()
    tenant.add_domain("shop.example.com")
    assert cache.authenticate(tenant.api_key).domains == ()
    clock.now += 5
    assert cache.authenticate(tenant.api_key).domains == ("shop.example.com",)


def test_with_postgres_down_a_seen_key_keeps_working_and_an_unseen_one_is_503(tenant: Tenant):
    clock = Clock()
    cache = AuthCache(tenant.engine, ttl=1.0, retry_after=7, clock=clock)
    assert cache.authenticate(tenant.api_key).key_id == tenant.key_id
    down = make_engine(
        Settings(database_url="postgresql://postgres@127.0.0.1:1/nowhere"),
        connect_args={"connect_timeout": 2},
    )
    try:
        cache._engine = down
        clock.now += 10
        assert cache.authenticate(tenant.api_key).key_id == tenant.key_id
        with pytest.raises(Refusal) as unseen:
            cache.authenticate("ud_never_seen")
        assert unseen.value.status == 503
        assert unseen.value.code == "auth_unavailable"
        assert unseen.value.headers == {"Retry-After": "7"}
    finally:
        down.dispose()


def test_the_cache_is_bounded(tenant: Tenant):
    cache = AuthCache(tenant.engine, ttl=5.0, retry_after=3, max_entries=3, lookups_per_second=100)
    for i in range(10):
        with pytest.raises(Refusal):
            cache.authenticate(f"ud_unknown_{i}")
        assert len(cache._entries) + len(cache._misses) <= 3


def _postgres_down(cache: AuthCache) -> Engine:
    down = make_engine(
        Settings(database_url="postgresql://postgres@127.0.0.1:1/nowhere"),
        connect_args={"connect_timeout": 2},
    )
    cache._engine = down
    return down


def test_a_flood_of_unknown_keys_never_pushes_a_valid_key_out(tenant: Tenant):
    # The old cache started over when full: each random key past 10,000 evicted the valid ones,
    # which then waited for Postgres behind the flood.
    clock = Clock()
    cache = AuthCache(
        tenant.engine, ttl=5.0, retry_after=3, max_entries=3, clock=clock, lookups_per_second=100
    )
    assert cache.authenticate(tenant.api_key).key_id == tenant.key_id
    for i in range(10):
        with pytest.raises(Refusal) as unknown:
            cache.authenticate(f"ud_flood_{i}")
        assert unknown.value.status == 403
    down = _postgres_down(cache)
    try:
        # Answered from the cache: Postgres is not asked (and is not there to answer).
        assert cache.authenticate(tenant.api_key).key_id == tenant.key_id
        with pytest.raises(Refusal) as remembered:
            cache.authenticate("ud_flood_9")
        assert remembered.value.status == 403  # the negative cache answers a repeat
    finally:
        down.dispose()


def test_postgres_is_asked_about_unseen_keys_at_most_the_budget_a_second(tenant: Tenant):
    clock = Clock()
    cache = AuthCache(tenant.engine, ttl=5.0, retry_after=3, clock=clock, lookups_per_second=2)
    assert cache.authenticate(tenant.api_key).key_id == tenant.key_id  # one look-up
    with pytest.raises(Refusal) as first:
        cache.authenticate("ud_random_1")  # the second
    assert first.value.status == 403
    with pytest.raises(Refusal) as busy:
        cache.authenticate("ud_random_2")
    assert (busy.value.status, busy.value.code) == (503, "auth_busy")
    assert busy.value.headers == {"Retry-After": "3"}
    # Cached answers do not wait for the budget.
    assert cache.authenticate(tenant.api_key).key_id == tenant.key_id
    with pytest.raises(Refusal) as cached_miss:
        cache.authenticate("ud_random_1")
    assert cached_miss.value.status == 403
    clock.now += 0.5
    with pytest.raises(Refusal) as refilled:
        cache.authenticate("ud_random_2")
    assert refilled.value.status == 403


def test_a_known_keys_refresh_is_never_held_back_by_the_budget(tenant: Tenant):
    clock = Clock()
    cache = AuthCache(tenant.engine, ttl=5.0, retry_after=3, clock=clock, lookups_per_second=0.1)
    assert cache.authenticate(tenant.api_key).key_id == tenant.key_id
    with pytest.raises(Refusal) as busy:
        cache.authenticate("ud_random")
    assert busy.value.code == "auth_busy"
    tenant.revoke()
    clock.now += 5.0  # half a look-up earned: unseen keys still wait; the revocation is seen
    with pytest.raises(Refusal) as revoked:
        cache.authenticate(tenant.api_key)
    assert revoked.value.code == "invalid_api_key"
    with pytest.raises(Refusal) as still_busy:
        cache.authenticate("ud_random")
    assert still_busy.value.code == "auth_busy"


def test_the_cache_compares_the_hash_it_found_in_constant_time(tenant: Tenant, monkeypatch):
    calls = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr("api.auth.hmac.compare_digest", spy)
    AuthCache(tenant.engine, ttl=5.0, retry_after=3).authenticate(tenant.api_key)
    assert calls == [(hash_key(tenant.api_key), hash_key(tenant.api_key))]


@pytest.mark.parametrize(
    ("header", "key"),
    [
        (None, None),
        ("", None),
        ("Basic " + base64.b64encode(b"ud_abc:").decode(), "ud_abc"),
        ("basic " + base64.b64encode(b"ud_abc:").decode(), "ud_abc"),
        ("Basic " + base64.b64encode(b"ud_abc").decode(), "ud_abc"),
        ("Basic " + base64.b64encode(b":ud_abc").decode(), "ud_abc"),
        ("Basic " + base64.b64encode(b"ud_abc:ignored").decode(), "ud_abc"),
        ("Basic " + base64.b64encode("ud_ü:".encode()).decode(), "ud_ü"),
        ("Basic " + base64.b64encode(b"\xff\xfe:").decode(), None),
        ("Basic not*base64", None),
        ("Bearer ud_abc", "ud_abc"),
        ("Token ud_abc", "ud_abc"),
        ("TOKEN ud_abc", "ud_abc"),
        ("Bearer", None),
        ("ud_abc", None),
        ("Negotiate ud_abc", None),
    ],
)
def test_key_from_authorization(header, key):
    assert key_from_authorization(header) == key


# --- trusted domains -----------------------------------------------------------------------------


def page_call(url: str | None) -> dict[str, Any]:
    call: dict[str, Any] = {"type": "page", "anonymousId": "a1", "name": "Home"}
    if url is not None:
        call["context"] = {"page": {"url": url}}
    return call


DOMAIN_CASES = [
    # trusted entries, headers, page url, answer (200, or the refusal's status)
    (["shop.example.com"], {"Origin": "https://shop.example.com"}, None, 200),
    (["shop.example.com"], {"Origin": "https://SHOP.example.com:8443"}, None, 200),
    (["shop.example.com"], {"Origin": "https://other.example.com"}, None, 403),
    (["shop.example.com"], {"Origin": "https://example.com"}, None, 403),
    (["*.example.com"], {"Origin": "https://shop.example.com"}, None, 200),
    (["*.example.com"], {"Origin": "https://a.b.example.com"}, None, 200),
    (["*.example.com"], {"Origin": "https://example.com"}, None, 403),
    (["*.example.com"], {"Origin": "https://evilexample.com"}, None, 403),
    (["*.example.com"], {"Origin": "https://example.com.evil.net"}, None, 403),
    (["*.example.com", "example.com"], {"Origin": "https://example.com"}, None, 200),
    # Referer where there is no Origin
    (["shop.example.com"], {"Referer": "https://shop.example.com/cart?x=1"}, None, 200),
    (["shop.example.com"], {"Referer": "https://evil.net/"}, None, 403),
    # Origin wins over Referer
    (
        ["shop.example.com"],
        {"Origin": "https://shop.example.com", "Referer": "https://evil.net/"},
        None,
        200,
    ),
    (
        ["shop.example.com"],
        {"Origin": "https://evil.net", "Referer": "https://shop.example.com/"},
        None,
        403,
    ),
    # An opaque Origin ("null": a sandboxed frame, a file: page) matches nothing
    (["shop.example.com"], {"Origin": "null"}, "https://evil.net/", 403),
    (["shop.example.com"], {"Origin": "null"}, "https://shop.example.com/", 403),
    (["shop.example.com"], {"Origin": "null", "Referer": "https://shop.example.com/"}, None, 403),
    (["*.example.com"], {"Origin": "file://"}, None, 403),
    ([], {"Origin": "null"}, None, 200),
    # an IDN entry (stored as punycode) against the punycode host a browser sends
    (["bücher.example"], {"Origin": "https://xn--bcher-kva.example"}, None, 200),
    (["*.BÜCHER.example"], {"Origin": "https://www.xn--bcher-kva.example"}, None, 200),
    # context.page.url where there is no header: it decides for its own call (400 when single)
    (["shop.example.com"], {}, "https://shop.example.com/pricing", 200),
    (["shop.example.com"], {}, "https://evil.net/pricing", 400),
    # headers win over the page url
    (["shop.example.com"], {"Origin": "https://shop.example.com"}, "https://evil.net/", 200),
    # no host at all: a server-side source
    (["shop.example.com"], {}, None, 200),
    (["shop.example.com"], {}, "/relative/path", 200),
    # no trusted domains: everything
    ([], {"Origin": "https://anything.net"}, "https://else.org/", 200),
]


@pytest.mark.parametrize(("domains", "headers", "url", "status"), DOMAIN_CASES)
def test_trusted_domains(domains, headers, url, status, client, tenant: Tenant, ingest_queue):
    for host in domains:
        tenant.add_domain(host)
    response = post(client, "/v1/page", page_call(url), {**basic(tenant.api_key), **headers})
    assert response.status_code == status, response.json
    if status == 200:
        assert len(ingest_queue()) == 1
    else:
        assert response.json["code"] == "untrusted_domain"
        assert ingest_queue() == []


def test_without_origin_or_referer_each_call_of_a_batch_is_decided_by_its_own_page(
    client, tenant: Tenant, ingest_queue
):
    """A server-side source (no Origin, no Referer) posting a batch with one bad page url: that call
    alone is rejected; the library would drop a whole batch answered 403."""
    tenant.add_domain("*.example.com")
    batch = [page_call("https://www.example.com/"), page_call(None), page_call("https://evil.net/")]
    response = post(client, "/v1/batch", {"batch": batch}, basic(tenant.api_key))
    assert response.status_code == 200, response.json
    assert response.json["accepted"] == 2
    assert response.json["rejected"] == [
        {"index": 2, "errors": [{"code": "untrusted_domain", "message": ANY}], "messageId": ANY}
    ]
    [envelope] = ingest_queue()
    assert envelope["calls"] == batch[:2]
    assert [r["index"] for r in envelope["rejected"]] == [2]


def test_with_an_origin_the_whole_batch_is_decided_by_it(client, tenant: Tenant, ingest_queue):
    tenant.add_domain("*.example.com")
    batch = [page_call("https://evil.net/"), page_call(None)]
    headers = {**basic(tenant.api_key), "Origin": "https://www.example.com"}
    assert post(client, "/v1/batch", {"batch": batch}, headers).status_code == 200
    headers["Origin"] = "https://evil.net"
    response = post(client, "/v1/batch", {"batch": batch[1:]}, headers)
    assert response.status_code == 403
    assert response.json["code"] == "untrusted_domain"
    assert len(ingest_queue()) == 1


def test_the_batch_context_page_url_stands_for_calls_without_their_own(
    client, tenant: Tenant, ingest_queue
):
    tenant.add_domain("shop.example.com")
    body = {"batch": [page_call(None)], "context": {"page": {"url": "https://evil.net/"}}}
    response = post(client, "/v1/batch", body, basic(tenant.api_key))
    assert response.json["rejected"][0]["errors"][0]["code"] == "untrusted_domain"
    body["batch"] = [page_call("https://shop.example.com/")]
    response = post(client, "/v1/batch", body, basic(tenant.api_key))
    assert response.json == {"success": True, "accepted": 1, "rejected": []}


def test_a_new_trusted_domain_is_enforced_within_the_cache_ttl(
    client, tenant: Tenant, settings: Settings
):
    headers = {**basic(tenant.api_key), "Origin": "https://evil.net"}
    assert post(client, "/v1/track", CALL, headers).status_code == 200
    tenant.add_domain("shop.example.com")
    time.sleep(settings.auth_cache_ttl + 0.05)
    assert post(client, "/v1/track", CALL, headers).status_code == 403


@pytest.mark.parametrize(
    ("value", "host"),
    [
        ("https://Shop.Example.com:443/x", "shop.example.com"),
        ("http://user:pw@shop.example.com/", "shop.example.com"),
        ("null", None),
        ("", None),
        (None, None),
        (42, None),
        ("shop.example.com", None),
        ("http://[::1", None),
    ],
)
def test_url_host(value, host):
    assert url_host(value) == host


# --- webhook signatures --------------------------------------------------------------------------


def sign(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha1).hexdigest()


WEBHOOK = fixture("webhook-forwarded")


def test_a_webhook_with_a_good_signature_is_accepted(client, tenant: Tenant, ingest_queue):
    tenant.set_secret("s3cret")
    body = jdump(WEBHOOK)
    headers = {**basic(tenant.api_key), "X-Signature": sign("s3cret", body)}
    response = post(client, "/webhook", body, headers)
    assert response.status_code == 200
    assert ingest_queue()[0]["source"] == "webhook"


def test_the_signature_is_compared_without_regard_to_hex_case(client, tenant: Tenant):
    tenant.set_secret("s3cret")
    body = jdump(WEBHOOK)
    headers = {**basic(tenant.api_key), "X-Signature": sign("s3cret", body).upper()}
    assert post(client, "/webhook", body, headers).status_code == 200


@pytest.mark.parametrize(
    ("signature", "code"),
    [
        (None, "missing_signature"),
        ("", "missing_signature"),
        ("0" * 40, "bad_signature"),
        ("not hex at all ü", "bad_signature"),
        ("sign-other-body", "bad_signature"),
        ("sign-other-secret", "bad_signature"),
    ],
)
def test_a_webhook_without_a_good_signature_is_401(
    signature, code, client, tenant: Tenant, ingest_queue
):
    tenant.set_secret("s3cret")
    body = jdump(WEBHOOK)
    if signature == "sign-other-body":
        signature = sign("s3cret", body + b" ")
    elif signature == "sign-other-secret":
        signature = sign("other", body)
    headers = basic(tenant.api_key)
    if signature is not None:
        headers["X-Signature"] = signature
    response = post(client, "/webhook", body, headers)
    assert response.status_code == 401
    assert response.json["code"] == code
    assert ingest_queue() == []


def test_an_app_without_a_secret_takes_unsigned_webhooks(client, tenant: Tenant, ingest_queue):
    response = post(client, "/webhook", WEBHOOK, basic(tenant.api_key))
    assert response.status_code == 200


def test_a_gzip_webhook_may_be_signed_over_either_form_of_the_body(client, tenant: Tenant):
    tenant.set_secret("s3cret")
    raw = jdump(WEBHOOK)
    wire = gz(raw)
    for signed in (raw, wire):
        headers = {
            **basic(tenant.api_key),
            "Content-Encoding": "gzip",
            "X-Signature": sign("s3cret", signed),
        }
        assert post(client, "/webhook", wire, headers).status_code == 200


def test_the_signature_is_only_asked_of_webhooks(client, tenant: Tenant):
    tenant.set_secret("s3cret")
    assert post(client, "/v1/track", CALL, basic(tenant.api_key)).status_code == 200


# --- deletion requests ----------------------------------------------------------------------------

# Segment's deletion request as a destination receives it: an event of type `delete` naming the
# person by userId (and anonymousId where known); Segment's own destination kit reads just those
# two ids from it (@segment/actions-core, Destination._onDelete).
DELETION = {
    "type": "delete",
    "userId": "user-to-forget",
    "messageId": "delete-2b9c1f0e",
    "timestamp": iso(utcnow() - timedelta(hours=1)),
    "context": {"library": {"name": "segment-regulation", "version": "1"}},
}


def test_a_signed_webhook_deletion_request_is_enqueued(client, tenant: Tenant, ingest_queue):
    tenant.set_secret("s3cret")
    body = jdump(DELETION)
    headers = {**basic(tenant.api_key), "X-Signature": sign("s3cret", body)}
    assert post(client, "/webhook", body, headers).status_code == 200
    assert ingest_queue()[0]["calls"] == [DELETION]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/webhook", DELETION),  # unsigned: the app has no webhook secret
        ("/v1/batch", {"batch": [DELETION]}),  # a library's write key is public
    ],
)
def test_a_deletion_request_is_refused_elsewhere(client, tenant: Tenant, ingest_queue, path, body):
    response = post(client, path, jdump(body), basic(tenant.api_key))
    if path == "/webhook":
        assert response.status_code == 400
        assert response.json["code"] == "deletion_not_allowed"
    else:
        assert response.json["rejected"][0]["errors"][0]["code"] == "deletion_not_allowed"
        assert [c for e in ingest_queue() for c in e["calls"]] == []  # kept as a dead letter


def _deletion(user_id: str, **changes: Any) -> dict[str, Any]:
    return {**DELETION, "userId": user_id, "messageId": f"delete-{user_id}", **changes}


def test_a_first_element_signature_vouches_for_the_first_element_only(
    client, tenant: Tenant, ingest_queue
):
    """A captured signed body put first does not carry deletions appended after it."""
    tenant.set_secret("s3cret")
    captured = jdump(fixture("server-track"))
    wire = (
        b"[" + captured + b"," + jdump(_deletion("1000")) + b"," + jdump(_deletion("1001")) + b"]"
    )
    headers = {**basic(tenant.api_key), "X-Signature": sign("s3cret", captured)}
    response = post(client, "/webhook", wire, headers)
    assert response.status_code == 200
    codes = [r["errors"][0]["code"] for r in response.json["rejected"]]
    assert codes == ["deletion_not_allowed", "deletion_not_allowed"]
    assert [c.get("type") for e in ingest_queue() for c in e["calls"]] == ["track"]


def test_a_first_element_signature_covers_a_deletion_in_that_element(
    client, tenant: Tenant, ingest_queue
):
    tenant.set_secret("s3cret")
    first = jdump(_deletion("u-first"))
    wire = b"[" + first + b"," + jdump(fixture("server-track")) + b"]"
    headers = {**basic(tenant.api_key), "X-Signature": sign("s3cret", first)}
    response = post(client, "/webhook", wire, headers)
    assert response.status_code == 200 and not response.json.get("rejected")
    assert [c["type"] for e in ingest_queue() for c in e["calls"]] == ["delete", "track"]


def test_a_whole_body_signature_covers_every_deletion(client, tenant: Tenant, ingest_queue):
    tenant.set_secret("s3cret")
    body = jdump([_deletion("a1"), _deletion("a2")])
    headers = {**basic(tenant.api_key), "X-Signature": sign("s3cret", body)}
    assert post(client, "/webhook", body, headers).status_code == 200
    assert [c["userId"] for e in ingest_queue() for c in e["calls"]] == ["a1", "a2"]


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"timestamp": iso(utcnow() - timedelta(days=31))}, "deletion_expired"),
        ({"timestamp": None}, "deletion_expired"),
        ({"messageId": None}, "deletion_needs_message_id"),
    ],
)
def test_a_signed_deletion_needs_its_message_id_and_a_recent_timestamp(
    client, tenant: Tenant, ingest_queue, changes: dict[str, Any], code: str
):
    """Its messageId keeps a copy sent again from erasing twice, but only while the dedupe window
    remembers it: a deletion older than that window is refused."""
    tenant.set_secret("s3cret")
    body = jdump({k: v for k, v in _deletion("old", **changes).items() if v is not None})
    headers = {**basic(tenant.api_key), "X-Signature": sign("s3cret", body)}
    response = post(client, "/webhook", body, headers)
    assert response.status_code == 400
    assert response.json["code"] == code
    assert ingest_queue() == []
