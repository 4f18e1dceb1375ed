"""The call contract: the checks one call must pass, the batch envelope, message ids.

One module, used by the receiver, `userdest replay` and the workers alike, so they cannot disagree
on what a call is. Checks are cheap and interpret nothing: they make sure each call is something a
worker can apply or store, and leave every value as sent. A JSON `null` counts as absent, as
Segment's libraries send it (`"anonymousId": null`, `"originalTimestamp": null`).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from shared.ids import inexact_id, normalize_id
from shared.tenancy import host_matches, url_host
from shared.timeparse import parse_iso

CALL_TYPES = ("identify", "track", "page", "screen", "group", "alias")
"""Every call type, in the order the receiver's endpoints list them."""
DELETION = "delete"
"""Segment's deletion request as it reaches a destination (a regulation deleting a user): the
person named by its userId or anonymousId is erased and suppressed (shared/erasure.py). Taken only
on a signed `/webhook` request: a browser's write key is public, and must not erase anyone."""
_KNOWN_TYPES = frozenset(CALL_TYPES)
_OBJECT_FIELDS = ("traits", "properties", "context")
_TIME_FIELDS = ("timestamp", "originalTimestamp", "sentAt")
MAX_MESSAGE_ID = 100
"""A messageId must be shorter than this."""
MESSAGE_ID_NAMESPACE = uuid.UUID("5b0f8a63-4c2e-5d71-9e0a-7a6f1d2c3b48")
"""The UUID5 namespace of derived message ids. Changing it changes every derived id: never do."""


