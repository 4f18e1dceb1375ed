"""Real senders through the real stack: receiver (gunicorn) -> Redis -> worker
process -> Postgres, for the behaviours that only show end to end."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import pytest
import requests
import rudderstack.analytics as rudder
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from shared.tenancy import add_domain, create_key, new_app
from tests.support.fixtures import fixture
from tests.support.stack import wait_for

pytestmark = pytest.mark.e2e


def js_stringify(value: Any) -> bytes:
    """How Segment's Actions destinations serialize a body (JavaScript's JSON.stringify)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def row(engine: Engine, sql: str, **params: Any) -> Any:
    with engine.connect() as conn:
        return conn.execute(text(sql), params).mappings().first()


def test_real_senders_end_to_end(stack: str, clean_db: Engine) -> None:
    with Session(clean_db) as session:
        app = new_app(session, "senders")
        key = create_key(session, app).api_key
        add_domain(session, app, "*.shop.example")
        app.webhook_secret = "s3cret"
        session.commit()
    auth = (key, "")

    # 1. rudder-sdk-python, unchanged: identify traits travel only in context.traits (gzip, /v1/batch)
    failures: list[Any] = []
    client = rudder.Client(write_key=key, host=stack, sync_mode=True, max_retries=1)
    client.on_error = lambda error, items: failures.append(error)
    client.identify("rud-1", {"email": "rud@example.com", "firstName": "Rae", "plan": "pro"})
    client.flush()
    assert failures == []

    # 2. a server-side batch (no Origin, no Referer) with one call from an untrusted page
    good = {
        "type": "page",
        "userId": "srv-1",
        "context": {"page": {"url": "https://www.shop.example/a"}},
    }
    bad = {"type": "page", "userId": "srv-1", "context": {"page": {"url": "https://evil.example/"}}}
    answer = requests.post(
        f"{stack}/v1/batch", json={"batch": [good, bad, good]}, auth=auth, timeout=10
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["accepted"] == 2
    assert answer.json()["rejected"][0]["index"] == 1

    # 3. Segment's Webhooks (Actions) with batching: a PUT of an array signed over its first element
    calls = []
    for i in range(2):
        call = fixture("webhook-forwarded")
        call |= {"type": "identify", "userId": f"hook-{i}", "messageId": f"hook-msg-{i}"}
        call |= {"traits": {"nickname": "Zoë"}}
        del call["event"], call["context"]["ip"]
        calls.append(call)
    signature = hmac.new(b"s3cret", js_stringify(calls[0]), hashlib.sha1).hexdigest()
    answer = requests.put(
        f"{stack}/webhook",
        data=js_stringify(calls),
        auth=auth,
        headers={"Content-Type": "application/json", "X-Signature": signature},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"success": True, "accepted": 2, "rejected": []}

    # 4. integrations routing: accepted, counted, not applied
    routed = {
        "type": "track",
        "userId": "away-1",
        "event": "Hidden",
        "integrations": {"All": False},
    }
    assert requests.post(f"{stack}/v1/track", json=routed, auth=auth, timeout=10).status_code == 200
    ours = {**routed, "userId": "ours-1", "integrations": {"All": False, "User.com": True}}
    assert requests.post(f"{stack}/v1/track", json=ours, auth=auth, timeout=10).status_code == 200

    def settled() -> bool:
        with clean_db.connect() as conn:
            applied = conn.scalar(text("SELECT count(*) FROM processed_messages"))
            letters = conn.scalar(text("SELECT count(*) FROM dead_letters"))
        return applied == 1 + 2 + 2 + 1 and letters == 1

    wait_for(settled, timeout=60, what="the worker to apply the calls")

    profile = row(clean_db, "SELECT * FROM users WHERE user_id = 'rud-1'")
    assert (profile["email"], profile["first_name"]) == ("rud@example.com", "Rae")
    assert profile["attributes"] == {"plan": "pro"}
    assert profile["ip_address"] == "127.0.0.1"  # the request's address: a direct sender

    server = row(clean_db, "SELECT page_views FROM users WHERE user_id = 'srv-1'")
    assert server["page_views"] == 2
    letter = row(clean_db, "SELECT reason, call FROM dead_letters")
    assert letter["reason"] == "untrusted_domain"
    assert letter["call"]["context"]["page"]["url"] == "https://evil.example/"

    for i in range(2):
        hooked = row(clean_db, "SELECT * FROM users WHERE user_id = :u", u=f"hook-{i}")
        assert hooked["attributes"] == {"nickname": "Zoë"}
        assert hooked["ip_address"] is None  # never the address of Segment's servers
    assert row(clean_db, "SELECT id FROM users WHERE user_id = 'away-1'") is None
    assert row(clean_db, "SELECT id FROM users WHERE user_id = 'ours-1'") is not None
