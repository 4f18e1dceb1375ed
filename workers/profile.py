"""Trait and context mapping to profile and company fields; no database here.

Choices taken where more than one answer would do (copied into docs/):

- A standard field present with ``null`` or a blank string clears it (value None). A number or
  boolean becomes its string (``48600100200`` -> ``"48600100200"``); an object or array where a
  string is expected is ignored: the key does not appear. Strings are trimmed and lose NUL
  characters (Postgres text cannot hold them); they are not cut.
- With both spellings present (``first_name`` and ``firstName``), the snake_case one is tried
  first, and the first one holding a usable value wins; an object in one does not hide the other.
- ``name`` is used only when neither first nor last name holds a string. It then splits at the
  first run of blanks: ``"Zofia Anna Nowak"`` -> ``Zofia`` / ``Anna Nowak``; a single word sets the
  first name and leaves the last name as the other traits say (untouched, or cleared by an explicit
  null). ``name: null`` in that case clears both.
- ``gender``: m/male/man, f/female/woman and ``unknown`` (our own output, so a round trip keeps it)
  in any case, trimmed; User.com codes 1/2/3 as integers, integral floats or digit strings.
  Anything else, booleans included, is not written.
- ``address: null`` clears country, region and city; within an address ``state`` is tried before
  ``region``. Street and postal code have no profile field and are not kept.
- Company ``employees``: the integer rules, and a negative count is ignored.
- Context fills fields and never clears one: a null or unusable context value leaves the key out.
  Context is mapped only for identify, page and screen (other kinds give ``{}``).
- ``os`` and ``device_name`` come from context.os / context.device when those hold a name; the
  user agent is parsed only for what context lacks. context.device ``name`` is preferred to
  ``model``, as docs/contract.md says (analytics-ios: ``iPhone`` over ``iPhone15,2``).
- A parsed device name is used only when ua-parser names a device: not ``Other``, ``Spider`` or
  its ``Generic ...`` placeholders.
- ``device_type`` from context.device.type: ``mobile``/``phone`` -> mobile, ``tablet``, ``desktop``,
  ``bot`` as given; ``macos``/``windows``/``linux`` -> desktop; ``ios``/``android`` -> mobile
  unless tablet: an ``iPad`` model or name, ``tablet`` in the model, a user agent that says tablet,
  or (Android only, where context.screen carries ``density``) a shortest side of at least 600 dp,
  which is Android's own definition of a tablet. iOS screens are not used: SDKs disagree on points
  versus pixels. Any other device.type falls back to the user agent.
- From the user agent alone: ua-parser's ``Spider`` device -> bot; then tablet (iPad, ua-parser's
  Android-tablet and Kindle devices, ``Tablet`` in the UA, an Android browser UA without
  ``Mobile``); then mobile (iOS, Android, Windows Phone and similar systems, or ``Mobi`` in the UA);
  anything else, including HTTP libraries like curl and iPadOS in desktop mode (which sends a Mac
  UA), is desktop.
- ``resolution`` needs positive integer width and height (integral floats and digit strings
  accepted). ``ip_address`` must parse as an IPv4 or IPv6 address and is written as sent, trimmed.
- The user agent is parsed from its first 512 characters (every token the parser reads comes
  well before that in real ones; regexes on junk are a cost a sender must not impose on the shared
  workers) with ua-parser's Rust resolver (ua-parser[regex]), and the last UA_CACHE_SIZE parses are
  kept per worker process (a bounded LRU). `python -m bench.useragents` measures it: a batch of
  100 calls with new 1,000-character agents cost 0.87-0.97 s of worker CPU with the pure-Python
  resolver and 1,000 characters, 0.05-0.06 s now (one known agent: 0.013-0.015 s).
- Client hints (context.userAgentData from analytics.js, context['ua-ch'] from
  RudderStack) give os, device model and mobile/tablet/desktop ahead of the user agent; Chrome's
  reduced Android agent (`Android 10; K`) never gives a device name nor its frozen OS version.
  Native apps (a mobile or TV library, or context.app from a non-browser library) take os and
  device only from context.os and context.device: no browser, no parse of Dalvik or CFNetwork.
  Android's device.name is a codename, so its device.model is the device name there. tv and
  wearable come from device.type (tvos, watchos), os.name (tvOS, watchOS, Wear OS), a device model
  (BRAVIA, SHIELD, AFT..., Pixel Watch, SM-R...) or a browser agent (SMART-TV, Web0S, CrKey...).
  `unknown`, `undefined`, `null` and `none` as a user agent are no user agent.
"""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache
from typing import Any, NamedTuple

from ua_parser import parse as ua_parse

from shared.ids import normalize_id
from workers.coerce import IGNORED, clears, coerce

__all__ = ["map_company_traits", "map_context", "map_user_traits", "parse_user_agent"]

