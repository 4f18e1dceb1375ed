"""Profile fields from a call's context: device, os, client hints, locale, screen, ip, page.

No database here. What each field is taken from, and in which order, is in docs/workers.md
("Context and user agents"); docs/senders.md says what each library sends.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from workers.coerce import coerce
from workers.useragents import ParsedAgent, device_kind, parse_user_agent

__all__ = ["is_native_app", "map_context"]

_CONTEXT_KINDS = frozenset({"identify", "page", "screen"})
# Android's own rule: a screen whose shortest side is 600 dp or more is a tablet layout.
_ANDROID_TABLET_DP = 600
_CONTEXT_DEVICE_TYPES = {
    "mobile": "mobile",
    "phone": "mobile",
    "smartphone": "mobile",
    "tablet": "tablet",
    "desktop": "desktop",
    "bot": "bot",
    "macos": "desktop",
    "windows": "desktop",
    "linux": "desktop",
    "tv": "tv",
    "tvos": "tv",
    "androidtv": "tv",
    "wearable": "wearable",
    "watch": "wearable",
    "watchos": "wearable",
    "wearos": "wearable",
}
_OS_DEVICE_TYPES = {
    "ios": "mobile",
    "ipados": "tablet",
    "android": "mobile",
    "tvos": "tv",
    "android tv": "tv",
    "watchos": "wearable",
    "wear os": "wearable",
    "macos": "desktop",
    "mac os x": "desktop",
    "windows": "desktop",
    "linux": "desktop",
}
"""device_type from context.os.name where context.device says nothing (native apps)."""
_ABSENT_AGENTS = frozenset({"unknown", "undefined", "null", "none"})
"""Placeholders libraries put where they have no user agent (analytics-kotlin: `undefined`)."""
NATIVE_LIBRARIES = frozenset(
    {
        "analytics-ios",
        "analytics-android",
        "analytics-swift",
        "analytics-kotlin",
        "analytics-react-native",
        "analytics-flutter",
        "@segment/analytics-react-native",
    }
)
"""Segment's mobile and TV libraries (context.library.name)."""
BROWSER_LIBRARIES = frozenset({"analytics.js", "RudderLabs JavaScript SDK"})
"""Browser libraries that may send context.app and are still browsers."""


def _string(value: Any) -> str | None:
    """A non-blank string from context, trimmed; anything else None."""
    if isinstance(value, str):
        text = value.replace("\x00", "").strip()
        return text or None
    return None


def _scalar_text(value: Any) -> str | None:
    """Like _string, but numbers count too (an os version sent as 14)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        result = coerce(value, "string")
        return result if isinstance(result, str) else None
    return _string(value)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _positive_int(value: Any) -> int | None:
    number = coerce(value, "integer")
    return number if isinstance(number, int) and number > 0 else None


def _android_screen_is_tablet(screen: dict[str, Any]) -> bool:
    width, height = _positive_int(screen.get("width")), _positive_int(screen.get("height"))
    density = screen.get("density")
    if width is None or height is None or isinstance(density, bool):
        return False
    if not isinstance(density, int | float) or not density > 0:
        return False
    return min(width, height) / density >= _ANDROID_TABLET_DP


def _context_device_type(
    device: dict[str, Any], os_name: str | None, screen: dict[str, Any], agent: ParsedAgent | None
) -> str | None:
    kind = _string(device.get("type"))
    names = " ".join(
        text for text in (_string(device.get("model")), _string(device.get("name"))) if text
    )
    by_os = _OS_DEVICE_TYPES.get((os_name or "").lower())
    if kind is None:
        return by_os
    kind = kind.lower()
    if kind in _CONTEXT_DEVICE_TYPES:
        return _CONTEXT_DEVICE_TYPES[kind]
    if kind not in ("ios", "android"):
        return None
    # analytics-ios says `ios` on tvOS and watchOS too; the OS name tells them apart.
    special = by_os if by_os in ("tv", "wearable") else device_kind(names)
    if special is not None:
        return special
    lowered = names.lower()
    if "ipad" in lowered or "tablet" in lowered or (agent is not None and agent.tablet):
        return "tablet"
    if kind == "android" and _android_screen_is_tablet(screen):
        return "tablet"
    return "mobile"


def _user_agent(value: Any) -> str | None:
    """context.userAgent, absent where a library filled a placeholder (`unknown`, `undefined`)."""
    ua = _string(value)
    if ua is None or ua.lower() in _ABSENT_AGENTS:
        return None
    return ua


def _library(context: dict[str, Any]) -> str | None:
    return _string(_dict(context.get("library")).get("name"))


def is_native_app(context: dict[str, Any]) -> bool:
    """Whether the call comes from a native app: a mobile or TV library, or
    `context.app` from a library that is not a browser one (RudderStack's JS SDK sends
    `context.app` naming itself from browsers)."""
    library = _library(context)
    if library in NATIVE_LIBRARIES:
        return True
    app = context.get("app")
    return isinstance(app, dict) and bool(app) and library not in BROWSER_LIBRARIES


def _client_hints(context: dict[str, Any]) -> dict[str, Any] | None:
    """The browser's client hints: analytics.js's `userAgentData`, RudderStack's `ua-ch`."""
    for key in ("userAgentData", "ua-ch"):
        hints = context.get(key)
        if isinstance(hints, dict) and (
            _string(hints.get("platform")) or isinstance(hints.get("mobile"), bool)
        ):
            return hints
    return None


