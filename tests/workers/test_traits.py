"""Identify and group traits to profile and company fields and custom attributes."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.fixtures import fixture
from workers.traits import map_company_traits, map_user_traits

# User traits: (traits, standard fields, custom attributes)

USER_TRAITS: list[Any] = [
    pytest.param(
        {"email": "a@example.com", "first_name": "Zofia", "last_name": "Nowak"},
        {"email": "a@example.com", "first_name": "Zofia", "last_name": "Nowak"},
        {},
        id="snake-case-names",
    ),
    pytest.param(
        {"firstName": "Zofia", "lastName": "Nowak"},
        {"first_name": "Zofia", "last_name": "Nowak"},
        {},
        id="camel-case-names",
    ),
    pytest.param(
        {"first_name": "Anna", "firstName": "Zofia"},
        {"first_name": "Anna"},
        {},
        id="snake-case-wins-over-camel",
    ),
    pytest.param(
        {"first_name": {"x": 1}, "firstName": "Zofia"},
        {"first_name": "Zofia"},
        {"first_name": {"x": 1}},
        id="object-in-one-spelling-does-not-hide-the-other-and-is-kept",
    ),
    pytest.param(
        {"first_name": None, "firstName": "Zofia"},
        {"first_name": "Zofia"},
        {},
        id="null-in-one-spelling-value-in-other",
    ),
    pytest.param(
        {"name": "Zofia Anna Nowak"},
        {"first_name": "Zofia", "last_name": "Anna Nowak"},
        {},
        id="name-splits-first-and-rest",
    ),
    pytest.param(
        {"name": "  Zofia \t Anna   Nowak "},
        {"first_name": "Zofia", "last_name": "Anna Nowak"},
        {},
        id="name-split-collapses-blanks",
    ),
    pytest.param({"name": "Cher"}, {"first_name": "Cher"}, {}, id="name-single-word-first-only"),
    pytest.param(
        {"name": "Cher", "lastName": None},
        {"first_name": "Cher", "last_name": None},
        {},
        id="name-single-word-explicit-null-last",
    ),
    pytest.param(
        {"name": "Zofia Nowak", "firstName": "Anna"},
        {"first_name": "Anna"},
        {},
        id="name-unused-when-first-given",
    ),
    pytest.param(
        {"name": "Zofia Nowak", "last_name": "Kowalska"},
        {"last_name": "Kowalska"},
        {},
        id="name-unused-when-last-given",
    ),
    pytest.param(
        {"name": "Zofia Nowak", "firstName": None, "lastName": None},
        {"first_name": "Zofia", "last_name": "Nowak"},
        {},
        id="name-used-when-first-and-last-null",
    ),
    pytest.param(
        {"name": None}, {"first_name": None, "last_name": None}, {}, id="name-null-clears-both"
    ),
    pytest.param(
        {"name": {"first": "Zofia", "last": "Nowak", "title": "Dr"}},
        {"first_name": "Zofia", "last_name": "Nowak"},
        {"name": {"first": "Zofia", "last": "Nowak", "title": "Dr"}},
        id="name-object-mapped-and-kept",
    ),
    pytest.param(
        {"name": {"given_name": "Zofia", "family_name": "Nowak"}},
        {"first_name": "Zofia", "last_name": "Nowak"},
        {"name": {"given_name": "Zofia", "family_name": "Nowak"}},
        id="name-object-openid-claims",
    ),
    pytest.param(
        {"name": {"display": "Z"}, "first_name": None},
        {"first_name": None},
        {"name": {"display": "Z"}},
        id="name-object-without-parts-kept",
    ),
    pytest.param(
        {"email": None, "phone": None, "firstName": None},
        {"email": None, "phone": None, "first_name": None},
        {},
        id="nulls-clear",
    ),
    pytest.param({"email": "   "}, {"email": None}, {}, id="blank-clears"),
    pytest.param({"email": " a@example.com "}, {"email": "a@example.com"}, {}, id="trimmed"),
    pytest.param({"phone": 48600100200}, {"phone": "48600100200"}, {}, id="number-to-string"),
    pytest.param({"first_name": True}, {"first_name": "true"}, {}, id="boolean-to-string"),
    pytest.param(
        {"email": ["a@example.com"]},
        {},
        {"email": ["a@example.com"]},
        id="array-where-string-expected-kept-as-custom",
    ),
    pytest.param(
        {"phone": {"mobile": "1"}},
        {},
        {"phone": {"mobile": "1"}},
        id="object-where-string-expected-kept-as-custom",
    ),
    pytest.param(
        {"address": {"country": "Poland", "state": "Mazowieckie", "city": "Warszawa"}},
        {"country": "Poland", "region": "Mazowieckie", "city": "Warszawa"},
        {},
        id="address-state",
    ),
    pytest.param(
        {"address": {"country": "Poland", "region": "Mazowieckie"}},
        {"country": "Poland", "region": "Mazowieckie"},
        {},
        id="address-region",
    ),
    pytest.param(
        {"address": {"state": "TX", "region": "South"}},
        {"region": "TX"},
        {},
        id="address-state-before-region",
    ),
    pytest.param(
        {"address": {"state": None, "region": "South"}},
        {"region": "South"},
        {},
        id="address-null-state-then-region",
    ),
    pytest.param(
        {"address": {"city": None, "street": "Marszalkowska 1", "postalCode": "00-001"}},
        {"city": None},
        {},
        id="address-null-city-clears-street-dropped",
    ),
    pytest.param(
        {"address": None},
        {"country": None, "region": None, "city": None},
        {},
        id="address-null-clears-all",
    ),
    pytest.param(
        {"address": "1 Main St, Austin"},
        {},
        {"address": "1 Main St, Austin"},
        id="address-string-kept-as-custom",
    ),
    pytest.param(
        {"address": [{"city": "Brussels", "country": "Belgium"}, {"city": "Kolkata"}]},
        {"country": "Belgium", "city": "Brussels"},
        {"address": [{"city": "Brussels", "country": "Belgium"}, {"city": "Kolkata"}]},
        id="address-list-first-mapped-list-kept",
    ),
    pytest.param(
        {"address": ["1 Main St"]}, {}, {"address": ["1 Main St"]}, id="address-list-of-text-kept"
    ),
    pytest.param(
        {"address": ""},
        {"country": None, "region": None, "city": None},
        {},
        id="address-blank-clears-all",
    ),
    pytest.param(
        {"createdAt": "2026-11-28T09:15:00Z", "plan": "trial", "id": 7, "logins": None},
        {},
        {"createdAt": "2026-11-28T09:15:00Z", "plan": "trial", "id": 7, "logins": None},
        id="custom-passthrough-unconverted",
    ),
    pytest.param(
        {"nested": {"a": [1, 2]}, "gender": "female"},
        {"gender": "female"},
        {"nested": {"a": [1, 2]}},
        id="custom-object-passthrough",
    ),
]


@pytest.mark.parametrize(("traits", "fields", "custom"), USER_TRAITS)
def test_map_user_traits(
    traits: dict[str, Any], fields: dict[str, Any], custom: dict[str, Any]
) -> None:
    assert map_user_traits(traits)[:2] == (fields, custom)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("m", "male", id="m"),
        pytest.param("M", "male", id="M"),
        pytest.param("male", "male", id="male"),
        pytest.param(" Male ", "male", id="male-blanks-case"),
        pytest.param("man", "male", id="man"),
        pytest.param("MAN", "male", id="MAN"),
        pytest.param("f", "female", id="f"),
        pytest.param("F", "female", id="F"),
        pytest.param("female", "female", id="female"),
        pytest.param("FEMALE", "female", id="FEMALE"),
        pytest.param("woman", "female", id="woman"),
        pytest.param("Woman ", "female", id="woman-case"),
        pytest.param("unknown", "unknown", id="unknown-round-trip"),
        pytest.param(1, "unknown", id="code-1"),
        pytest.param(2, "male", id="code-2"),
        pytest.param(3, "female", id="code-3"),
        pytest.param("1", "unknown", id="code-string-1"),
        pytest.param("2", "male", id="code-string-2"),
        pytest.param(" 3 ", "female", id="code-string-3"),
        pytest.param(2.0, "male", id="code-integral-float"),
        pytest.param(None, None, id="null-clears"),
        pytest.param(" ", None, id="blank-clears"),
    ],
)
def test_gender(value: Any, expected: str | None) -> None:
    assert map_user_traits({"gender": value}) == ({"gender": expected}, {}, [])


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("other", id="other"),
        pytest.param("x", id="x"),
        pytest.param(0, id="code-0"),
        pytest.param(4, id="code-4"),
        pytest.param(2.5, id="fraction"),
        pytest.param(True, id="boolean"),
        pytest.param("males", id="males"),
    ],
)
def test_gender_anything_else_is_not_written_and_counted(value: Any) -> None:
    assert map_user_traits({"gender": value}) == ({}, {}, ["gender"])


@pytest.mark.parametrize("value", [["male"], {"g": "f"}], ids=["array", "object"])
def test_gender_in_a_shape_no_field_takes_is_kept_as_custom(value: Any) -> None:
    assert map_user_traits({"gender": value}) == ({}, {"gender": value}, [])


CONSUMED = ["email", "first_name", "firstName", "last_name", "lastName", "name", "phone", "gender"]


@pytest.mark.parametrize("value", [None, "x", 5], ids=["null", "string", "int"])
def test_consumed_keys_in_a_shape_their_field_takes_are_never_custom(value: Any) -> None:
    traits = dict.fromkeys(CONSUMED, value)
    address = {"city": "Austin"}
    assert map_user_traits({**traits, "address": address, "plan": "pro"})[1] == {"plan": "pro"}


@pytest.mark.parametrize("value", [{"x": 1}, ["x"]], ids=["object", "array"])
def test_consumed_keys_in_a_shape_no_field_takes_are_kept_as_custom(value: Any) -> None:
    traits = dict.fromkeys(CONSUMED, value)
    assert map_user_traits({**traits, "plan": "pro"})[1] == {**traits, "plan": "pro"}


def test_browser_identify_fixture() -> None:
    fields, custom, _ = map_user_traits(fixture("browser-identify.json")["traits"])
    assert fields == {
        "email": "zofia@example.com",
        "first_name": "Zofia",
        "last_name": "Nowak",
        "phone": "+48 600 100 200",
        "gender": "female",
        "country": "Poland",
        "region": "Mazowieckie",
        "city": "Warszawa",
    }
    assert custom == {
        "createdAt": "2026-11-28T09:15:00Z",
        "plan": "trial",
        "logins": 1,
        "newsletter": True,
    }


def test_engage_audience_identify_fixture() -> None:
    fields, custom, _ = map_user_traits(fixture("engage-audience-identify.json")["traits"])
    assert fields == {"email": "zofia@example.com"}
    assert custom == {"order_completed_last_30days": True}


# Company traits


COMPANY_TRAITS: list[Any] = [
    pytest.param(
        {"name": "Initech", "description": "Banks", "email": "o@i.example", "phone": "+1 555"},
        {"name": "Initech", "description": "Banks", "email": "o@i.example", "phone": "+1 555"},
        {},
        id="strings",
    ),
    pytest.param({"employees": 329}, {"employees": 329}, {}, id="employees-int"),
    pytest.param({"employees": "329"}, {"employees": 329}, {}, id="employees-string"),
    pytest.param({"employees": " 1e3 "}, {"employees": 1000}, {}, id="employees-1e3"),
    pytest.param({"employees": 12.0}, {"employees": 12}, {}, id="employees-integral-float"),
    pytest.param({"employees": None}, {"employees": None}, {}, id="employees-null-clears"),
    pytest.param({"employees": 12.5}, {}, {}, id="employees-fraction-ignored"),
    pytest.param({"employees": "many"}, {}, {}, id="employees-word-ignored"),
    pytest.param({"employees": True}, {}, {}, id="employees-boolean-ignored"),
    pytest.param({"employees": -3}, {}, {}, id="employees-negative-ignored"),
    pytest.param({"employees": 2**63}, {}, {}, id="employees-over-64-bits-ignored"),
    pytest.param(
        {"address": {"country": "USA", "state": "TX", "city": "Austin"}},
        {"country": "USA", "region": "TX", "city": "Austin"},
        {},
        id="address",
    ),
    pytest.param(
        {"address": None},
        {"country": None, "region": None, "city": None},
        {},
        id="address-null",
    ),
    pytest.param(
        {"name": None, "firstName": "x", "gender": "f", "website": "https://i.example"},
        {"name": None},
        {"firstName": "x", "gender": "f", "website": "https://i.example"},
        id="user-fields-are-company-custom",
    ),
    pytest.param({"name": 42}, {"name": "42"}, {}, id="number-to-string"),
    pytest.param({"name": ["Initech"]}, {}, {"name": ["Initech"]}, id="array-kept-as-custom"),
    pytest.param(
        {"address": "Hauptstr. 1, Berlin"},
        {},
        {"address": "Hauptstr. 1, Berlin"},
        id="address-string-kept-as-custom",
    ),
]


@pytest.mark.parametrize(("traits", "fields", "custom"), COMPANY_TRAITS)
def test_map_company_traits(
    traits: dict[str, Any], fields: dict[str, Any], custom: dict[str, Any]
) -> None:
    assert map_company_traits(traits)[:2] == (fields, custom)


def test_group_fixture() -> None:
    fields, custom, _ = map_company_traits(fixture("group.json")["traits"])
    assert fields == {
        "name": "Initech",
        "description": "Software for banks",
        "email": "office@initech.example",
        "phone": "+1 555 0100",
        "employees": 329,
        "country": "USA",
        "region": "TX",
        "city": "Austin",
    }
    assert custom == {
        "industry": "Technology",
        "plan": "enterprise",
        "website": "https://initech.example",
        "createdAt": "2019-03-01T00:00:00Z",
    }
