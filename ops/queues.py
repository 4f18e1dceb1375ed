"""Reading the queues without consuming them, and putting a lost worker's messages back:
`userdest queue stats`, `queue export` and `queue requeue`. How messages sit in Redis is
shared/wire.py's knowledge; this module asks it.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis

from shared import erasure, wire
from shared.envelope import Envelope, EnvelopeKeys, merge_defaults
from shared.eventtime import MAX_FUTURE
from shared.queues import QUEUES
from shared.queuestate import read_queues
from shared.timeparse import parse_iso

_BATCH_KEYS = ("context", "integrations")

APP_FIELD = "userdestApp"
"""The name of the app whose calls an exported line holds, beside `batch`: `userdest replay --app`
refuses a line of another app (receivers ignore the field)."""


def queue_stats(client: redis.Redis) -> dict[str, dict[str, Any]]:
    """Each queue's waiting and unacknowledged messages, the lag (age in seconds of its oldest
    waiting message, from that envelope's received_at) and the age of its oldest unacknowledged
    message (None when there is none)."""
    return {name: state.answer() for name, state in read_queues(client).items()}


# --- export --------------------------------------------------------------------------------------


def _received_at(call: dict[str, Any], envelope: Envelope) -> str:
    """The receivedAt the worker would use for this call: its own where it honours that, else the
    envelope's (shared/eventtime.py)."""
    envelope_time = parse_iso(envelope.received_at)
    own = call.get("receivedAt")
    own_time = parse_iso(own)
    if own_time is not None and (envelope_time is None or own_time <= envelope_time + MAX_FUTURE):
        return str(own)
    return envelope.received_at


def export_calls(envelope: Envelope) -> list[Any]:
    """The envelope's accepted calls, each carrying its assigned messageId and its receivedAt, then
    the calls the receiver rejected, as sent, so that nothing waiting is lost: `userdest replay`
    refuses those again and names them, line by line.

    A default the envelope holds beside the batch's context and integrations (the type a single
    call's endpoint fixes) goes into the call where the call has none, as the worker would merge it.
    The request's address of a direct sender goes into `context.ip` where the call has none, as
    Segment's API fills it: a replay never takes its own address as the user's.
    """
    extra = {k: v for k, v in envelope.defaults.items() if k not in _BATCH_KEYS}
    client_ip = envelope.client_ip()
    calls: list[Any] = []
    for call, message_id in zip(envelope.calls, envelope.message_ids, strict=True):
        if not isinstance(call, dict):
            continue  # the receiver never accepts one; a worker would dead-letter it
        out = dict(call)
        for key, value in extra.items():
            if out.get(key) is None:
                out[key] = value
        out["messageId"] = message_id
        out["receivedAt"] = _received_at(call, envelope)
        context = merge_defaults(out, envelope.defaults).get("context")
        if client_ip and (context is None or (isinstance(context, dict) and not context.get("ip"))):
            out["context"] = {**(out.get("context") or {}), "ip": client_ip}
        calls.append(out)
    calls.extend(r.get("call") for r in envelope.rejected if isinstance(r, dict))
    return calls


def export_lines(
    envelope: Envelope, max_bytes: int, max_calls: int, app: str | None = None
) -> Iterator[bytes]:
    """NDJSON lines of `{"batch": [...], "context"?, "integrations"?, "sentAt"?, "userdestApp"?}`
    bodies for the envelope (of the app named `app`), each within `max_bytes` and `max_calls` so
    that `userdest replay` takes it whole."""
    tail = b""
    if app is not None:
        tail += b',"' + APP_FIELD.encode() + b'":' + orjson.dumps(app)
    for key in _BATCH_KEYS:
        if key in envelope.defaults:
            tail += b',"' + key.encode() + b'":' + orjson.dumps(envelope.defaults[key])
    if envelope.sent_at is not None:
        tail += b',"sentAt":' + orjson.dumps(envelope.sent_at)
    overhead = len(b'{"batch":[]') + len(tail) + len(b"}")
    chunk: list[bytes] = []
    size = overhead
    for call in export_calls(envelope):
        encoded = orjson.dumps(call)
        if chunk and (size + len(encoded) + 1 > max_bytes or len(chunk) >= max_calls):
            yield b'{"batch":[' + b",".join(chunk) + b"]" + tail + b"}\n"
            chunk, size = [], overhead
        chunk.append(encoded)
        size += len(encoded) + 1
    if chunk:
        yield b'{"batch":[' + b",".join(chunk) + b"]" + tail + b"}\n"