class Refusal(Exception):
    """Input refused: an HTTP status, a short stable code, a human message, optional details.

    The receiver answers it as JSON (api/errors.py); replay reports it against the line.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.errors = errors
        self.headers = headers


def too_large(message: str) -> Refusal:
    """Oversize answers 400, as Segment's API does: analytics-swift drops a batch only on a 400 and
    resends anything else forever (was 413)."""
    return Refusal(400, "payload_too_large", message)


def parse_json(raw: bytes) -> Any:
    """The JSON document in `raw` (UTF-8, no NaN or Infinity), else 400 invalid_json.

    Numeric ids keep their exact digits: orjson reads an integer beyond 64 bits as a
    rounded float, so where an id field of the document came out as a float the body is read again
    with exact integers (see `_exact_ids`).
    """
    if not raw.strip():
        raise Refusal(400, "invalid_json", "the body is empty")
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        # orjson refuses nesting past 1024 levels itself; that is the depth rule too.
        if "depth" in str(exc):
            raise Refusal(400, "too_deep", "the JSON nests too deeply") from None
        raise Refusal(400, "invalid_json", "the body is not valid JSON") from None
    if any(_inexact_id_in(call) for call in _calls_of(document)):
        return _exact_ids(raw)
    return document


ID_FIELDS = ("userId", "anonymousId", "groupId", "previousId")
"""The fields that name a user or company; sent as numbers, they must keep their exact digits."""
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1
"""The integers orjson reads (and writes) exactly."""


def _calls_of(document: Any) -> list[Any]:
    """The calls a body holds: itself, its `batch` list, or its elements (an Actions array)."""
    if type(document) is list:
        return document
    if type(document) is dict:
        batch = document.get("batch")
        return [document, *batch] if type(batch) is list else [document]
    return []


def _inexact_id_in(call: Any) -> bool:
    return type(call) is dict and any(inexact_id(call.get(name)) for name in ID_FIELDS)


def _refuse_constant(name: str) -> Any:
    raise ValueError(name)


def _exact_ids(raw: bytes) -> Any:
    """`raw` read with exact integers: an integer id beyond 64 bits becomes its decimal digits as a
    string (the same id: workers key every id on its text), any other such integer the float orjson
    would have made of it. An id sent as a fraction stays a float, and check_call refuses it."""
    try:
        document = json.loads(raw, parse_constant=_refuse_constant)
    except ValueError:
        raise Refusal(400, "invalid_json", "the body is not valid JSON") from None
    except RecursionError:
        raise Refusal(400, "too_deep", "the JSON nests too deeply") from None
    for call in _calls_of(document):
        if type(call) is dict:
            for name in ID_FIELDS:
                value = call.get(name)
                if type(value) is int and not _INT_MIN <= value <= _INT_MAX:
                    call[name] = str(value)
    return _floats_beyond_64_bits(document)


def _floats_beyond_64_bits(value: Any) -> Any:
    kind = type(value)
    if kind is int:
        return value if _INT_MIN <= value <= _INT_MAX else float(value)
    if kind is dict:
        return {k: _floats_beyond_64_bits(v) for k, v in value.items()}
    if kind is list:
        return [_floats_beyond_64_bits(v) for v in value]
    return value


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
        raise Refusal(400, "too_deep", f"the JSON nests deeper than {max_depth} levels")


def error(code: str, message: str) -> dict[str, str]:
    return {"code": code, "message": message}


def check_call(
    call: Any,
    fixed_type: str | None,
    deletions: bool = False,
    deletions_after: datetime | None = None,
    times: dict[str, datetime | None] | None = None,
) -> list[dict[str, str]]:
    """Every structural problem of one call; an empty list when it can be enqueued.

    `times`, where given, receives each time field the call has, parsed (None if it does not
    parse), so that the workers' event time reads them without parsing them again.

    `fixed_type` is the type the endpoint implies (`/v1/track`), or None where the call must name
    its own (`/v1/batch`, `/webhook`). `deletions`: whether this call may be a DELETION (a signature
    covers it). `deletions_after`: the receiver's check of a DELETION, which then needs a messageId
    and a `timestamp` after this (a captured signed request cannot be used again once its messageId
    has left the dedupe window); the workers leave it None, the receiver having decided.
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
    elif kind == DELETION and not deletions:
        errors.append(
            error(
                "deletion_not_allowed", "a delete call is taken only on a signed /webhook request"
            )
        )
        kind = None
    elif type(kind) is not str or (kind not in _KNOWN_TYPES and kind != DELETION):
        errors.append(error("unknown_type", "type must be one of " + ", ".join(CALL_TYPES)))
        kind = None

    if kind == "alias":
        if normalize_id(get("userId")) is None:
            errors.append(error("missing_user_id", "an alias call needs a userId"))
        if normalize_id(get("previousId")) is None:
            errors.append(error("missing_previous_id", "an alias call needs a previousId"))
    elif normalize_id(get("userId")) is None and normalize_id(get("anonymousId")) is None:
        errors.append(error("missing_user_id", "a call needs a userId or an anonymousId"))
    for name in ID_FIELDS:
        if inexact_id(get(name)):
            errors.append(
                error(
                    "inexact_id",
                    f"{name} sent as a number must be a whole number: send it as a string",
                )
            )

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

    if kind == DELETION and deletions_after is not None:
        errors.extend(_deletion_errors(call, deletions_after))
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
        if value is None:
            continue
        parsed = parse_iso(value)
        if times is not None:
            times[name] = parsed
        if parsed is None:
            errors.append(error("invalid_timestamp", f"{name} must be an ISO-8601 date and time"))
    return errors


def _deletion_errors(call: dict[str, Any], after: datetime) -> list[dict[str, str]]:
    """A deletion request is kept once by its messageId (which the signature covers), and only
    while that messageId is remembered: a copy sent again later is then a no-op, not a new erasure."""
    if usable_message_id(call) is None:
        return [error("deletion_needs_message_id", "a delete call needs its own messageId")]
    when = parse_iso(call.get("timestamp"))
    if when is None or when < after:
        return [
            error("deletion_expired", "a delete call's timestamp must be within the dedupe window")
        ]
    return []


def usable_message_id(call: dict[str, Any]) -> str | None:
    """The call's own messageId where it can serve as its idempotency key, else None."""
    value = call.get("messageId")
    if type(value) is str and value.strip():
        return value
    return None


def refused_message_id(call: Any) -> str:
    """The id a refused call of a batch is known by, answered to its sender and kept with its dead
    letter (`userdest messages show` finds it): its own messageId where the checks take it, else a
    new UUID4."""
    if isinstance(call, dict):
        own = usable_message_id(call)
        if own is not None and len(own) < MAX_MESSAGE_ID:
            return own
    return str(uuid.uuid4())


