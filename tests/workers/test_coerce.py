"""Attribute coercion, cell by cell of the type table (docs/contract.md, attribute types)."""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.attributes import TYPES, normalize_type
from workers.coerce import IGNORED, STRING_MAX, clears, coerce, coerce_noting, number_text

I64_MAX = 2**63 - 1
I64_MIN = -(2**63)

# (value, type, expected); one row per example of a type's conversions.
CASES: list[Any] = [
    # string: converts any scalar, ignores nothing
    pytest.param("plain", "string", "plain", id="string-str"),
    pytest.param("  spaced  ", "string", "  spaced  ", id="string-keeps-blanks"),
    pytest.param("", "string", "", id="string-empty"),
    pytest.param(True, "string", "true", id="string-true"),
    pytest.param(False, "string", "false", id="string-false"),
    pytest.param(999, "string", "999", id="string-int-999"),
    pytest.param(-42, "string", "-42", id="string-negative-int"),
    pytest.param(1.0, "string", "1", id="string-integral-float"),
    pytest.param(12.5, "string", "12.5", id="string-fraction"),
    pytest.param(0.1, "string", "0.1", id="string-0.1"),
    pytest.param(-0.0, "string", "0", id="string-negative-zero"),
    pytest.param(1e21, "string", "1e+21", id="string-1e21-exponent"),
    pytest.param(1e20, "string", "100000000000000000000", id="string-1e20-digits"),
    pytest.param(1.5e-7, "string", "1.5e-7", id="string-small-exponent"),
    pytest.param(0.000001, "string", "0.000001", id="string-1e-6-digits"),
    pytest.param(2**64 - 1, "string", "18446744073709551615", id="string-u64-exact"),
    pytest.param({"a": 1, "b": [True, None]}, "string", '{"a":1,"b":[true,null]}', id="string-obj"),
    pytest.param([1, "x"], "string", '[1,"x"]', id="string-array"),
    pytest.param({"z": 1, "a": 2}, "string", '{"z":1,"a":2}', id="string-obj-key-order-kept"),
    pytest.param({"ł": "ż"}, "string", '{"ł":"ż"}', id="string-obj-unicode-unescaped"),
    pytest.param(
        {"big": 2**70}, "string", '{"big":1180591620717411303424}', id="string-obj-bigint"
    ),
    pytest.param("a\x00b", "string", "ab", id="string-nul-dropped"),
    pytest.param("x" * 300, "string", "x" * 255, id="string-cut-255"),
    pytest.param("ż" * 256, "string", "ż" * 255, id="string-cut-counts-characters"),
    pytest.param(["y" * 300], "string", IGNORED, id="string-json-too-long-is-refused-not-cut"),
    pytest.param(["y" * 251], "string", '["' + "y" * 251 + '"]', id="string-json-255-kept"),
    # integer
    pytest.param(123, "integer", 123, id="integer-int"),
    pytest.param(0, "integer", 0, id="integer-zero"),
    pytest.param(12.0, "integer", 12, id="integer-integral-float"),
    pytest.param(-3.0, "integer", -3, id="integer-negative-integral-float"),
    pytest.param("123", "integer", 123, id="integer-string"),
    pytest.param(" 42 ", "integer", 42, id="integer-string-blanks"),
    pytest.param("1e3", "integer", 1000, id="integer-string-1e3"),
    pytest.param("12.0", "integer", 12, id="integer-string-integral-fraction"),
    pytest.param("1.5e3", "integer", 1500, id="integer-string-1.5e3"),
    pytest.param("+7", "integer", 7, id="integer-string-plus"),
    pytest.param("-0", "integer", 0, id="integer-string-minus-zero"),
    pytest.param(I64_MAX, "integer", I64_MAX, id="integer-max"),
    pytest.param(I64_MIN, "integer", I64_MIN, id="integer-min"),
    pytest.param(str(I64_MAX), "integer", I64_MAX, id="integer-string-max"),
    pytest.param(str(I64_MIN), "integer", I64_MIN, id="integer-string-min"),
    pytest.param("9.2233720368547758e18", "integer", 9223372036854775800, id="integer-str-exp"),
    pytest.param(I64_MAX + 1, "integer", IGNORED, id="integer-over-max"),
    pytest.param(I64_MIN - 1, "integer", IGNORED, id="integer-under-min"),
    pytest.param(str(I64_MAX + 1), "integer", IGNORED, id="integer-string-over-max"),
    pytest.param(str(I64_MIN - 1), "integer", IGNORED, id="integer-string-under-min"),
    pytest.param(2.0**63, "integer", IGNORED, id="integer-float-2^63"),
    pytest.param(1e300, "integer", IGNORED, id="integer-float-huge"),
    pytest.param("1e99999999999999999999", "integer", IGNORED, id="integer-string-giant-exponent"),
    pytest.param(True, "integer", IGNORED, id="integer-ignores-true"),
    pytest.param(False, "integer", IGNORED, id="integer-ignores-false"),
    pytest.param(12.5, "integer", IGNORED, id="integer-ignores-fraction"),
    pytest.param("12.5", "integer", IGNORED, id="integer-ignores-string-fraction"),
    pytest.param("abc", "integer", IGNORED, id="integer-ignores-word"),
    pytest.param("", "integer", IGNORED, id="integer-ignores-empty"),
    pytest.param("1,000", "integer", IGNORED, id="integer-ignores-thousands-comma"),
    pytest.param("1_000", "integer", IGNORED, id="integer-ignores-underscore"),
    pytest.param("٤٢", "integer", IGNORED, id="integer-ignores-non-ascii-digits"),
    pytest.param("0x1F", "integer", IGNORED, id="integer-ignores-hex"),
    pytest.param({"n": 1}, "integer", IGNORED, id="integer-ignores-object"),
    pytest.param([1], "integer", IGNORED, id="integer-ignores-array"),
    pytest.param(math.nan, "integer", IGNORED, id="integer-ignores-nan"),
    pytest.param(math.inf, "integer", IGNORED, id="integer-ignores-inf"),
    # float
    pytest.param(3, "float", 3.0, id="float-int"),
    pytest.param(2.5, "float", 2.5, id="float-float"),
    pytest.param("27.50", "float", 27.5, id="float-string"),
    pytest.param(" -1e-3 ", "float", -0.001, id="float-string-exponent"),
    pytest.param(".5", "float", 0.5, id="float-string-leading-point"),
    pytest.param(2**64, "float", 1.8446744073709552e19, id="float-bigint"),
    pytest.param(True, "float", IGNORED, id="float-ignores-true"),
    pytest.param(False, "float", IGNORED, id="float-ignores-false"),
    pytest.param(math.nan, "float", IGNORED, id="float-ignores-nan"),
    pytest.param(math.inf, "float", IGNORED, id="float-ignores-inf"),
    pytest.param(-math.inf, "float", IGNORED, id="float-ignores-minus-inf"),
    pytest.param("NaN", "float", IGNORED, id="float-ignores-string-nan"),
    pytest.param("Infinity", "float", IGNORED, id="float-ignores-string-infinity"),
    pytest.param("1e400", "float", IGNORED, id="float-ignores-string-overflow"),
    pytest.param(10**400, "float", IGNORED, id="float-ignores-int-overflow"),
    pytest.param("twelve", "float", IGNORED, id="float-ignores-word"),
    pytest.param({"x": 1.0}, "float", IGNORED, id="float-ignores-object"),
    pytest.param([1.0], "float", IGNORED, id="float-ignores-array"),
    # boolean
    pytest.param(True, "boolean", True, id="boolean-true"),
    pytest.param(False, "boolean", False, id="boolean-false"),
    pytest.param(1, "boolean", True, id="boolean-1"),
    pytest.param(0, "boolean", False, id="boolean-0"),
    pytest.param(1.0, "boolean", True, id="boolean-1.0"),
    pytest.param("true", "boolean", True, id="boolean-string-true"),
    pytest.param("FALSE", "boolean", False, id="boolean-string-FALSE"),
    pytest.param(" Yes ", "boolean", True, id="boolean-string-yes"),
    pytest.param("nO", "boolean", False, id="boolean-string-no"),
    pytest.param("1", "boolean", True, id="boolean-string-1"),
    pytest.param("0", "boolean", False, id="boolean-string-0"),
    pytest.param(2, "boolean", IGNORED, id="boolean-ignores-2"),
    pytest.param(0.5, "boolean", IGNORED, id="boolean-ignores-0.5"),
    pytest.param("y", "boolean", IGNORED, id="boolean-ignores-y"),
    pytest.param("on", "boolean", IGNORED, id="boolean-ignores-on"),
    pytest.param("", "boolean", IGNORED, id="boolean-ignores-empty"),
    pytest.param({}, "boolean", IGNORED, id="boolean-ignores-object"),
    pytest.param([True], "boolean", IGNORED, id="boolean-ignores-array"),
    # date
    pytest.param("2026-11-28", "date", "2026-11-28", id="date-ymd"),
    pytest.param(" 2026-11-28 ", "date", "2026-11-28", id="date-ymd-blanks"),
    pytest.param("2026-11-28T09:15:00Z", "date", "2026-11-28", id="date-from-iso"),
    pytest.param("2026-11-28T23:30:00-05:00", "date", "2026-11-29", id="date-utc-date-of-offset"),
    pytest.param("2026-11-29T00:30:00+02:00", "date", "2026-11-28", id="date-utc-date-east"),
    pytest.param(1764320400, "date", "2025-11-28", id="date-unix-seconds"),
    pytest.param(1764320400000, "date", "2025-11-28", id="date-unix-ms"),
    pytest.param("1764320400", "date", "2025-11-28", id="date-numeric-string"),
    pytest.param("2026-02-30", "date", IGNORED, id="date-ignores-impossible-day"),
    pytest.param("28.11.2026", "date", IGNORED, id="date-ignores-european"),
    pytest.param("2026/11/28", "date", IGNORED, id="date-ignores-slashes"),
    pytest.param("yesterday", "date", IGNORED, id="date-ignores-word"),
    pytest.param(True, "date", IGNORED, id="date-ignores-boolean"),
    pytest.param({"d": "2026-11-28"}, "date", IGNORED, id="date-ignores-object"),
    pytest.param(["2026-11-28"], "date", IGNORED, id="date-ignores-array"),
    # datetime
    pytest.param("2026-11-28T09:15:00Z", "datetime", "2026-11-28T09:15:00.000Z", id="datetime-z"),
    pytest.param(
        "2026-11-28T09:15:00", "datetime", "2026-11-28T09:15:00.000Z", id="dt-no-offset-utc"
    ),
    pytest.param(
        "2026-11-28T10:15:00.123456+01:00", "datetime", "2026-11-28T09:15:00.123Z", id="dt-offset"
    ),
    pytest.param("2026-11-28", "datetime", "2026-11-28T00:00:00.000Z", id="datetime-date-only"),
    pytest.param(0, "datetime", "1970-01-01T00:00:00.000Z", id="datetime-epoch-zero"),
    pytest.param(1764321300, "datetime", "2025-11-28T09:15:00.000Z", id="datetime-unix-seconds"),
    pytest.param(
        1764321300.25, "datetime", "2025-11-28T09:15:00.250Z", id="datetime-unix-seconds-float"
    ),
    pytest.param(
        1764321300123, "datetime", "2025-11-28T09:15:00.123Z", id="datetime-unix-milliseconds"
    ),
    # 10^11 itself is seconds (year 5138); one more is milliseconds (1973).
    pytest.param(10**11, "datetime", "5138-11-16T09:46:40.000Z", id="datetime-10^11-is-seconds"),
    pytest.param(10**11 + 1, "datetime", "1973-03-03T09:46:40.001Z", id="datetime-above-is-ms"),
    pytest.param(-86400, "datetime", "1969-12-31T00:00:00.000Z", id="datetime-negative-seconds"),
    pytest.param("1764321300", "datetime", "2025-11-28T09:15:00.000Z", id="dt-numeric-string"),
    pytest.param("1764321300123", "datetime", "2025-11-28T09:15:00.123Z", id="dt-ms-string"),
    pytest.param(True, "datetime", IGNORED, id="datetime-ignores-boolean"),
    pytest.param("next tuesday", "datetime", IGNORED, id="datetime-ignores-word"),
    pytest.param("2026-11-28T25:00:00Z", "datetime", IGNORED, id="datetime-ignores-hour-25"),
    pytest.param("9999-12-31T23:00:00-05:00", "datetime", IGNORED, id="datetime-ignores-past-9999"),
    pytest.param("0001-01-01T00:00:00+01:00", "datetime", IGNORED, id="datetime-ignores-before-1"),
    pytest.param(10**20, "datetime", IGNORED, id="datetime-ignores-out-of-range-number"),
    pytest.param(math.inf, "datetime", IGNORED, id="datetime-ignores-inf"),
    pytest.param({"t": 1}, "datetime", IGNORED, id="datetime-ignores-object"),
    pytest.param([1764321300], "datetime", IGNORED, id="datetime-ignores-array"),
    # json: any value as is
    pytest.param({"a": [1, {"b": None}]}, "json", {"a": [1, {"b": None}]}, id="json-object"),
    pytest.param([1, "2"], "json", [1, "2"], id="json-array"),
    pytest.param("s", "json", "s", id="json-string"),
    pytest.param(1.5, "json", 1.5, id="json-number"),
    pytest.param(False, "json", False, id="json-false"),
    # number: integral values integral, as the reference shows "123" -> 123
    pytest.param("123", "number", 123, id="number-string-integral"),
    pytest.param(123, "number", 123, id="number-int"),
    pytest.param(123.0, "number", 123, id="number-integral-float"),
    pytest.param("1e3", "number", 1000, id="number-exponent-integral"),
    pytest.param(" 42 ", "number", 42, id="number-blanks"),
    pytest.param("12.5", "number", 12.5, id="number-fraction-string"),
    pytest.param(-0.25, "number", -0.25, id="number-fraction"),
    pytest.param(2**63, "number", 9.223372036854776e18, id="number-past-64-bits-float"),
    pytest.param(1e300, "number", 1e300, id="number-huge-float"),
    pytest.param(True, "number", IGNORED, id="number-ignores-boolean"),
    pytest.param("NaN", "number", IGNORED, id="number-ignores-nan"),
    pytest.param("abc", "number", IGNORED, id="number-ignores-word"),
    pytest.param({"n": 1}, "number", IGNORED, id="number-ignores-object"),
    pytest.param(123, "float", 123.0, id="float-stays-float"),
]