@dataclass(slots=True)
class Export:
    queue: str
    messages: int = 0
    calls: int = 0
    lines: int = 0
    skipped: list[dict[str, Any]] = field(default_factory=list)
    app_ids: set[int] = field(default_factory=set)
    """The apps whose messages were written: `userdest replay` puts a whole file under one."""

    def answer(self) -> dict[str, Any]:
        return {
            "queue": self.queue,
            "messages": self.messages,
            "calls": self.calls,
            "lines": self.lines,
            "apps": len(self.app_ids),
            "skipped": self.skipped,
        }


def export_queue(
    client: redis.Redis,
    queue: str,
    write: Callable[[bytes], Any],
    *,
    max_bytes: int,
    max_calls: int,
    keys: EnvelopeKeys,
    app_id: int | None = None,
    app_name: Callable[[int], str | None] = lambda _: None,
) -> Export:
    """Write the messages waiting on `queue` (of `app_id` only, where given), oldest first,
    without taking any off it; each line names its app (`app_name` of its id) in APP_FIELD.
    A message none of `keys` signed is skipped as a worker would refuse it: a replay of the
    file would sign its calls.

    One LRANGE reads the whole list at one instant, so the export is exactly the queue as it was
    then (no message missed or written twice while receivers push and workers pop); it holds the
    queue's bytes in memory once.
    """
    summary = Export(queue)
    waiting = client.lrange(queue, 0, -1)
    for position, raw in enumerate(reversed(waiting), start=1):
        try:
            envelope = wire.decode_envelope(raw, keys)
        except wire.ForeignMessage as exc:
            summary.skipped.append({"position": position, "error": str(exc)})
            continue
        if app_id is not None and envelope.app_id != app_id:
            continue
        summary.messages += 1
        summary.app_ids.add(envelope.app_id)
        for line in export_lines(envelope, max_bytes, max_calls, app_name(envelope.app_id)):
            write(line)
            summary.lines += 1
        summary.calls += sum(1 for c in envelope.calls if isinstance(c, dict)) + len(
            envelope.rejected
        )
    return summary


# --- requeue -------------------------------------------------------------------------------------


def requeue_unacked(client: redis.Redis, older_than: float) -> dict[str, int]:
    """Put back on their queue the unacknowledged messages delivered more than `older_than`
    seconds ago (a lost worker's), as kombu does after the visibility timeout; how many, by queue.
    Each moves exactly once even while kombu's own restore runs (wire.restore_unacked)."""
    moved: Counter[str] = Counter(dict.fromkeys(QUEUES, 0))
    moved.update(wire.restore_unacked(client, time.time() - older_than, QUEUES))
    return dict(moved)


# --- erasure -------------------------------------------------------------------------------------

# Replace one exact message where it stands (LPOS then LSET, atomically), or remove it when the
# replacement is empty; a message a worker took meanwhile is left to the worker (which skips the
# person's calls: their ids are suppressed before this runs).
_REPLACE = """
local at = redis.call('LPOS', KEYS[1], ARGV[1])
if not at then return 0 end
if ARGV[2] == '' then redis.call('LREM', KEYS[1], 1, ARGV[1]) else redis.call('LSET', KEYS[1], at, ARGV[2]) end
return 1
"""


def _names(call: Any, envelope: Envelope, keys: set[erasure.IdKey]) -> bool:
    """Whether the queued `call` (its batch's defaults merged) names any of `keys`."""
    return isinstance(call, dict) and bool(
        erasure.call_keys(merge_defaults(call, envelope.defaults)) & keys
    )


