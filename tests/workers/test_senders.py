"""Each real sender's payload shape through the workers.

The calls come from tests/fixtures, built from the libraries' own sources (see each `_about`)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Connection, text

from tests.support.fixtures import fixture
from tests.support.readmodel import shown_profile
from workers.apply.messages import Outcome
from workers.context import map_context
from workers.traits import identify_traits

Apply = Callable[..., Outcome]


def users(conn: Connection, app_id: int) -> int:
    return int(conn.scalar(text("SELECT count(*) FROM users WHERE app_id = :a"), {"a": app_id}))


def define(conn: Connection, app_id: int, name: str, type_: str) -> None:
    conn.execute(
        text(
            "INSERT INTO attribute_definitions (app_id, scope, event, name, type, origin) "
            "VALUES (:a, 'user', '', :n, :t, 'operator')"
        ),
        {"a": app_id, "n": name, "t": type_},
    )


# --- identify traits ----------------------------------------------------------------------------


def test_rudderstack_identify_maps_its_context_traits(
    apply: Apply, conn: Connection, app_id: int
) -> None:
    """rudder-sdk-python and RudderStack's JS SDK send identify traits only in context.traits."""
    define(conn, app_id, "custom_integer", "number")
    apply(fixture("rudderstack-identify"))
    row = shown_profile(conn, app_id, "rudpy-u1")
    assert (row["email"], row["first_name"], row["last_name"], row["gender"]) == (
        "sam@example.com",
        "Sam",
        "Park",
        "male",
    )
    # `number` keeps an integral value integral, as the reference shows "123" -> 123
    assert row["attributes"] == {"custom_integer": 123, "custom_integer_new": "999"}
    assert type(row["attributes"]["custom_integer"]) is int
    assert "library" not in row["attributes"]


def test_traits_win_over_context_traits() -> None:
    call = {
        "traits": {"email": "new@example.com", "plan": None},
        "context": {"traits": {"email": "old@example.com", "plan": "pro", "seats": 3}},
    }
    assert identify_traits(call, "u1") == {"email": "new@example.com", "plan": None, "seats": 3}


def test_classic_android_identity_keys_are_not_attributes(
    apply: Apply, conn: Connection, app_id: int
) -> None:
    apply(fixture("android-identify"))
    row = shown_profile(conn, app_id, "97980cfea0067")
    assert row["attributes"] == {"plan": "pro"}
    assert (row["first_name"], row["last_name"]) == ("Ola", "Nordmann")
    assert row["device_name"] == "Pixel 8"  # device.model, not the codename `shiba`
    assert row["browser_family"] is None  # a native app, not a browser called "Android"
    names = set(
        conn.scalars(
            text("SELECT name FROM attribute_definitions WHERE app_id = :a"), {"a": app_id}
        )
    )
    assert names == {"plan"}


@pytest.mark.parametrize(
    ("traits", "user_id", "kept"),
    [
        ({"id": "u1", "plan": "pro"}, "u1", {"plan": "pro"}),
        ({"id": "other", "plan": "pro"}, "u1", {"id": "other", "plan": "pro"}),
        ({"id": 42}, "42", {}),
        ({"userId": "u1", "anonymousId": "a1"}, None, {}),
    ],
)
def test_identity_keys_in_traits(traits: dict[str, Any], user_id: Any, kept: Any) -> None:
    assert identify_traits({"traits": traits}, user_id) == kept


def test_an_empty_string_clears_standard_fields_and_custom_attributes(
    apply: Apply, conn: Connection, app_id: int
) -> None:
    define(conn, app_id, "seats", "integer")
    first = {"type": "identify", "userId": "u1", "timestamp": "2026-11-28T10:00:00Z"}
    apply({**first, "traits": {"email": "a@example.com", "plan": "pro", "seats": 3}})
    assert shown_profile(conn, app_id, "u1")["attributes"] == {"plan": "pro", "seats": 3}
    later = {**first, "timestamp": "2026-11-28T11:00:00Z"}
    apply({**later, "traits": {"email": "", "plan": "", "seats": " "}})
    row = shown_profile(conn, app_id, "u1")
    assert row["email"] is None
    assert row["attributes"] == {}


def test_an_empty_string_for_an_unknown_name_defines_nothing(
    apply: Apply, conn: Connection, app_id: int
) -> None:
    apply({"type": "identify", "userId": "u1", "traits": {"nickname": ""}})
    assert shown_profile(conn, app_id, "u1")["attributes"] == {}
    assert not conn.scalar(text("SELECT count(*) FROM attribute_definitions"))