@pytest.mark.parametrize(("value", "type_", "expected"), CASES)
def test_coerce_table(value: Any, type_: str, expected: Any) -> None:
    result = coerce(value, type_)
    if expected is IGNORED:
        assert result is IGNORED
    else:
        assert result == expected
        # bool is an int in Python: 1 == True would hide a wrong type.
        assert type(result) is type(expected)


@pytest.mark.parametrize("value", [None, "", "   "])
def test_null_and_blank_strings_clear_profiles(value: Any) -> None:
    assert clears(value)


@pytest.mark.parametrize("value", [0, False, [], {}, "0", "x"])
def test_other_values_do_not_clear(value: Any) -> None:
    assert not clears(value)


@pytest.mark.parametrize("type_", TYPES)
def test_null_clears_every_type(type_: str) -> None:
    assert coerce(None, type_, choices=["a"]) is None
    assert coerce(None, type_, choices=["a"], multiple=True) is None


CHOICES = ["gold", "Silver", "2", 3, "a,b", True]

FIXED: list[Any] = [
    pytest.param("gold", False, "gold", id="single-exact"),
    pytest.param("silver", False, "Silver", id="single-case-insensitive-stores-choice"),
    pytest.param(" gold ", False, "gold", id="single-blanks"),
    pytest.param(2, False, "2", id="single-number-matches-string-choice"),
    pytest.param(2.0, False, "2", id="single-integral-float-matches"),
    pytest.param("3", False, 3, id="single-string-matches-number-choice"),
    pytest.param("true", False, True, id="single-string-matches-boolean-choice"),
    pytest.param("a,b", False, "a,b", id="single-choice-with-comma"),
    pytest.param("bronze", False, IGNORED, id="single-unknown"),
    pytest.param(4, False, IGNORED, id="single-unknown-number"),
    pytest.param(["gold"], False, IGNORED, id="single-ignores-list"),
    pytest.param({"gold": 1}, False, IGNORED, id="single-ignores-object"),
    pytest.param(["gold", "silver"], True, ["gold", "Silver"], id="multiple-list"),
    pytest.param(["gold", "bronze", 2], True, ["gold", "2"], id="multiple-drops-unknown"),
    pytest.param(["gold", "GOLD", "gold"], True, ["gold"], id="multiple-dedupes"),
    pytest.param([None, "gold", {}], True, ["gold"], id="multiple-drops-null-and-objects"),
    pytest.param("gold", True, ["gold"], id="multiple-scalar-choice-becomes-list"),
    pytest.param("a,b", True, ["a,b"], id="multiple-string-not-split"),
    pytest.param([], True, [], id="multiple-empty-list-stored"),
    pytest.param(["bronze"], True, IGNORED, id="multiple-all-unknown-ignored"),
    pytest.param("bronze", True, IGNORED, id="multiple-unknown-scalar"),
    pytest.param({"gold": True}, True, IGNORED, id="multiple-ignores-object"),
]