_USER_CONSUMED = frozenset(
    {
        "email",
        "first_name",
        "firstName",
        "last_name",
        "lastName",
        "name",
        "phone",
        "gender",
        "address",
    }
)
_COMPANY_CONSUMED = frozenset({"name", "description", "email", "employees", "phone", "address"})
_CONTEXT_KINDS = frozenset({"identify", "page", "screen"})

_MALE = frozenset({"m", "male", "man", "2"})
_FEMALE = frozenset({"f", "female", "woman", "3"})
_UNKNOWN = frozenset({"unknown", "1"})
_GENDER_CODES = {1: "unknown", 2: "male", 3: "female"}

UA_PARSE_LIMIT = 512
UA_CACHE_SIZE = 4096
# Android's own rule: a screen whose shortest side is 600 dp or more is a tablet layout.
_ANDROID_TABLET_DP = 600

_MOBILE_OS = frozenset(
    {"iOS", "Android", "Windows Phone", "Windows Mobile", "BlackBerry OS", "KaiOS", "Firefox OS"}
    | {"Symbian OS", "Symbian^3", "webOS", "Sailfish", "HarmonyOS"}
)
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
# TVs and watches, from a device model or name, or a browser's user agent.
_TV_NAME = re.compile(
    r"\btv\b|smart-?tv|googletv|appletv|apple tv|bravia|shield|chromecast|\bcrkey\b|hbbtv"
    r"|web0s|netcast|\baft[a-z]{1,4}\b",
    re.IGNORECASE,
)
_WEARABLE_NAME = re.compile(r"\bwatch|wear ?os|\bgear s\d|\bsm-r\d{3}", re.IGNORECASE)
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
# Chrome's reduced user agent on Android: every device is "K" on "Android 10".
_REDUCED_ANDROID = re.compile(r"\(Linux; Android 10; K\)")
_MOBILE_UA = re.compile(r"mobi", re.IGNORECASE)
_TABLET_UA = re.compile(r"tablet", re.IGNORECASE)
_ANDROID_UA = re.compile(r"android", re.IGNORECASE)


# Trait mapping


def _text(value: Any) -> Any:
    """A standard string field's value: str, None to clear, or IGNORED for objects and arrays."""
    if clears(value):
        return None
    if isinstance(value, str):
        text = value.replace("\x00", "").strip()
        return text or None
    if isinstance(value, bool | int | float):
        return coerce(value, "string")
    return IGNORED


def _first_text(source: dict[str, Any], *keys: str) -> Any:
    """The first usable text under `keys`; None if only nulls/blanks are there; else IGNORED."""
    result: Any = IGNORED
    for key in keys:
        if key not in source:
            continue
        value = _text(source[key])
        if isinstance(value, str):
            return value
        if value is None:
            result = None
    return result


def _put(fields: dict[str, Any], key: str, value: Any) -> None:
    if value is not IGNORED:
        fields[key] = value


def _gender(value: Any) -> Any:
    """male, female or unknown; None for null; IGNORED for anything else."""
    if value is None:
        return None
    if isinstance(value, bool):
        return IGNORED
    if isinstance(value, float):
        if not value.is_integer():
            return IGNORED
        value = int(value)
    if isinstance(value, int):
        return _GENDER_CODES.get(value, IGNORED)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _MALE:
            return "male"
        if text in _FEMALE:
            return "female"
        if text in _UNKNOWN:
            return "unknown"
    return IGNORED


def _address(fields: dict[str, Any], traits: dict[str, Any]) -> None:
    if "address" not in traits:
        return
    address = traits["address"]
    if address is None:
        fields.update(country=None, region=None, city=None)
    elif isinstance(address, dict):
        _put(fields, "country", _first_text(address, "country"))
        _put(fields, "region", _first_text(address, "state", "region"))
        _put(fields, "city", _first_text(address, "city"))


IDENTITY_TRAITS = ("userId", "anonymousId")
"""Trait keys that restate the call's ids (classic analytics-android puts both in every identify's
traits); never attributes. `id` is one too where it equals the call's userId."""


def identify_traits(call: dict[str, Any], user_id: str | None) -> dict[str, Any]:
    """The traits of an identify: `traits` merged over `context.traits` (RudderStack's
    SDKs send identify traits only there; classic analytics-android sends both), without the keys
    that only restate the call's identity."""
    own, context = call.get("traits"), call.get("context")
    base = context.get("traits") if isinstance(context, dict) else None
    traits = {**(base if isinstance(base, dict) else {}), **(own if isinstance(own, dict) else {})}
    for key in IDENTITY_TRAITS:
        traits.pop(key, None)
    if "id" in traits and user_id is not None and normalize_id(traits["id"]) == user_id:
        del traits["id"]
    return traits


