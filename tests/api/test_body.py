"""Reading a request body within its bound: gzip, short reads, declared lengths, encodings."""

from __future__ import annotations

import gzip
import io
import tracemalloc
import zlib
from typing import Any

import pytest

from api.body import DRAIN_BYTES, gunzip, read_body
from shared.calls import Refusal


def status_code(fn: Any, *args: Any) -> tuple[int, str]:
    with pytest.raises(Refusal) as refused:
        fn(*args)
    return refused.value.status, refused.value.code


# --- gzip ----------------------------------------------------------------------------------------


def test_gunzip_takes_exactly_the_bound_and_refuses_one_byte_more():
    assert gunzip(gzip.compress(b"a" * 1000), 1000) == b"a" * 1000
    assert status_code(gunzip, gzip.compress(b"a" * 1001), 1000) == (400, "payload_too_large")


def test_gunzip_reads_every_member():
    assert gunzip(gzip.compress(b"ab") + gzip.compress(b"cd"), 100) == b"abcd"
    assert status_code(gunzip, gzip.compress(b"a" * 60) + gzip.compress(b"a" * 60), 100) == (
        400,
        "payload_too_large",
    )


@pytest.mark.parametrize(
    "data",
    [
        b"plain text",
        gzip.compress(b"hello", mtime=0)[:-3],
        gzip.compress(b"hello", mtime=0) + b"trailing garbage",
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
        with pytest.raises(Refusal) as refused:
            gunzip(data, limit)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert refused.value.status == 400
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


def test_a_declared_length_over_the_bound_is_read_to_its_end_and_refused():
    """Read and thrown away, so that a client still writing it gets the answer."""
    stream = Trickle(b"x" * 5000, step=1024)
    assert status_code(read_body, stream, 5000, None, 1000) == (400, "payload_too_large")
    assert stream.read_bytes == 5000


def test_a_declared_length_past_the_drain_bound_is_refused_unread():
    stream = Trickle(b"x" * 5000)
    assert status_code(read_body, stream, DRAIN_BYTES + 1, None, 1000) == (400, "payload_too_large")
    assert stream.read_bytes == 0


def test_an_undeclared_length_is_read_up_to_the_drain_bound_and_not_held():
    step = 64 * 1024

    class Endless(Trickle):
        """Sends the same chunk for ever (Trickle's slicing would cost memory of its own)."""

        def read(self, size: int = -1) -> bytes:
            self.read_bytes += step
            return self.data

    stream = Endless(b"x" * step)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        assert status_code(read_body, stream, None, "identity", 1000) == (400, "payload_too_large")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert DRAIN_BYTES <= stream.read_bytes <= DRAIN_BYTES + 2 * step
    assert peak < 4 * step


def test_a_body_that_ends_badly_while_drained_is_still_too_large():
    class Cut(Trickle):
        def read(self, size: int = -1) -> bytes:
            if self.read_bytes >= 2000:
                raise OSError("the client went away")
            return super().read(size)

    stream = Cut(b"x" * 5000, step=1000)
    assert status_code(read_body, stream, None, None, 1000) == (400, "payload_too_large")


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
