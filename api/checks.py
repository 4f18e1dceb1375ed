"""Cheap checks on what a request carries: its size, its JSON, and the shape of each call (SPEC 3).

The receiver interprets nothing: it makes sure each call is something a worker can apply or store,
and leaves every value as sent. A JSON `null` counts as absent, as Segment's libraries send it
(`"anonymousId": null`, `"originalTimestamp": null`).
"""

from __future__ import annotations

import zlib
from typing import IO, Any

import orjson

from api.errors import ApiError
from shared.ids import normalize_id
from shared.timeparse import parse_iso

CALL_TYPES = ("identify", "track", "page", "screen", "group", "alias")
_KNOWN_TYPES = frozenset(CALL_TYPES)
_OBJECT_FIELDS = ("traits", "properties", "context")
_TIME_FIELDS = ("timestamp", "originalTimestamp", "sentAt")
MAX_MESSAGE_ID = 100
"""A messageId must be shorter than this."""

_CHUNK = 64 * 1024
# Deflate can make incompressible data slightly larger; this covers gzip's header and that growth.
_GZIP_SLACK = 1024


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "payload_too_large", f"the body is over {limit} bytes")


def read_body(
    stream: IO[bytes], content_length: int | None, encoding: str | None, limit: int
) -> tuple[bytes, bytes | None]:
    """The body, decompressed, at most `limit` bytes; and the bytes as sent where they were gzip.

    A body over the limit is refused (413) before more than the limit is held in memory, however
    well it compresses.
    """
    encoding = (encoding or "").strip().lower()
    if encoding in ("", "identity"):
        gzipped = False
    elif encoding in ("gzip", "x-gzip"):
        gzipped = True
    else:
        raise ApiError(415, "unsupported_encoding", "Content-Encoding must be gzip or absent")
    wire_limit = limit + limit // 100 + _GZIP_SLACK if gzipped else limit
    if content_length is not None and content_length > wire_limit:
        raise _too_large(limit)
    chunks = []
    size = 0
    while True:
        chunk = stream.read(_CHUNK)
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


def gunzip(data: bytes, limit: int) -> bytes:
    """Decompress gzip (one or more members) into at most `limit` bytes, else 413; bad data 400."""
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
                raise ApiError(400, "invalid_gzip", "the gzip body is truncated")
            data = member.unused_data
    except zlib.error:
        raise ApiError(400, "invalid_gzip", "the body is not valid gzip") from None
    return b"".join(out)


def parse_json(raw: bytes) -> Any:
    """The JSON document in `raw` (UTF-8, no NaN or Infinity), else 400 invalid_json."""
    if not raw.strip():
        raise ApiError(400, "invalid_json", "the body is empty")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        # orjson refuses nesting past 1024 levels itself; that is the depth rule too.
        if "depth" in str(exc):
            raise ApiError(400, "too_deep", "the JSON nests too deeply") from None
        raise ApiError(400, "invalid_json", "the body is not valid JSON") from None


def too_deep(value: Any, budget: int) -> bool:
    """Whether `value` nests more than `budget` levels (a bare `{}` is one level)."""
    if budget <= 0:
        return True
    for item in value.values() if type(value) is dict else value:
        kind = type(item)
        if (kind is dict or kind is list) and too_deep(item, budget - 1):
            return True
    return False


def check_depth(document: Any, raw: bytes, max_depth: int) -> None:
    """400 where `document` (parsed from `raw`) nests more than `max_depth` levels."""
    # Every level needs its own bracket, so a body with few of them is shallow enough; this spares
    # single calls the walk.
    if raw.count(b"{") + raw.count(b"[") <= max_depth:
        return
    kind = type(document)
    if (kind is dict or kind is list) and too_deep(document, max_depth):
        raise ApiError(400, "too_deep", f"the JSON nests deeper than {max_depth} levels")


def error(code: str, message: str) -> dict[str, str]:
    return {"code": code, "message": message}


def check_call(call: Any, fixed_type: str | None) -> list[dict[str, str]]:
    """Every structural problem of one call (SPEC 3); an empty list when it can be enqueued.

    `fixed_type` is the type the endpoint implies (`/v1/track`), or None where the call must name
    its own (`/v1/batch`, `/webhook`).
    """
    if type(call) is not dict:
        return [error("not_an_object", "a call must be a JSON object")]
    errors: list[dict[str, str]] = []
    get = call.get
    kind = get("type")
    if fixed_type is not None:
        if kind is not None and kind != fixed_type:
            errors.append(error("type_mismatch", f"this endpoint takes {fixed_type} calls"))
        kind = fixed_type
    elif kind is None:
        errors.append(error("missing_type", "a call needs a type"))
    elif type(kind) is not str or kind not in _KNOWN_TYPES:
        errors.append(error("unknown_type", "type must be one of " + ", ".join(CALL_TYPES)))
        kind = None

    if kind == "alias":
        if normalize_id(get("userId")) is None:
            errors.append(error("missing_user_id", "an alias call needs a userId"))
        if normalize_id(get("previousId")) is None:
            errors.append(error("missing_previous_id", "an alias call needs a previousId"))
    elif normalize_id(get("userId")) is None and normalize_id(get("anonymousId")) is None:
        errors.append(error("missing_user_id", "a call needs a userId or an anonymousId"))

    message_id = get("messageId")
    if message_id is not None and (
        type(message_id) is not str or len(message_id) >= MAX_MESSAGE_ID
    ):
        errors.append(
            error(
                "invalid_message_id",
                f"messageId must be a string under {MAX_MESSAGE_ID} characters",
            )
        )

    if kind == "track":
        event = get("event")
        if not isinstance(event, str) or not event.strip():
            errors.append(error("missing_event", "a track call needs a non-empty event name"))
    elif kind == "group" and normalize_id(get("groupId")) is None:
        errors.append(error("missing_group_id", "a group call needs a groupId"))

    for name in _OBJECT_FIELDS:
        value = get(name)
        if value is not None and type(value) is not dict:
            errors.append(error(f"invalid_{name}", f"{name} must be an object"))
    for name in _TIME_FIELDS:
        value = get(name)
        if value is not None and parse_iso(value) is None:
            errors.append(error("invalid_timestamp", f"{name} must be an ISO-8601 date and time"))
    return errors


def usable_message_id(call: dict[str, Any]) -> str | None:
    """The call's own messageId where it can serve as its idempotency key, else None."""
    value = call.get("messageId")
    if type(value) is str and value.strip():
        return value
    return None


def check_batch(body: Any, max_calls: int) -> tuple[list[Any], dict[str, Any], str | None]:
    """The calls, the defaults (top-level context and integrations) and the sentAt of a batch."""
    if type(body) is not dict:
        raise ApiError(400, "invalid_batch", "a batch must be a JSON object")
    calls = body.get("batch")
    if type(calls) is not list:
        raise ApiError(400, "invalid_batch", "a batch needs a `batch` list of calls")
    if len(calls) > max_calls:
        raise ApiError(413, "too_many_calls", f"a batch holds at most {max_calls} calls")
    defaults: dict[str, Any] = {}
    for name in ("context", "integrations"):
        value = body.get(name)
        if value is None:
            continue
        if type(value) is not dict:
            raise ApiError(400, f"invalid_{name}", f"the batch's {name} must be an object")
        defaults[name] = value
    sent_at = body.get("sentAt")
    if sent_at is not None and parse_iso(sent_at) is None:
        raise ApiError(400, "invalid_timestamp", "the batch's sentAt must be an ISO-8601 time")
    return calls, defaults, sent_at