def map_user_traits(traits: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(standard profile fields, custom attributes) from identify traits."""
    if not isinstance(traits, dict):
        return {}, {}
    fields: dict[str, Any] = {}
    _put(fields, "email", _first_text(traits, "email"))

    first = _first_text(traits, "first_name", "firstName")
    last = _first_text(traits, "last_name", "lastName")
    if not isinstance(first, str) and not isinstance(last, str) and "name" in traits:
        name = _text(traits["name"])
        if isinstance(name, str):
            first, *rest = name.split()
            if rest:
                last = " ".join(rest)
        elif name is None:
            first = last = None
    _put(fields, "first_name", first)
    _put(fields, "last_name", last)

    _put(fields, "phone", _first_text(traits, "phone"))
    if "gender" in traits:
        _put(fields, "gender", _gender(traits["gender"]))
    _address(fields, traits)

    custom = {key: value for key, value in traits.items() if key not in _USER_CONSUMED}
    return fields, custom


def map_company_traits(traits: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(standard company fields, custom company attributes) from group traits."""
    if not isinstance(traits, dict):
        return {}, {}
    fields: dict[str, Any] = {}
    for key in ("name", "description", "email", "phone"):
        _put(fields, key, _first_text(traits, key))
    if "employees" in traits:
        employees = coerce(traits["employees"], "integer")
        if employees is None or (employees is not IGNORED and employees >= 0):
            fields["employees"] = employees
    _address(fields, traits)
    custom = {key: value for key, value in traits.items() if key not in _COMPANY_CONSUMED}
    return fields, custom


# Context mapping


class ParsedAgent(NamedTuple):
    """What a user agent string says; None where it says nothing."""

    browser_family: str | None
    browser_version: str | None
    os: str | None
    device_name: str | None
    device_type: str
    tablet: bool
    reduced: bool = False
    """Chrome's reduced user agent (`Android 10; K`): its device and OS version say nothing."""


def _version(*parts: str | None) -> str | None:
    """Dotted version from the parts up to the first missing one."""
    kept: list[str] = []
    for part in parts:
        if not part:
            break
        kept.append(part)
    return ".".join(kept) or None


@lru_cache(maxsize=UA_CACHE_SIZE)
def _parse_agent(ua: str) -> ParsedAgent:
    result = ua_parse(ua)
    agent, os_, device = result.user_agent, result.os, result.device

    browser_family = browser_version = None
    if agent is not None and agent.family != "Other":
        browser_family = agent.family
        browser_version = _version(agent.major, agent.minor, agent.patch, agent.patch_minor)

    os_family = os_.family if os_ is not None and os_.family != "Other" else None
    os_text = None
    if os_ is not None and os_family is not None:
        version = _version(os_.major, os_.minor, os_.patch, os_.patch_minor)
        os_text = f"{os_family} {version}" if version else os_family

    device_family = device.family if device is not None else "Other"
    device_name = None
    if device_family not in ("Other", "Spider") and not device_family.startswith("Generic"):
        device_name = device_family

    brand = device.brand if device is not None else None
    tablet = (
        device_family.startswith(("iPad", "Kindle", "Generic Tablet"))
        or brand == "Generic_Android_Tablet"
        or bool(_TABLET_UA.search(ua))
        # Google's guidance: Android browsers send "Mobile" on phones and leave it out on tablets.
        # Only browser UAs follow it; Dalvik and okhttp leave it out on phones too.
        or (
            ua.startswith("Mozilla/") and bool(_ANDROID_UA.search(ua)) and not _MOBILE_UA.search(ua)
        )
    )
    reduced = bool(_REDUCED_ANDROID.search(ua))
    if reduced:
        device_name = None
        os_text = os_family
    special = _device_kind(ua)
    if device_family == "Spider":
        device_type = "bot"
    elif special is not None:
        device_type = special
    elif tablet:
        device_type = "tablet"
    elif (
        os_family in _MOBILE_OS
        or device_family in ("iPhone", "iPod", "Generic Smartphone")
        or bool(_MOBILE_UA.search(ua))
    ):
        device_type = "mobile"
    else:
        device_type = "desktop"
    return ParsedAgent(
        browser_family, browser_version, os_text, device_name, device_type, tablet, reduced
    )


def parse_user_agent(ua: str) -> ParsedAgent:
    """The browser, os and device a user agent string names (cached per process)."""
    return _parse_agent(ua[:UA_PARSE_LIMIT])


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


def _device_kind(text: str | None) -> str | None:
    """tv or wearable where a device model, name or OS name says so (Android TV and Wear OS send
    device.type `android` like a phone; only the model tells)."""
    if text is None:
        return None
    if _TV_NAME.search(text):
        return "tv"
    if _WEARABLE_NAME.search(text):
        return "wearable"
    return None


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
    special = by_os if by_os in ("tv", "wearable") else _device_kind(names)
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
    if ua is not None and (tv_or_watch := _device_kind(ua)) is not None:
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