def derived_message_id(call: Any) -> str:
    """A UUID5 of the call's canonical JSON (keys sorted): the same call always gets the same id.

    Replays use it for calls without a usable messageId, so replaying one file twice gives the same
    ids; the receiver gives such live calls a random UUID instead (two identical live calls are two
    events).
    """
    canonical = orjson.dumps(call, option=orjson.OPT_SORT_KEYS).decode()
    return str(uuid.uuid5(MESSAGE_ID_NAMESPACE, canonical))


def message_id_of(call: dict[str, Any]) -> str:
    """The call's own messageId where it is usable, else its derived one."""
    return usable_message_id(call) or derived_message_id(call)


@dataclass(slots=True)
class Checked:
    """The calls of a request (or replayed line) sorted into those to enqueue and those refused."""

    accepted: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    """`{"index", "call", "errors"}` for each refused call, in order."""


def check_calls(
    calls: list[Any],
    fixed_type: str | None,
    max_call_bytes: int | None,
    domains: tuple[str, ...] = (),
    defaults: dict[str, Any] | None = None,
    deletions: int = 0,
    deletions_after: datetime | None = None,
) -> Checked:
    """Check every call of a request; `max_call_bytes` measures each call (None: no need, as the
    whole body is already within it). The `writeKey` a call may carry is removed: it is the
    request's credential, and must not travel on the queue or be stored with a dead letter.

    `domains`: the app's trusted domains where the request named no site (no Origin or Referer):
    each call's context.page.url (else the batch's) then decides for that call alone.

    `deletions`: how many calls, from the first, a signature covers; only those may be deletion
    requests, and only with a `timestamp` after `deletions_after`.
    """
    checked = Checked()
    default_url = _page_url((defaults or {}).get("context")) if domains else None
    for index, call in enumerate(calls):
        if type(call) is dict:
            call.pop("writeKey", None)
        errors = check_call(call, fixed_type, index < deletions, deletions_after)
        if max_call_bytes is not None and len(orjson.dumps(call)) > max_call_bytes:
            errors.append(error("call_too_large", f"a call is at most {max_call_bytes} bytes"))
        if domains and type(call) is dict:
            host = url_host(_page_url(call.get("context")) or default_url)
            if host is not None and not host_matches(host, domains):
                errors.append(
                    error("untrusted_domain", "the call's page is not on a trusted domain")
                )
        if errors:
            checked.rejected.append({"index": index, "call": call, "errors": errors})
        else:
            checked.accepted.append(call)
    return checked


def _page_url(context: Any) -> Any:
    if type(context) is dict:
        page = context.get("page")
        if type(page) is dict:
            return page.get("url")
    return None


DESTINATION_NAMES = frozenset({"user.com", "userengage"})
"""The names a call's `integrations` may give this destination (compared case-insensitively)."""


def routed_away(call: dict[str, Any]) -> bool:
    """Whether the call's `integrations` (its own, else the batch's) turns this destination off:
    named false, or `"All": false` without naming it on. Such a call is accepted,
    counted and not applied. A destination named with an object (its options) is on."""
    integrations = call.get("integrations")
    if type(integrations) is not dict:
        return False
    everything = True
    for name, value in integrations.items():
        if type(name) is str and name.lower() in DESTINATION_NAMES:
            return value is False
        if name == "All":
            everything = value is not False
    return not everything


def check_batch(body: Any, max_calls: int) -> tuple[list[Any], dict[str, Any], str | None]:
    """The calls, the defaults (top-level context and integrations) and the sentAt of a batch."""
    if type(body) is not dict:
        raise Refusal(400, "invalid_batch", "a batch must be a JSON object")
    calls = body.get("batch")
    if type(calls) is not list:
        raise Refusal(400, "invalid_batch", "a batch needs a `batch` list of calls")
    if len(calls) > max_calls:
        raise too_large(f"a batch holds at most {max_calls} calls")
    defaults: dict[str, Any] = {}
    for name in ("context", "integrations"):
        value = body.get(name)
        if value is None:
            continue
        if type(value) is not dict:
            raise Refusal(400, f"invalid_{name}", f"the batch's {name} must be an object")
        defaults[name] = value
    sent_at = body.get("sentAt")
    if sent_at is not None and parse_iso(sent_at) is None:
        raise Refusal(400, "invalid_timestamp", "the batch's sentAt must be an ISO-8601 time")
    return calls, defaults, sent_at
