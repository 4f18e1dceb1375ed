"""What a user agent string says: browser, os version, device name and type; cached per process.

The rules (what makes a tablet, a TV, a bot) and what parsing costs are in docs/workers.md
("Context and user agents") and docs/bench.md (`python -m bench.useragents`).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import NamedTuple

from ua_parser import parse as ua_parse

__all__ = ["ParsedAgent", "device_kind", "parse_user_agent"]

UA_PARSE_LIMIT = 512
"""Characters of a user agent parsed: every token the parser reads comes well before this in real
agents, and regexes run over a sender's junk are a cost the shared workers must not carry."""
UA_CACHE_SIZE = 4096
"""Parses kept per worker process (a bounded LRU)."""
_MOBILE_OS = frozenset(
    {"iOS", "Android", "Windows Phone", "Windows Mobile", "BlackBerry OS", "KaiOS", "Firefox OS"}
    | {"Symbian OS", "Symbian^3", "webOS", "Sailfish", "HarmonyOS"}
)
# TVs and watches, from a device model or name, or a browser's user agent.
_TV_NAME = re.compile(
    r"\btv\b|smart-?tv|googletv|appletv|apple tv|bravia|shield|chromecast|\bcrkey\b|hbbtv"
    r"|web0s|netcast|\baft[a-z]{1,4}\b",
    re.IGNORECASE,
)
_WEARABLE_NAME = re.compile(r"\bwatch|wear ?os|\bgear s\d|\bsm-r\d{3}", re.IGNORECASE)
# Chrome's reduced user agent on Android: every device is "K" on "Android 10".
_REDUCED_ANDROID = re.compile(r"\(Linux; Android 10; K\)")
_MOBILE_UA = re.compile(r"mobi", re.IGNORECASE)
_TABLET_UA = re.compile(r"tablet", re.IGNORECASE)
_ANDROID_UA = re.compile(r"android", re.IGNORECASE)


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
    special = device_kind(ua)
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


def device_kind(text: str | None) -> str | None:
    """tv or wearable where a device model, name or OS name says so (Android TV and Wear OS send
    device.type `android` like a phone; only the model tells)."""
    if text is None:
        return None
    if _TV_NAME.search(text):
        return "tv"
    if _WEARABLE_NAME.search(text):
        return "wearable"
    return None