# --- ids ----------------------------------------------------------------------------------------


def test_a_cookie_quoted_anonymous_id_is_the_same_visitor(
    apply: Apply, conn: Connection, app_id: int
) -> None:
    """analytics.js stores ids as JSON strings in cookies; a server reading the raw cookie sends
    them with the quotes."""
    browser = fixture("browser-track-client-hints")
    server = copy.deepcopy(fixture("server-track"))
    server["userId"] = None
    server["anonymousId"] = '"' + browser["anonymousId"] + '"'
    apply(browser, server)
    assert users(conn, app_id) == 1


def test_a_numeric_id_beyond_64_bits_kept_as_digits_is_its_own_user(
    apply: Apply, conn: Connection, app_id: int
) -> None:
    # what the receiver enqueues for userId 123456789012345678901 and ...902 (shared.calls)
    apply(
        {"type": "identify", "userId": "123456789012345678901", "traits": {"n": 1}},
        {"type": "identify", "userId": "123456789012345678902", "traits": {"n": 2}},
        {"type": "identify", "userId": 18446744073709551615, "traits": {"n": 3}},
    )
    assert users(conn, app_id) == 3
    assert shown_profile(conn, app_id, "18446744073709551615")["attributes"] == {"n": "3"}


# --- context -------------------------------------------------------------------------------------


def test_client_hints_win_over_chromes_reduced_user_agent() -> None:
    call = fixture("browser-track-client-hints")
    fields = map_context({**call, "type": "page"}, "page")
    assert fields["os"] == "Android"
    assert fields["device_type"] == "mobile"
    assert "device_name" not in fields  # never `K`
    assert fields["browser_family"] == "Chrome Mobile"


def test_rudderstack_high_entropy_hints_give_model_and_os_version() -> None:
    fields = map_context(fixture("rudderstack-js-page"), "page")
    assert fields["os"] == "Android 14"
    assert fields["device_name"] == "Pixel 7"
    assert fields["device_type"] == "mobile"
    assert fields["browser_family"] == "Chrome Mobile"  # a browser, though it sends context.app


def test_the_reduced_agent_without_hints_names_no_device() -> None:
    call = fixture("browser-track-client-hints")
    del call["context"]["userAgentData"]
    fields = map_context(call, "page")
    assert "device_name" not in fields
    assert fields["os"] == "Android"  # not the frozen "Android 10"


@pytest.mark.parametrize(
    ("hints", "os", "device_type"),
    [
        (
            {"platform": "Windows", "mobile": False, "platformVersion": "15.0.0"},
            "Windows 11",
            "desktop",
        ),
        (
            {"platform": "Windows", "mobile": False, "platformVersion": "10.0.0"},
            "Windows 10",
            "desktop",
        ),
        (
            {"platform": "macOS", "mobile": False, "platformVersion": "14.1.0"},
            "macOS 14.1",
            "desktop",
        ),
        ({"platform": "Android", "mobile": False}, "Android", "tablet"),
        ({"platform": "Chrome OS", "mobile": False}, "Chrome OS", "desktop"),
    ],
)
def test_client_hints_os_and_device_type(hints: Any, os: str, device_type: str) -> None:
    call = fixture("browser-page")
    call["context"]["userAgentData"] = {"brands": [], **hints}
    fields = map_context(call, "page")
    assert (fields["os"], fields["device_type"]) == (os, device_type)


def test_native_apps_are_not_parsed_as_browsers() -> None:
    ios = fixture("ios-track")
    ios["context"]["userAgent"] = (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1_2 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Mobile/15E148"
    )
    fields = map_context({**ios, "type": "screen"}, "screen")
    assert "browser_family" not in fields  # never "Mobile Safari UI/WKWebView"
    assert (fields["os"], fields["device_name"], fields["device_type"]) == (
        "iOS 17.1.2",
        "iPhone",
        "mobile",
    )


def test_android_device_name_is_the_model_not_the_codename() -> None:
    fields = map_context(fixture("android-screen"), "screen")
    assert fields["device_name"] == "Pixel 8"
    assert "browser_family" not in fields


def test_tvos_is_a_tv_and_an_unknown_user_agent_is_none() -> None:
    fields = map_context(fixture("swift-tvos-screen"), "screen")
    assert fields["device_type"] == "tv"
    assert fields["device_name"] == "Apple TV"
    assert fields["os"] == "tvOS 18.1"
    assert "user_agent" not in fields