@pytest.mark.parametrize(("value", "multiple", "expected"), FIXED)
def test_fixed(value: Any, multiple: bool, expected: Any) -> None:
    result = coerce(value, "fixed", choices=CHOICES, multiple=multiple)
    if expected is IGNORED:
        assert result is IGNORED
    else:
        assert result == expected
        assert type(result) is type(expected)


@pytest.mark.parametrize("choices", [None, []], ids=["none", "empty"])
def test_fixed_without_choices_ignores_everything(choices: list[Any] | None) -> None:
    assert coerce("gold", "fixed", choices=choices) is IGNORED
    assert coerce(["gold"], "fixed", choices=choices, multiple=True) is IGNORED


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        pytest.param("string", "string", id="string"),
        pytest.param(" Integer ", "integer", id="case-and-blanks"),
        pytest.param("FLOAT", "float", id="float"),
        pytest.param("number", "number", id="number-is-its-own-type"),
        pytest.param("Number", "number", id="number-case"),
        pytest.param("boolean", "boolean", id="boolean"),
        pytest.param("date", "date", id="date"),
        pytest.param("datetime", "datetime", id="datetime"),
        pytest.param("fixed", "fixed", id="fixed"),
        pytest.param("json", "json", id="json"),
    ],
)
def test_normalize_type(name: str, expected: str) -> None:
    assert normalize_type(name) == expected


