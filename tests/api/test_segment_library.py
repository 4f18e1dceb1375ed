"""Segment's own Python library, unchanged, against the receiver served over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import segment.analytics as analytics
from flask import Flask
from segment.analytics import Client
from segment.analytics.request import APIError
from werkzeug.serving import make_server

from tests.support.receiver import Tenant
from tests.support.stack import serving


@pytest.fixture
def live_url(receiver_app: Flask, redis_client: Any) -> Iterator[str]:
    with serving(make_server("127.0.0.1", 0, receiver_app, threaded=True)) as url:
        yield url


@pytest.fixture
def library(live_url: str, tenant: Tenant) -> Iterator[Any]:
    """The module-level API of the library, configured as its docs say, restored afterwards."""
    errors: list[Exception] = []
    saved = {
        name: getattr(analytics, name) for name in ("write_key", "host", "sync_mode", "on_error")
    }
    analytics.write_key = tenant.api_key
    analytics.host = live_url
    analytics.sync_mode = True
    analytics.on_error = lambda error, batch: errors.append(error)
    analytics.default_client = None
    try:
        yield analytics
    finally:
        analytics.default_client = None
        for name, value in saved.items():
            setattr(analytics, name, value)
    assert errors == []


def test_identify_track_page_group_screen_alias_land_on_the_queue(
    library: Any, tenant: Tenant, ingest_queue
):
    library.identify("user-1", {"email": "zofia@example.com", "plan": "pro", "logins": 3})
    library.track("user-1", "Order Completed", {"total": 27.5, "currency": "EUR"})
    library.page("user-1", "Docs", "Install", {"url": "https://docs.example.com/install"})
    library.group("user-1", "company-9", {"name": "Initech", "employees": 329})
    library.screen("user-1", "App", "Cart", {"items": 3})
    library.alias("anon-77", "user-1")

    envelopes = ingest_queue()
    assert [e["calls"][0]["type"] for e in envelopes] == [
        "identify",
        "track",
        "page",
        "group",
        "screen",
        "alias",
    ]
    for envelope in envelopes:
        [call] = envelope["calls"]
        assert envelope["app_id"] == tenant.app_id
        assert envelope["key_id"] == tenant.key_id
        assert envelope["source"] == "http"
        assert envelope["message_ids"] == [call["messageId"]]  # the library's own ids
        assert envelope["sent_at"] is not None  # the library's batch-level sentAt
        assert envelope["rejected"] == []
        assert call["context"]["library"]["name"] == "analytics-python"
        assert "writeKey" not in call
    identify, track, page, group, _screen, alias = (e["calls"][0] for e in envelopes)
    assert identify["userId"] == "user-1"
    assert identify["traits"] == {"email": "zofia@example.com", "plan": "pro", "logins": 3}
    assert track["event"] == "Order Completed"
    assert track["properties"] == {"total": 27.5, "currency": "EUR"}
    assert page["name"] == "Install" and page["category"] == "Docs"
    assert group["groupId"] == "company-9"
    assert alias["previousId"] == "anon-77" and alias["userId"] == "user-1"


def test_the_background_client_with_gzip_batches_and_flushes(
    live_url: str, tenant: Tenant, ingest_queue
):
    errors: list[Exception] = []
    client = Client(
        tenant.api_key,
        host=live_url,
        gzip=True,
        upload_size=50,
        on_error=lambda error, batch: errors.append(error),
    )
    try:
        for i in range(120):
            client.track(f"user-{i % 7}", "Viewed", {"n": i}, anonymous_id=f"anon-{i}")
        client.flush()
    finally:
        client.shutdown()
    assert errors == []
    calls = [call for envelope in ingest_queue() for call in envelope["calls"]]
    assert sorted(call["properties"]["n"] for call in calls) == list(range(120))
    assert len({call["messageId"] for call in calls}) == 120


def test_a_bad_key_reaches_the_library_as_its_api_error_with_our_code(live_url: str):
    client = Client("ud_not_a_key", host=live_url, sync_mode=True, max_retries=0)
    with pytest.raises(APIError) as refused:
        client.track("user-1", "Clicked")
    assert refused.value.status == 403
    assert refused.value.code == "invalid_api_key"
