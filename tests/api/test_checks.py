"""Unit tests of the receiver's body reading, gzip bound, JSON depth and call checks."""

from __future__ import annotations

import gzip
import io
import json
import tracemalloc
import zlib
from typing import Any

import pytest

from api.checks import (
    check_batch,
    check_call,
    check_depth,
    gunzip,
    parse_json,
    read_body,
    too_deep,
    usable_message_id,
)
from api.errors import ApiError


def codes(call: Any, fixed: str | None = None) -> list[str]:
    return [e["code"] for e in check_call(call, fixed)]


def status_code(fn: Any, *args: Any) -> tuple[int, str]:
    with pytest.raises(ApiError) as refused:
        fn(*args)
    return refused.value.status, refused.value.code


# --- gzip ----------------------------------------------------------------------------------------


def test_gunzip_takes_exactly_the_bound_and_refuses_one_byte_more():
    assert gunzip(gzip.compress(b"a" * 1000), 1000) == b"a" * 1000
    assert status_code(gunzip, gzip.compress(b"a" * 1001), 1000) == (413, "payload_too_large")


def test_gunzip_reads_every_member():
    assert gunzip(gzip.compress(b"ab") + gzip.compress(b"cd"), 100) == b"abcd"
    assert status_code(gunzip, gzip.compress(b"a" * 60) + gzip.compress(b"a" * 60), 100)[0] == 413


@pytest.mark.parametrize(
    "data",
    [
        b"plain text",
        gzip.compress(b"hello")[:-3],
        gzip.compress(b"hello") + b"trailing garbage",
        zlib.compress(b"zlib, not gzip"),
    ],
)
def test_gunzip_refuses_what_is_not_whole_gzip(data):
    assert status_code(gunzip, data, 1000) == (400, "invalid_gzip")


def bomb(size: int) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = b"\0" * 1_000_000
    parts = [packer.compress(block) for _ in range(size // len(block))]
    return b"".join(parts) + packer.flush()


def test_a_gzip_bomb_costs_no_more_memory_than_the_bound():
    data = bomb(200_000_000)  # 200 MB of zeros in about 200 KB
    assert len(data) < 300_000
    limit = 500 * 1024
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        with pytest.raises(ApiError) as refused:
            gunzip(data, limit)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert refused.value.status == 413
    assert peak < 3 * limit


# --- reading the body ----------------------------------------------------------------------------


class Trickle(io.RawIOBase):
    """A stream that hands out a few bytes a read, as a socket may."""

    def __init__(self, data: bytes, step: int = 7) -> None:
        self.data = data
        self.step = step
        self.read_bytes = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        chunk = self.data[: min(self.step, size if size >= 0 else self.step)]
        self.data = self.data[len(chunk) :]
        self.read_bytes += len(chunk)
        return chunk


def test_read_body_reads_short_reads_to_the_end():
    raw, wire = read_body(Trickle(b'{"a": 1}' * 100), None, None, 1000)  # type: ignore[arg-type]
    assert raw == b'{"a": 1}' * 100
    assert wire is None


def test_a_declared_length_over_the_bound_is_refused_unread():
    stream = Trickle(b"x" * 5000)
    assert status_code(read_body, stream, 5000, None, 1000) == (413, "payload_too_large")
    assert stream.read_bytes == 0


def test_an_undeclared_length_is_read_only_just_past_the_bound():
    stream = Trickle(b"x" * 1_000_000, step=64 * 1024)
    assert status_code(read_body, stream, None, "identity", 1000)[0] == 413
    assert stream.read_bytes <= 1000 + 64 * 1024


def test_read_body_returns_the_wire_bytes_of_gzip_too():
    wire = gzip.compress(b'{"a": 1}')
    raw, sent = read_body(io.BytesIO(wire), len(wire), "GZip", 1000)
    assert raw == b'{"a": 1}' and sent == wire


@pytest.mark.parametrize("encoding", ["br", "deflate", "gzip, br", "compress"])
def test_other_encodings_are_415(encoding):
    assert status_code(read_body, io.BytesIO(b"{}"), 2, encoding, 1000) == (
        415,
        "unsupported_encoding",
    )


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
    assert status_code(check_batch, {"batch": [1] * 11}, 10) == (413, "too_many_calls")