@pytest.mark.parametrize("name", ["int", "bool", "text", "", "timestamp"])
def test_normalize_type_refuses_unknown(name: str) -> None:
    with pytest.raises(ValueError, match="unknown attribute type"):
        normalize_type(name)


def test_coerce_accepts_type_synonyms() -> None:
    assert coerce("2.5", "Number") == 2.5


def test_coerce_refuses_unknown_type() -> None:
    with pytest.raises(ValueError, match="unknown attribute type"):
        coerce(1, "money")


def test_ignored_repr() -> None:
    assert repr(IGNORED) == "IGNORED"


@pytest.mark.parametrize(
    "value",
    [0.1, 1 / 3, 5e-324, 1.7976931348623157e308, 123456789.125, 1e-7, 1e16, 2.0**53 + 2],
)
def test_number_text_reads_back_as_the_same_number(value: float) -> None:
    assert float(number_text(value)) == value
    assert float(number_text(-value)) == -value


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=20,
)
# Beyond what JSON carries, in case a caller hands over a Python float from elsewhere.
edge_values = json_values | st.floats() | st.integers(min_value=-(10**30), max_value=10**30)
choice_lists = st.none() | st.lists(json_values, max_size=6)


@given(
    value=edge_values, type_=st.sampled_from(TYPES), choices=choice_lists, multiple=st.booleans()
)
def test_coerce_never_raises_and_stays_json(
    value: Any, type_: str, choices: list[Any] | None, multiple: bool
) -> None:
    result = coerce(value, type_, choices=choices, multiple=multiple)
    if result is IGNORED or result is None:
        return
    if type_ != "json":
        # What the lead stores must be serializable JSON (no NaN, no infinities).
        orjson.loads(orjson.dumps(result))
        assert not (isinstance(result, float) and not math.isfinite(result))