def _waiting_and_held(client: redis.Redis) -> Iterator[tuple[str, Envelope]]:
    """Every envelope waiting in a queue or held by a worker, with where it is."""
    for queue in QUEUES:
        for raw in client.lrange(queue, 0, -1):
            with contextlib.suppress(wire.ForeignMessage):
                yield queue, wire.decode_envelope(raw)
    for _tag, value in wire.unacked_entries(client):
        entry = wire.unacked_entry(value)
        if entry is not None:
            with contextlib.suppress(wire.ForeignMessage):
                yield "held by a worker", wire.decode_envelope(orjson.dumps(entry[0]))


def calls_naming(
    client: redis.Redis, app_id: int, keys: set[erasure.IdKey]
) -> list[dict[str, Any]]:
    """The app's calls waiting in a queue or held by a worker that name any of `keys`, each with
    where it is, its messageId and when it was received (an access request's queued part)."""
    found: list[dict[str, Any]] = []
    for where, envelope in _waiting_and_held(client):
        if envelope.app_id != app_id:
            continue
        named: list[tuple[Any, Any]] = [
            (call, mid)
            for call, mid in zip(envelope.calls, envelope.message_ids, strict=True)
            if _names(call, envelope, keys)
        ]
        named += [
            (r.get("call"), r.get("message_id"))
            for r in envelope.rejected
            if isinstance(r, dict) and _names(r.get("call"), envelope, keys)
        ]
        found += [
            {"where": where, "message_id": mid, "received_at": envelope.received_at, "call": call}
            for call, mid in named
        ]
    return found


def drop_person(
    client: redis.Redis,
    app_id: int,
    keys: set[erasure.IdKey],
    envelope_keys: EnvelopeKeys,
) -> dict[str, int]:
    """Remove the calls naming any of `keys` (ids and contacts) from the app's waiting messages:
    a message left with no call is removed, the others are put back in place without them, signed
    again. A message no ENVELOPE_SECRET signed loses those calls too but is put back unsigned:
    erasing must not launder a forgery (a worker keeps what is left as dead letters). Counts of
    calls and messages touched."""
    replace = client.register_script(_REPLACE)
    out = {"calls": 0, "messages": 0}
    for queue in QUEUES:
        for raw in client.lrange(queue, 0, -1):
            try:
                envelope = wire.decode_envelope(raw)
            except wire.ForeignMessage:
                continue
            try:
                wire.decode_envelope(raw, envelope_keys)
                signed = True
            except wire.ForeignMessage:
                signed = False
            if envelope.app_id != app_id:
                continue
            keep = [i for i, call in enumerate(envelope.calls) if not _names(call, envelope, keys)]
            rejected = [
                r
                for r in envelope.rejected
                if not (isinstance(r, dict) and _names(r.get("call"), envelope, keys))
            ]
            dropped = len(envelope.calls) - len(keep) + len(envelope.rejected) - len(rejected)
            if not dropped:
                continue
            envelope.calls = [envelope.calls[i] for i in keep]
            envelope.message_ids = [envelope.message_ids[i] for i in keep]
            envelope.rejected = rejected
            argument: Any = envelope.to_dict()
            if signed:
                argument = orjson.Fragment(envelope_keys.seal(argument))
            new = wire.with_argument(raw, argument) if keep or rejected else b""
            if replace(keys=[queue], args=[raw, new]):
                out["calls"] += dropped
                out["messages"] += 1
    return out


def rewrite_append_only_file(client: redis.Redis) -> str:
    """Ask Redis to rewrite its append-only file (BGREWRITEAOF), which then holds only what is
    queued now; what it answered, in words."""
    try:
        if client.config_get("appendonly").get("appendonly") != "yes":
            return "not needed: Redis keeps no append-only file"
        client.bgrewriteaof()
    except redis.ResponseError as exc:
        return f"refused by Redis: {str(exc).strip()[:200]}"
    return "started"
