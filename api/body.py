"""Reading a request body within its bound, gzip included (a gzip bomb costs no more
memory than the bound)."""

from __future__ import annotations

import zlib
from typing import IO

from shared.calls import Refusal, too_large

_CHUNK = 64 * 1024
# Deflate can make incompressible data slightly larger; this covers gzip's header and that growth.
_GZIP_SLACK = 1024


def _too_large(limit: int) -> Refusal:
    return too_large(f"the body is over {limit} bytes")


def read_body(
    stream: IO[bytes], content_length: int | None, encoding: str | None, limit: int
) -> tuple[bytes, bytes | None]:
    """The body, decompressed, at most `limit` bytes; and the bytes as sent where they were gzip.

    A body over the limit is refused (400 payload_too_large) before more than the limit is held in
    memory, however well it compresses.
    """
    encoding = (encoding or "").strip().lower()
    if encoding in ("", "identity"):
        gzipped = False
    elif encoding in ("gzip", "x-gzip"):
        gzipped = True
    else:
        raise Refusal(415, "unsupported_encoding", "Content-Encoding must be gzip or absent")
    wire_limit = limit + limit // 100 + _GZIP_SLACK if gzipped else limit
    if content_length is not None and content_length > wire_limit:
        raise _too_large(limit)
    chunks = []
    size = 0
    while True:
        chunk = _read(stream)
        if not chunk:
            break
        size += len(chunk)
        if size > wire_limit:
            raise _too_large(limit)
        chunks.append(chunk)
    data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    if not gzipped:
        return data, None
    return gunzip(data, limit), data


def _read(stream: IO[bytes]) -> bytes:
    """The next piece of the body; 400 where the client stopped sending it or framed it wrong."""
    try:
        return stream.read(_CHUNK)
    except Exception as exc:
        # The server (gunicorn, werkzeug) raises its own types for a body cut short or a bad chunk:
        # NoMoreData (an OSError), ChunkMissingTerminator, InvalidChunkSize, ClientDisconnected.
        # Whatever it is, the request did not carry a whole body: the client's error, not ours.
        raise Refusal(
            400, "truncated_body", f"the body ended early or is badly framed ({type(exc).__name__})"
        ) from None


def gunzip(data: bytes, limit: int) -> bytes:
    """Decompress gzip (one or more members) into at most `limit` bytes, else 400
    payload_too_large; bad data 400 invalid_gzip."""
    out: list[bytes] = []
    size = 0
    try:
        while data:
            member = zlib.decompressobj(16 + zlib.MAX_WBITS)
            pending = data
            while pending:
                # max_length stops the output at one byte over the bound, whatever the ratio.
                chunk = member.decompress(pending, limit + 1 - size)
                size += len(chunk)
                if size > limit:
                    raise _too_large(limit)
                out.append(chunk)
                pending = member.unconsumed_tail
            if not member.eof:
                raise Refusal(400, "invalid_gzip", "the gzip body is truncated")
            data = member.unused_data
    except zlib.error:
        raise Refusal(400, "invalid_gzip", "the body is not valid gzip") from None
    return b"".join(out)
