"""User-agent parsing: what a string says, its parse bound and the per-process cache."""

from __future__ import annotations

from workers.useragents import UA_PARSE_LIMIT, ParsedAgent, device_kind, parse_user_agent

ANDROID_PHONE = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.6099.144 Mobile Safari/537.36"
)
REDUCED_ANDROID = (
    "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/121.0.0.0 Mobile Safari/537.36"
)


def test_android_phone() -> None:
    assert parse_user_agent(ANDROID_PHONE) == ParsedAgent(
        "Chrome Mobile", "120.0.6099.144", "Android 14", "Pixel 8", "mobile", tablet=False
    )


def test_reduced_agent_names_no_device_and_no_os_version() -> None:
    agent = parse_user_agent(REDUCED_ANDROID)
    assert (agent.device_name, agent.os, agent.reduced) == (None, "Android", True)


def test_only_the_start_is_parsed() -> None:
    # A tablet token past the bound is never read: junk cannot change (or slow) the parse.
    padded = ANDROID_PHONE.ljust(UA_PARSE_LIMIT, " ")
    assert parse_user_agent(padded + " Tablet").device_type == "mobile"
    assert parse_user_agent(ANDROID_PHONE + " Tablet").device_type == "tablet"


def test_parse_is_cached() -> None:
    first = parse_user_agent(ANDROID_PHONE)
    assert parse_user_agent(ANDROID_PHONE) is first


def test_device_kind_from_a_model_name() -> None:
    assert [device_kind(name) for name in ("BRAVIA 4K", "Pixel Watch 2", "Pixel 8", None)] == [
        "tv",
        "wearable",
        None,
        None,
    ]
