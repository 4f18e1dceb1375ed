"""Profile fields from a call's context, user agents and client hints included."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.fixtures import fixture
from workers.context import map_context

CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/121.0.0.0 Safari/537.36"
)
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1_2 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1"
)
IPAD = (
    "Mozilla/5.0 (iPad; CPU OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.1 Mobile/15E148 Safari/604.1"
)
ANDROID_PHONE = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.6099.144 Mobile Safari/537.36"
)
ANDROID_TABLET = (
    "Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36"
)
FIREFOX_ANDROID_TABLET = "Mozilla/5.0 (Android 13; Tablet; rv:121.0) Gecko/121.0 Firefox/121.0"
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
GOOGLEBOT_SMARTPHONE = (
    "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/121.0.6167.139 Mobile Safari/537.36 "
    "(compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
)
MAC_SAFARI = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.1 Safari/605.1.15"
)
DALVIK = "Dalvik/2.1.0 (Linux; U; Android 14; Pixel 8 Build/UD1A.230803.041)"

UA_CASES: list[Any] = [
    pytest.param(
        CHROME,
        {
            "browser_family": "Chrome",
            "browser_version": "121.0.0.0",
            "os": "Windows 10",
            "device_type": "desktop",
        },
        id="desktop-chrome",
    ),
    pytest.param(
        IPHONE,
        {
            "browser_family": "Mobile Safari",
            "browser_version": "17.1",
            "os": "iOS 17.1.2",
            "device_name": "iPhone",
            "device_type": "mobile",
        },
        id="iphone-safari",
    ),
    pytest.param(
        IPAD,
        {
            "browser_family": "Mobile Safari",
            "browser_version": "17.1",
            "os": "iOS 17.1",
            "device_name": "iPad",
            "device_type": "tablet",
        },
        id="ipad-safari",
    ),
    pytest.param(
        ANDROID_PHONE,
        {
            "browser_family": "Chrome Mobile",
            "browser_version": "120.0.6099.144",
            "os": "Android 14",
            "device_name": "Pixel 8",
            "device_type": "mobile",
        },
        id="android-phone",
    ),
    pytest.param(
        ANDROID_TABLET,
        {
            "browser_family": "Chrome",
            "browser_version": "120.0.0.0",
            "os": "Android 13",
            "device_name": "SM-X700",
            "device_type": "tablet",
        },
        id="android-tablet-no-mobile-token",
    ),
    pytest.param(
        FIREFOX_ANDROID_TABLET,
        {
            "browser_family": "Firefox Mobile",
            "browser_version": "121.0",
            "os": "Android 13",
            "device_type": "tablet",
        },
        id="android-tablet-token",
    ),
    pytest.param(
        GOOGLEBOT,
        {"browser_family": "Googlebot", "browser_version": "2.1", "device_type": "bot"},
        id="googlebot",
    ),
    pytest.param(
        GOOGLEBOT_SMARTPHONE,
        {
            "browser_family": "Googlebot",
            "browser_version": "2.1",
            "os": "Android 6.0.1",
            "device_type": "bot",
        },
        id="googlebot-smartphone-is-bot-not-mobile",
    ),
    pytest.param(
        MAC_SAFARI,
        {
            "browser_family": "Safari",
            "browser_version": "17.1",
            "os": "Mac OS X 10.15.7",
            "device_name": "Mac",
            "device_type": "desktop",
        },
        id="mac-safari",
    ),
    pytest.param(
        DALVIK,
        {
            "browser_family": "Android",
            "browser_version": "14",
            "os": "Android 14",
            "device_name": "Pixel 8",
            "device_type": "mobile",
        },
        id="dalvik-without-mobile-token-is-not-a-tablet",
    ),
    pytest.param(
        "curl/8.4.0",
        {"browser_family": "curl", "browser_version": "8.4.0", "device_type": "desktop"},
        id="curl-desktop",
    ),
    pytest.param("nonsense", {"device_type": "desktop"}, id="unparseable-desktop"),
]


@pytest.mark.parametrize(("ua", "expected"), UA_CASES)
def test_context_from_user_agent(ua: str, expected: dict[str, Any]) -> None:
    call = {"context": {"userAgent": ua}}
    assert map_context(call, "identify") == {"user_agent": ua, **expected}


IOS_CONTEXT = {
    "os": "iOS 17.1.2",
    "device_name": "iPhone",
    "device_type": "mobile",
    "language": "en-US",
    "resolution": "393x852",
    "ip_address": "203.0.113.40",
    "timezone": "America/New_York",
}


def test_ios_fixture_without_user_agent() -> None:
    assert map_context(fixture("ios-track.json"), "screen") == IOS_CONTEXT


def test_android_screen_fixture() -> None:
    # a native app: no browser from the Dalvik user agent
    assert map_context(fixture("android-screen.json"), "screen") == {
        "user_agent": DALVIK,
        "os": "Android 14",
        "device_name": "Pixel 8",
        "device_type": "mobile",
        "language": "de-DE",
        "resolution": "1080x2400",
        "timezone": "Europe/Berlin",
    }


def test_browser_identify_fixture_context() -> None:
    assert map_context(fixture("browser-identify.json"), "identify") == {
        "user_agent": CHROME,
        "browser_family": "Chrome",
        "browser_version": "121.0.0.0",
        "os": "Windows 10",
        "device_type": "desktop",
        "language": "pl-PL",
        "resolution": "2560x1440",
        "ip_address": "198.51.100.23",
        "timezone": "Europe/Warsaw",
        "current_url": "https://www.example.com/welcome",
    }


def test_engage_fixture_context_has_nothing() -> None:
    assert map_context(fixture("engage-audience-identify.json"), "identify") == {}


DEVICE_TYPES: list[Any] = [
    pytest.param({"type": "ios", "model": "iPhone15,2"}, {}, None, "mobile", id="ios-iphone"),
    pytest.param({"type": "ios", "model": "iPad13,4"}, {}, None, "tablet", id="ios-ipad-model"),
    pytest.param({"type": "ios", "name": "iPad"}, {}, None, "tablet", id="ios-ipad-name"),
    pytest.param({"type": "iOS"}, {}, IPAD, "tablet", id="ios-ipad-user-agent"),
    pytest.param({"type": "android", "model": "Pixel 8"}, {}, None, "mobile", id="android-phone"),
    pytest.param(
        {"type": "android", "model": "SM-X700"},
        {},
        ANDROID_TABLET,
        "tablet",
        id="android-tablet-user-agent",
    ),
    pytest.param(
        {"type": "android", "model": "Pixel 8"},
        {},
        DALVIK,
        "mobile",
        id="android-dalvik-user-agent-stays-mobile",
    ),
    pytest.param(
        {"type": "android", "model": "Galaxy Tablet S9"},
        {},
        None,
        "tablet",
        id="android-tablet-in-model",
    ),
    pytest.param(
        {"type": "android", "model": "SM-X700"},
        {"width": 1600, "height": 2560, "density": 2.0},
        None,
        "tablet",
        id="android-800dp-screen",
    ),
    pytest.param(
        {"type": "android", "model": "Pixel 8"},
        {"width": 1080, "height": 2400, "density": 2.625},
        None,
        "mobile",
        id="android-411dp-screen",
    ),
    pytest.param(
        {"type": "ios"},
        {"width": 1179, "height": 2556},
        None,
        "mobile",
        id="ios-pixels-not-used",
    ),
    pytest.param({"type": "tablet"}, {}, CHROME, "tablet", id="explicit-tablet"),
    pytest.param({"type": "Mobile"}, {}, CHROME, "mobile", id="explicit-mobile"),
    pytest.param({"type": "desktop"}, {}, IPHONE, "desktop", id="explicit-desktop"),
    pytest.param({"type": "bot"}, {}, None, "bot", id="explicit-bot"),
    pytest.param({"type": "macos"}, {}, None, "desktop", id="macos"),
    pytest.param({"type": "visionos"}, {}, IPHONE, "mobile", id="unknown-type-uses-user-agent"),
    pytest.param({"type": "visionos"}, {}, None, None, id="unknown-type-no-user-agent"),
    # tv and wearable device types
    pytest.param({"type": "watchos"}, {}, None, "wearable", id="watchos"),
    pytest.param({"type": "tvos"}, {}, None, "tv", id="tvos"),
    pytest.param({"type": "android", "model": "BRAVIA 4K VH2"}, {}, None, "tv", id="android-tv"),
    pytest.param({"type": "android", "model": "AFTMM"}, {}, None, "tv", id="fire-tv"),
    pytest.param({"type": "android", "model": "Pixel Watch 2"}, {}, None, "wearable", id="wear-os"),
    pytest.param({"type": "android", "model": "SM-R960"}, {}, None, "wearable", id="galaxy-watch"),
    pytest.param({"type": None}, {}, None, None, id="null-type"),
]


@pytest.mark.parametrize(("device", "screen", "ua", "expected"), DEVICE_TYPES)
def test_device_type(
    device: dict[str, Any], screen: dict[str, Any], ua: str | None, expected: str | None
) -> None:
    context: dict[str, Any] = {"device": device, "screen": screen}
    if ua is not None:
        context["userAgent"] = ua
    assert map_context({"context": context}, "identify").get("device_type") == expected


CONTEXT_FIELDS: list[Any] = [
    pytest.param(
        {"os": {"name": "Windows", "version": "11"}, "userAgent": CHROME},
        "os",
        "Windows 11",
        id="os-context-beats-user-agent",
    ),
    pytest.param({"os": {"name": "Android"}}, "os", "Android", id="os-name-only"),
    pytest.param(
        {"os": {"name": "Android", "version": 14}}, "os", "Android 14", id="os-version-int"
    ),
    pytest.param({"os": {"version": "14"}}, "os", None, id="os-version-without-name"),
    pytest.param({"os": {"name": None}, "userAgent": IPHONE}, "os", "iOS 17.1.2", id="os-parsed"),
    pytest.param(
        {"device": {"name": "Zofia's phone", "model": "Pixel 8"}},
        "device_name",
        "Zofia's phone",
        id="device-name-before-model",
    ),
    pytest.param({"device": {"model": "Pixel 8"}}, "device_name", "Pixel 8", id="device-model"),
    pytest.param(
        {"device": {"model": "Pixel 8"}, "userAgent": IPHONE},
        "device_name",
        "Pixel 8",
        id="device-context-beats-user-agent",
    ),
    pytest.param({"locale": "pl-PL"}, "language", "pl-PL", id="locale"),
    pytest.param({"locale": 7}, "language", None, id="locale-not-string"),
    pytest.param({"screen": {"width": 390, "height": 844}}, "resolution", "390x844", id="screen"),
    pytest.param(
        {"screen": {"width": 390.0, "height": "844"}}, "resolution", "390x844", id="screen-loose"
    ),
    pytest.param({"screen": {"width": 390}}, "resolution", None, id="screen-no-height"),
    pytest.param({"screen": {"width": 0, "height": 0}}, "resolution", None, id="screen-zero"),
    pytest.param({"screen": {"width": 390.5, "height": 844}}, "resolution", None, id="screen-frac"),
    pytest.param({"ip": "198.51.100.23"}, "ip_address", "198.51.100.23", id="ipv4"),
    pytest.param({"ip": "2001:db8::1"}, "ip_address", "2001:db8::1", id="ipv6"),
    pytest.param({"ip": "not-an-ip"}, "ip_address", None, id="ip-invalid"),
    pytest.param({"ip": None}, "ip_address", None, id="ip-null"),
    pytest.param({"timezone": "Europe/Warsaw"}, "timezone", "Europe/Warsaw", id="timezone"),
    pytest.param({"userAgent": "   "}, "user_agent", None, id="blank-user-agent"),
    pytest.param(
        {"page": {"url": "https://e.example/a"}},
        "current_url",
        "https://e.example/a",
        id="page-url",
    ),
]


@pytest.mark.parametrize(("context", "key", "expected"), CONTEXT_FIELDS)
def test_context_fields(context: dict[str, Any], key: str, expected: Any) -> None:
    assert map_context({"context": context}, "identify").get(key) == expected


def test_request_address_is_never_used() -> None:
    # Only context.ip counts; nothing else in the call (or its metadata) becomes ip_address.
    call = {"context": {}, "requestIp": "198.51.100.9", "ip": "198.51.100.9"}
    assert "ip_address" not in map_context(call, "identify")


PAGE = {
    "properties": {"url": "https://www.example.com/pricing?plan=pro"},
    "context": {"page": {"url": "https://www.example.com/welcome"}},
}


@pytest.mark.parametrize(
    ("call", "kind", "expected"),
    [
        pytest.param(PAGE, "page", "https://www.example.com/pricing?plan=pro", id="page-own-url"),
        pytest.param(PAGE, "identify", "https://www.example.com/welcome", id="identify-context"),
        pytest.param(PAGE, "screen", "https://www.example.com/welcome", id="screen-context"),
        pytest.param(
            {"properties": {"url": None}, "context": PAGE["context"]},
            "page",
            "https://www.example.com/welcome",
            id="page-without-own-url",
        ),
        pytest.param(
            {"properties": {"url": "https://only.example/"}},
            "page",
            "https://only.example/",
            id="page-own-url-no-context",
        ),
        pytest.param(
            fixture("browser-page.json"),
            "page",
            "https://www.example.com/pricing?plan=pro",
            id="browser-page-fixture",
        ),
    ],
)
def test_current_url(call: dict[str, Any], kind: str, expected: str) -> None:
    assert map_context(call, kind)["current_url"] == expected


@pytest.mark.parametrize("kind", ["track", "group", "alias"])
def test_context_only_for_identify_page_screen(kind: str) -> None:
    assert map_context(fixture("browser-identify.json"), kind) == {}


@pytest.mark.parametrize(
    "call",
    [
        pytest.param({}, id="no-context"),
        pytest.param({"context": None}, id="null-context"),
        pytest.param({"context": "desktop"}, id="string-context"),
        pytest.param({"context": {"os": "iOS", "device": [], "screen": 5, "page": "x"}}, id="junk"),
    ],
)
def test_context_junk_gives_nothing(call: dict[str, Any]) -> None:
    assert map_context(call, "identify") == {}


def test_long_user_agent_is_kept_whole_and_parsed_from_its_start() -> None:
    ua = IPHONE + " x" * 50_000
    fields = map_context({"context": {"userAgent": ua}}, "identify")
    assert fields["user_agent"] == ua
    assert fields["device_type"] == "mobile"