@given(value=json_values)
def test_string_coercion_is_idempotent(value: Any) -> None:
    once = coerce(value, "string")
    if once is IGNORED:
        # Only an object or array whose JSON would not fit is refused (a cut would not parse).
        assert isinstance(value, dict | list)
        return
    assert isinstance(once, str) or once is None
    assert coerce(once, "string") == once
    if once is not None:
        assert len(once) <= STRING_MAX
    if isinstance(value, dict | list):
        assert orjson.loads(once) == value  # JSON text that parses back, never a fragment


@given(value=st.integers(min_value=I64_MIN, max_value=I64_MAX))
def test_integer_round_trips_through_its_string(value: int) -> None:
    assert coerce(coerce(value, "string"), "integer") == value


@given(value=st.floats(allow_nan=False, allow_infinity=False))
def test_float_round_trips_through_its_string(value: float) -> None:
    assert coerce(coerce(value, "string"), "float") == value


def test_a_multiple_choice_list_that_lost_members_is_noted() -> None:
    assert coerce_noting(["gold", "bronze"], "fixed", CHOICES, True) == (
        ["gold"],
        "unknown_choices",
    )
    assert coerce_noting(["gold", "GOLD"], "fixed", CHOICES, True) == (["gold"], None)
    assert coerce_noting(["bronze"], "fixed", CHOICES, True) == (IGNORED, "uncoercible")


@pytest.mark.parametrize(
    ("value", "type_", "expected"),
    [
        pytest.param("x" * 300, "string", ("x" * 255, "truncated"), id="string-cut"),
        pytest.param("x" * 255, "string", ("x" * 255, None), id="string-fits"),
        pytest.param(10**300, "string", (number_text(10**300)[:255], "truncated"), id="number-cut"),
        pytest.param(
            [{"sku": "A-1", "name": "y" * 300}],
            "string",
            (IGNORED, "json_too_long"),
            id="array-too-long",
        ),
        pytest.param({"a": 1}, "string", ('{"a":1}', None), id="object-fits"),
        pytest.param("12.5", "integer", (IGNORED, "uncoercible"), id="uncoercible"),
        pytest.param("7", "integer", (7, None), id="converted"),
        pytest.param(None, "string", (None, None), id="null-clears"),
    ],
)
def test_coerce_noting_says_why_the_stored_value_differs(
    value: Any, type_: str, expected: tuple[Any, str | None]
) -> None:
    assert coerce_noting(value, type_) == expected