def _hints_os(hints: dict[str, Any]) -> str | None:
    platform = _string(hints.get("platform"))
    if platform is None or platform.lower() == "unknown":
        return None
    version = _string(hints.get("platformVersion"))
    parts = version.split(".") if version else []
    while parts and parts[-1] == "0" and len(parts) > 1:
        parts.pop()
    if platform == "Windows":
        # Microsoft's rule for Sec-CH-UA-Platform-Version: 13 and up is Windows 11, 1-10 Windows 10.
        major = int(parts[0]) if parts and parts[0].isdigit() else 0
        return "Windows 11" if major >= 13 else "Windows 10" if major >= 1 else "Windows"
    return f"{platform} {'.'.join(parts)}" if parts else platform


def _hints_device_type(hints: dict[str, Any], ua: str | None) -> str | None:
    mobile = hints.get("mobile")
    platform = (_string(hints.get("platform")) or "").lower()
    if ua is not None and (tv_or_watch := device_kind(ua)) is not None:
        return tv_or_watch
    if mobile is True:
        return "mobile"
    if mobile is False and platform == "android":
        return "tablet"  # Chrome on Android sends mobile=false only on tablets (and desktop mode)
    if mobile is False:
        return "desktop"
    return None


def map_context(call: dict[str, Any], kind: str, client_ip: str | None = None) -> dict[str, Any]:
    """Profile fields derived from a call's context; only derivable keys appear.

    `client_ip` is the request's address, given only for calls sent straight to /v1/* (never for
    /webhook, whose address is Segment's, or replays, whose address is the operator's): it stands
    for context.ip where the sender left that out, as Segment's own API fills it.
    """
    kind = str(kind).lower()
    if not isinstance(call, dict) or kind not in _CONTEXT_KINDS:
        return {}
    context = _dict(call.get("context"))
    fields: dict[str, Any] = {}

    ua = _user_agent(context.get("userAgent"))
    native = is_native_app(context)
    hints = None if native else _client_hints(context)
    # A native app's HTTP user agent (Dalvik, CFNetwork, a web view) is not a browser's: its OS and
    # device come from context.os and context.device.
    agent = parse_user_agent(ua) if ua is not None and not native else None
    reduced = agent is not None and agent.reduced
    if ua is not None:
        fields["user_agent"] = ua
    if agent is not None:
        if agent.browser_family is not None:
            fields["browser_family"] = agent.browser_family
        if agent.browser_version is not None:
            fields["browser_version"] = agent.browser_version

    os_ = _dict(context.get("os"))
    os_name = _string(os_.get("name"))
    if os_name is not None:
        os_version = _scalar_text(os_.get("version"))
        fields["os"] = f"{os_name} {os_version}" if os_version else os_name
    elif hints is not None and (hinted := _hints_os(hints)) is not None:
        fields["os"] = hinted
    elif agent is not None and agent.os is not None:
        fields["os"] = agent.os

    device = _dict(context.get("device"))
    name, model = _string(device.get("name")), _string(device.get("model"))
    android = (_string(device.get("type")) or "").lower() == "android" or (
        (os_name or "").lower() == "android"
    )
    # Android sends a codename as device.name (`shiba`); the model (`Pixel 8`) is what people know.
    device_name = (model or name) if android else (name or model)
    if device_name is None and hints is not None:
        device_name = _string(hints.get("model"))
    if device_name is None and agent is not None and not reduced:
        device_name = agent.device_name
    if device_name is not None:
        fields["device_name"] = device_name

    screen = _dict(context.get("screen"))
    device_type = _context_device_type(device, os_name, screen, agent)
    if device_type is None and hints is not None:
        device_type = _hints_device_type(hints, ua)
    if device_type is None and agent is not None:
        device_type = agent.device_type
    if device_type is not None:
        fields["device_type"] = device_type

    language = _string(context.get("locale"))
    if language is not None:
        fields["language"] = language

    width, height = _positive_int(screen.get("width")), _positive_int(screen.get("height"))
    if width is not None and height is not None:
        fields["resolution"] = f"{width}x{height}"

    ip = _ip(context.get("ip")) or _ip(client_ip)
    if ip is not None:
        fields["ip_address"] = ip

    timezone = _string(context.get("timezone"))
    if timezone is not None:
        fields["timezone"] = timezone

    url = _string(_dict(context.get("page")).get("url"))
    if kind == "page":
        url = _string(_dict(call.get("properties")).get("url")) or url
    if url is not None:
        fields["current_url"] = url
    return fields


def _ip(value: Any) -> str | None:
    """An IPv4 or IPv6 address as sent, trimmed; None for anything else (never store junk)."""
    ip = _string(value)
    if ip is None:
        return None
    try:
        ipaddress.ip_address(ip)
    except ValueError:
        return None
    return ip
