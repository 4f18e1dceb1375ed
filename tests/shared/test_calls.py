"""The call contract: JSON parsing, depth, the checks of one call and of a batch envelope."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared import timeparse
from shared.calls import (
    Refusal,
    check_batch,
    check_call,
    check_calls,
    check_depth,
    parse_json,
    routed_away,
    too_deep,
    usable_message_id,
)
from shared.ids import normalize_id


def codes(call: Any, fixed: str | None = None) -> list[str]:
    return [e["code"] for e in check_call(call, fixed)]


def status_code(fn: Any, *args: Any) -> tuple[int, str]:
    with pytest.raises(Refusal) as refused:
        fn(*args)
    return refused.value.status, refused.value.code


# --- JSON ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [b"", b"  \n", b"{", b"\xef\xbb\xbf{}", b'{"a": Infinity}', b'{"a": "\\ud800"}', b"1e400"],
)
def test_parse_json_refuses_what_is_not_json(raw):
    assert status_code(parse_json, raw) == (400, "invalid_json")


def test_parse_json_takes_any_json_document():
    assert parse_json(b' {"a": [1, 2.5, null, true]} ') == {"a": [1, 2.5, None, True]}
    assert parse_json(b"[]") == []


def chain(levels: int, kind: str = "dict") -> Any:
    value: Any = {} if kind == "dict" else []
    for _ in range(levels - 1):
        value = {"k": value} if kind == "dict" else [value]
    return value


@pytest.mark.parametrize("kind", ["dict", "list"])
def test_depth_counts_levels(kind):
    assert not too_deep(chain(64, kind), 64)
    assert too_deep(chain(65, kind), 64)
    for levels in (64, 65):
        document = chain(levels, kind)
        raw = json.dumps(document).encode()
        if levels == 64:
            check_depth(document, raw, 64)
        else:
            assert status_code(check_depth, document, raw, 64) == (400, "too_deep")


def test_depth_looks_at_every_branch():
    wide = {"a": chain(3), "b": [1, "x", {"c": chain(70)}], "d": 5}
    assert too_deep(wide, 64)
    assert not too_deep({"a": chain(3), "b": [1, "x"]}, 64)
    check_depth("scalar", b'"scalar"', 64)
    check_depth(None, b"null", 1)


def test_brackets_inside_strings_do_not_make_a_body_deep():
    document = {"a": "[[[[{{{{" * 20, "b": {"c": {}}}
    check_depth(document, json.dumps(document).encode(), 3)
    assert status_code(check_depth, document, json.dumps(document).encode(), 2)[0] == 400


# --- calls ---------------------------------------------------------------------------------------


def test_a_call_must_be_an_object():
    for value in ("x", 1, None, [], True):
        assert codes(value) == ["not_an_object"]


def test_the_endpoint_type_stands_for_a_missing_or_null_one():
    assert codes({"event": "e", "userId": "u"}, "track") == []
    assert codes({"type": None, "event": "e", "userId": "u"}, "track") == []
    assert codes({"type": "page", "event": "e", "userId": "u"}, "track") == ["type_mismatch"]
    assert codes({"type": "Track", "event": "e", "userId": "u"}, "track") == ["type_mismatch"]


def test_a_batch_call_names_a_known_type():
    assert codes({"userId": "u"}) == ["missing_type"]
    assert codes({"type": None, "userId": "u"}) == ["missing_type"]
    assert codes({"type": "Track", "userId": "u"}) == ["unknown_type"]
    assert codes({"type": ["track"], "userId": "u"}) == ["unknown_type"]
    assert codes({"type": "screen", "userId": "u"}) == []


def test_the_type_decides_which_fields_are_required():
    assert codes({"type": "track", "userId": "u"}) == ["missing_event"]
    assert codes({"type": "group", "userId": "u"}) == ["missing_group_id"]
    assert codes({"type": "alias", "userId": "u"}) == ["missing_previous_id"]
    assert codes({"type": "alias", "previousId": "p"}) == ["missing_user_id"]
    assert codes({"type": "identify", "userId": "u", "event": 5, "groupId": None}) == []


def test_usable_message_id():
    assert usable_message_id({"messageId": "m"}) == "m"
    assert usable_message_id({"messageId": " m "}) == " m "  # kept as sent
    for value in ("", "  ", None, 5):
        assert usable_message_id({"messageId": value}) is None
    assert usable_message_id({}) is None


def test_check_batch_returns_calls_defaults_and_sent_at():
    calls, defaults, sent_at = check_batch(
        {"batch": [1], "context": {"a": 1}, "integrations": None, "sentAt": "2026-11-28T00:00:00Z"},
        10,
    )
    assert calls == [1]
    assert defaults == {"context": {"a": 1}}
    assert sent_at == "2026-11-28T00:00:00Z"
    assert status_code(check_batch, {"batch": [1] * 11}, 10) == (400, "payload_too_large")


# --- ids, routing, per-call domains --------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('"7e1b2c3d-aaaa"', "7e1b2c3d-aaaa"),  # analytics.js's cookie read raw
        (' "u-1" ', "u-1"),
        ('""', None),
        ('"null"', None),
        ('"anonymous"', None),
        ('""x""', '"x"'),  # one pair only
        ("'single'", "'single'"),
        ('"half', '"half'),
    ],
)
def test_an_id_in_one_pair_of_double_quotes_is_the_id_without_them(value, expected):
    assert normalize_id(value) == expected


ROUTING = [
    # integrations, routed away?
    (None, False),
    ({}, False),
    ({"All": True}, False),
    ({"All": False}, True),
    ({"All": False, "UserEngage": True}, False),  # Engage's audience syncs
    ({"All": False, "User.com": True}, False),
    ({"All": False, "user.com": {"some": "option"}}, False),
    ({"User.com": False}, True),
    ({"USERENGAGE": False, "All": True}, True),
    ({"All": False, "Mixpanel": True}, True),
    ({"Mixpanel": False}, False),
    ({"All": "false"}, False),  # only JSON false turns a destination off
    ("not an object", False),
]


@pytest.mark.parametrize(("integrations", "away"), ROUTING)
def test_integrations_routing(integrations, away):
    assert routed_away({"type": "track", "integrations": integrations}) is away


def page(url: str | None) -> dict[str, Any]:
    return {"type": "page", "userId": "u", "context": {"page": {"url": url}}}


def test_check_calls_decides_each_call_by_its_page_where_domains_are_given():
    calls = [page("https://shop.example.com/"), page(None), page("https://evil.net/")]
    checked = check_calls(calls, None, None, ("shop.example.com",), {})
    assert len(checked.accepted) == 2
    assert [(r["index"], r["errors"][0]["code"]) for r in checked.rejected] == [
        (2, "untrusted_domain")
    ]
    # the batch's own context.page.url stands for calls without one
    checked = check_calls(
        [page(None)],
        None,
        None,
        ("shop.example.com",),
        {"context": page("https://evil.net/")["context"]},
    )
    assert checked.rejected
    # without domains (an Origin decided, or a replay): no page is looked at
    assert not check_calls(calls, None, None).rejected


def test_parse_json_keeps_integer_ids_beyond_64_bits_exact():
    raw = b'{"batch":[{"userId":123456789012345678901,"groupId":-99999999999999999999999}]}'
    body = parse_json(raw)
    assert body["batch"][0] == {
        "userId": "123456789012345678901",
        "groupId": "-99999999999999999999999",
    }
    assert parse_json(b'[{"previousId": 123456789012345678901}]') == [
        {"previousId": "123456789012345678901"}
    ]
    assert parse_json(b'{"userId": 1.5}') == {"userId": 1.5}  # left for check_call to refuse
    assert codes({"type": "track", "event": "e", "userId": 1.5}) == ["inexact_id"]
    assert codes({"type": "track", "event": "e", "userId": 7.0}) == []


@given(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)))
def test_the_canonical_time_parses_as_the_general_path_parses_it(moment: datetime) -> None:
    written = moment.isoformat(timespec="milliseconds") + "Z"
    assert timeparse.parse_iso(written) == timeparse._parse_general(written)
    assert timeparse.parse_iso(written.replace("T", " ")) == timeparse._parse_general(written)
    python = moment.isoformat(timespec="microseconds") + "+00:00"  # analytics-python's shape
    assert timeparse.parse_iso(python) == timeparse._parse_general(python)
    assert timeparse.parse_iso(written[:-1] + "+00:00") == timeparse._parse_general(written)


@pytest.mark.parametrize(
    "value",
    ["2026-11-28T09:15:01.031Z", "2026-11-28t09:15:01.031z", "2026-13-28T09:15:01.031Z",
     "2026-11-28X09:15:01.031Z", "2026-11-28T09:15:01,031Z", "2026-11-28T09:15:0x.031Z",
     "\uff12\uff10\uff12\uff16-11-28T09:15:01.031Z", "2026-02-30T09:15:01.031Z",
     "2026-11-28T09:15:01.031123+00:00", "2026-11-28T09:15:01.031+00:00",
     "2026-11-28T09:15:01.031123-00:00", "2026-11-28T09:15:01.0311+00:00",
     "2026-11-28T09:15:01.03112x+00:00", "2026-11-28T09:15:01+00:00:00",
     "2026-11-28T09:15:01.031123+00:00 ", "2026-02-30T09:15:01.031123+00:00",
     "2026-11-28 09:15:01.031123+00:00", "2026-11-28T09:15:01.0311235+00:00"],
)  # fmt: skip
def test_the_fast_path_agrees_with_the_general_one_on_odd_strings(value: str) -> None:
    assert timeparse.parse_iso(value) == timeparse._parse_general(value)