def test_classic_ios_on_tvos_and_watchos() -> None:
    call = fixture("ios-track")
    for os_name, expected in (("tvOS", "tv"), ("watchOS", "wearable")):
        call["context"]["os"] = {"name": os_name, "version": "10.0"}
        assert map_context({**call, "type": "screen"}, "screen")["device_type"] == expected


def test_wear_os_is_a_wearable_and_undefined_is_no_user_agent() -> None:
    fields = map_context(fixture("kotlin-wear-screen"), "screen")
    assert fields["device_type"] == "wearable"
    assert fields["device_name"] == "Pixel Watch 2"
    assert "user_agent" not in fields


@pytest.mark.parametrize(
    ("agent", "device_type"),
    [
        (
            "Mozilla/5.0 (SMART-TV; Linux; Tizen 6.0) AppleWebKit/537.36 SamsungBrowser/4.0 TV Safari/537.36",
            "tv",
        ),
        ("Mozilla/5.0 (Web0S; Linux/SmartTV) AppleWebKit/537.36 Chrome/79.0 Safari/537.36", "tv"),
        (
            "Mozilla/5.0 (X11; Linux armv7l) AppleWebKit/537.36 Chrome/120.0 Safari/537.36 CrKey/1.56",
            "tv",
        ),
    ],
)
def test_tv_browsers(agent: str, device_type: str) -> None:
    fields = map_context({"type": "page", "context": {"userAgent": agent}}, "page")
    assert fields["device_type"] == device_type


@pytest.mark.parametrize("agent", ["unknown", "undefined", "", "  ", "UNKNOWN"])
def test_placeholder_user_agents_are_absent(agent: str) -> None:
    assert map_context({"type": "page", "context": {"userAgent": agent}}, "page") == {}


def test_the_request_address_stands_for_a_missing_context_ip() -> None:
    call = fixture("server-track")
    call = {**call, "type": "identify"}
    assert map_context(call, "identify", "203.0.113.9")["ip_address"] == "203.0.113.9"
    assert map_context(call, "identify").get("ip_address") is None
    with_ip = fixture("browser-identify")
    assert map_context(with_ip, "identify", "203.0.113.9")["ip_address"] == "198.51.100.23"


@pytest.mark.parametrize(
    ("source", "stored"), [("http", "203.0.113.9"), ("webhook", None), ("replay", None)]
)
def test_ip_address_from_the_request_only_for_direct_senders(
    source: str, stored: Any, apply: Apply, conn: Connection, app_id: int
) -> None:
    call = {
        "type": "identify",
        "userId": "u1",
        "traits": {},
        "context": {"library": {"name": "analytics-python"}},
    }
    apply(call, remote_addr="203.0.113.9", source=source)
    assert shown_profile(conn, app_id, "u1")["ip_address"] == stored


def test_direct_referrer_is_no_referrer(apply: Apply, conn: Connection, app_id: int) -> None:
    apply(fixture("rudderstack-js-page"))
    referrer = conn.scalar(text("SELECT referrer FROM page_views WHERE app_id = :a"), {"a": app_id})
    assert referrer is None


# --- routing -------------------------------------------------------------------------------------


def test_a_call_routed_away_is_counted_and_not_applied(
    apply: Apply, conn: Connection, app_id: int
) -> None:
    away = {**fixture("server-track"), "integrations": {"All": False, "Mixpanel": True}}
    engage = fixture("engage-audience-identify")  # All false, UserEngage true: ours
    outcome = apply(away, engage)
    assert outcome.routed_away == {"track": 1}
    assert sum(outcome.applied.values()) == 1
    assert not conn.scalar(text("SELECT count(*) FROM events WHERE app_id = :a"), {"a": app_id})
    assert shown_profile(conn, app_id, "97980cfea0067")["email"] == "zofia@example.com"


def test_a_batch_default_integrations_routes_its_calls(
    apply: Apply, conn: Connection, app_id: int
) -> None:
    outcome = apply(
        {"type": "track", "event": "e", "userId": "u1"},
        {"type": "track", "event": "e", "userId": "u2", "integrations": {"User.com": True}},
        defaults={"integrations": {"All": False}},
    )
    assert outcome.routed_away == {"track": 1}
    assert users(conn, app_id) == 1
