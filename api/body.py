"""Reading a request body within its bound, gzip included (a gzip bomb costs no more
memory than the bound)."""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable
from typing import IO, Any

from shared.calls import Refusal, too_large

_CHUNK = 64 * 1024
# Deflate can make incompressible data slightly larger; this covers gzip's header and that growth.
_GZIP_SLACK = 1024

DRAIN_BYTES = 16 * 1024 * 1024
"""How much of an oversize body is read and thrown away before the 400 payload_too_large.

Most HTTP clients (urllib, requests, Segment's server libraries) write the whole body before they
read a byte of the answer. Had the receiver answered and closed with the rest of the body unread,
the kernel resets the connection: the client sees a broken pipe instead of the 400, and retries
the same batch forever. Past this bound (a body announced larger, or still coming) the receiver
answers and closes without reading on, and such a client sees the reset."""

CLOSE = "userdest.close"
"""Set in a request's environ: the connection closes after the answer (see `closing`)."""


def _too_large(limit: int) -> Refusal:
    return too_large(f"the body is over {limit} bytes")


def _oversize(stream: IO[bytes], limit: int, content_length: int | None, read: int) -> Refusal:
    """The refusal of a body over its limit, once the rest of it (up to DRAIN_BYTES in all) is
    read and discarded, so that the answer reaches a client still writing."""
    if content_length is None or content_length <= DRAIN_BYTES:
        while read <= DRAIN_BYTES:
            try:
                chunk = stream.read(_CHUNK)
            except Exception:
                break
            if not chunk:
                break
            read += len(chunk)
    return _too_large(limit)


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
        raise _oversize(stream, limit, content_length, 0)
    chunks = []
    size = 0
    while True:
        chunk = _read(stream)
        if not chunk:
            break
        size += len(chunk)
        if size > wire_limit:
            raise _oversize(stream, limit, content_length, size)
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


StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def closing(app: WsgiApp) -> WsgiApp:
    """`app`, closing the connection after an answer whose request set CLOSE.

    gunicorn drops a `Connection` header an application sets, and otherwise keeps the connection
    for the next request, first reading whatever is left of this one's body however large. Its
    `start_response` belongs to its response object, whose `force_close()` makes it answer
    `Connection: close` and close; under another server this changes nothing."""

    def wrapped(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        def start(*args: Any) -> Any:
            if environ.get(CLOSE):
                force_close = getattr(
                    getattr(start_response, "__self__", None), "force_close", None
                )
                if callable(force_close):
                    force_close()
            return start_response(*args)

        return app(environ, start)

    return wrapped
