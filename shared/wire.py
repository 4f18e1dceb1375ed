"""kombu's Redis wire format and key layout: the one module that knows how a task message looks in
Redis. Everything else (the publishers, the worker's group draining, queue readings, `userdest
queue` and `messages show`) asks it; `workers/broker.py` is the one place that changes kombu's
behaviour, and it asks this module too.

The layout, as kombu 5's Redis transport writes it:

- a queue is a Redis list named after it: publishers LPUSH, consumers take from the other end, so
  the oldest waiting message is the list's last element;
- a message is a JSON object `{"body", "content-encoding", "content-type", "headers",
  "properties"}`; for a Celery task, `headers.task` names the task, `headers.id` is the task id and
  `body` (base64 where `properties.body_encoding` says so) is the JSON `[args, kwargs, embed]`;
- a message delivered and not yet acknowledged is kept in the hash `unacked` (delivery tag ->
  `[message, exchange, routing key]`) and the sorted set `unacked_index` (tag -> delivery time),
  until it is acknowledged or, after the visibility timeout, put back on its queue.

tests/api/test_publish.py checks what this module builds against what `celery.send_task` writes
and reads it back through kombu, and tests/shared/test_wire.py pins the key names and the
`unacked` entries against kombu's own code, so a kombu upgrade that changes any of it fails there.
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from base64 import b64decode, b64encode
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import orjson
import redis
from kombu.transport import redis as kombu_redis

from shared.envelope import Envelope, EnvelopeError, EnvelopeKeys, SignatureError
from shared.queues import APPLY_TASK

if TYPE_CHECKING:
    from celery import Celery

UNACKED: str = kombu_redis.Channel.unacked_key
"""kombu's hash of delivered, unacknowledged messages (tag -> [message, exchange, routing key])."""
UNACKED_INDEX: str = kombu_redis.Channel.unacked_index_key
"""kombu's sorted set of the same messages' delivery times (tag -> seconds since the epoch)."""

CALLS_PROPERTY = "userdest_calls"
"""A message property: how many calls its envelope carries, so that a worker's take script can
fill a group up to WORKER_BATCH_CALLS without decoding bodies. kombu and Celery ignore it; a
message without it counts as one call."""

RAW_MARK = "userdest_raw"
"""A property marking a message of another shape kept wrapped in kombu's shape (its bytes as
`body`), so that kombu can restore it from `unacked` and the worker can set it aside unharmed."""


class ForeignMessage(ValueError):
    """A queued message that is not an APPLY_TASK message carrying an envelope; `code` says why:
    `not_json`, `not_ours` (another shape or task), `bad_envelope`, or, where its MAC is checked,
    `unsigned_envelope` or `bad_envelope_mac`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


# --- building ------------------------------------------------------------------------------------


def task_message(
    celery: Celery,
    argument: Any,
    queue: str,
    argsrepr: str,
    *,
    exchange: str = "",
    calls: int | None = None,
) -> dict[str, Any]:
    """The message `celery.send_task(APPLY_TASK, args=[argument], queue=queue)` would write, as a
    dict. Celery's own `as_task_v2` makes the headers and body, so the task protocol stays
    Celery's; `argsrepr` replaces the repr of the arguments that Celery would put where Flower
    and `celery events` show it (trait values, and work for nothing). `calls`, the number of
    calls the envelope carries, goes into CALLS_PROPERTY."""
    headers, properties, body, _ = celery.amqp.as_task_v2(
        str(uuid.uuid4()),
        APPLY_TASK,
        args=[argument],
        argsrepr=argsrepr,
        kwargsrepr="{}",
        ignore_result=True,
    )
    properties.update(
        delivery_mode=2,
        delivery_info={"exchange": exchange, "routing_key": queue},
        priority=0,
        body_encoding="base64",
        delivery_tag=str(uuid.uuid4()),
    )
    if calls is not None:
        properties[CALLS_PROPERTY] = calls
    return {
        "body": b64encode(orjson.dumps(body)).decode("ascii"),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": headers,
        "properties": properties,
    }


def encode(message: dict[str, Any]) -> bytes:
    """A message's bytes as they go into a queue."""
    return orjson.dumps(message)


# What a template's slots hold until a message fills them: strings no task message carries.
_SLOT = re.compile(rb'"\\u0000(id|tag|argsrepr|body|calls)\\u0000"')
_ARGUMENT = "\x00argument\x00"


class TaskTemplate:
    """`encode(task_message(celery, argument, queue, argsrepr))` for any argument, with the work
    done once: Celery's `as_task_v2` builds one message of placeholders, and each message is that
    one's bytes with its task id, delivery tag, argument summary and body put in their place.

    The message names the process that sent it (`origin`, with its pid), so a template belongs to
    the process that made it (`TaskTemplates` makes one per process). tests/shared/test_wire.py
    checks its bytes against `task_message`'s."""

    def __init__(self, celery: Celery, queue: str, *, exchange: str = "") -> None:
        self.pid = os.getpid()
        message = task_message(celery, _ARGUMENT, queue, "\x00argsrepr\x00", exchange=exchange)
        message["properties"][CALLS_PROPERTY] = "\x00calls\x00"
        message["headers"]["id"] = message["headers"]["root_id"] = "\x00id\x00"
        message["properties"]["correlation_id"] = "\x00id\x00"
        message["properties"]["delivery_tag"] = "\x00tag\x00"
        message["body"] = "\x00body\x00"
        pieces = _SLOT.split(encode(message))
        self._text = pieces[0::2]
        self._slots = pieces[1::2]
        if sorted(self._slots) != [b"argsrepr", b"body", b"calls", b"id", b"id", b"id", b"tag"]:
            raise RuntimeError(f"unexpected task message layout: {self._slots!r}")
        body = task_body(task_message(celery, _ARGUMENT, queue, "", exchange=exchange))
        before, _, after = orjson.dumps(body).partition(orjson.dumps(_ARGUMENT))
        self._body = (before, after)

    def encode(
        self,
        argument: Any,
        argsrepr: str,
        task_id: str | None = None,
        delivery_tag: str | None = None,
        *,
        calls: int,
    ) -> bytes:
        """The bytes of the message carrying `argument` (anything orjson writes, an
        `orjson.Fragment` as is) with its number of `calls` (CALLS_PROPERTY); new UUIDs for the
        task id and delivery tag unless given."""
        before, after = self._body
        values = {
            b"calls": b"%d" % calls,
            b"id": b'"%s"' % (task_id or str(uuid.uuid4())).encode(),
            b"tag": b'"%s"' % (delivery_tag or str(uuid.uuid4())).encode(),
            b"argsrepr": orjson.dumps(argsrepr),
            b"body": b'"%s"' % b64encode(before + orjson.dumps(argument) + after),
        }
        text = self._text
        parts = [text[0]]
        for i, slot in enumerate(self._slots, 1):
            parts.append(values[slot])
            parts.append(text[i])
        return b"".join(parts)


class TaskTemplates:
    """This process's TaskTemplate of each queue, made when first asked for (again after a fork)."""

    def __init__(self, celery: Celery) -> None:
        self._celery = celery
        self._made: dict[str, TaskTemplate] = {}

    def of(self, queue: str) -> TaskTemplate:
        template = self._made.get(queue)
        if template is None or template.pid != os.getpid():
            template = self._made[queue] = TaskTemplate(self._celery, queue)
        return template


# --- reading -------------------------------------------------------------------------------------


def kombu_shaped(message: Any) -> bool:
    """Whether kombu's Redis transport can read `message` (already parsed) as a message."""
    if not isinstance(message, dict):
        return False
    properties = message.get("properties")
    return (
        isinstance(message.get("headers"), dict)
        and isinstance(properties, dict)
        and isinstance(properties.get("delivery_info"), dict)
        and "body" in message
    )


def wrapped_raw(message: dict[str, Any]) -> str | None:
    """The original text of a message kept wrapped (RAW_MARK), None for any other message."""
    if message["properties"].get(RAW_MARK):
        return str(message["body"])
    return None


def task_body(message: dict[str, Any]) -> Any:
    """The decoded body of a kombu-shaped message; ValueError or TypeError if it is not JSON."""
    body = message["body"]
    if (message.get("properties") or {}).get("body_encoding") == "base64":
        body = b64decode(body)
    return orjson.loads(body)


def parse_task_message(raw: bytes | str) -> tuple[str | None, Any]:
    """The task id and first argument (for APPLY_TASK, the envelope) of a queued message."""
    try:
        message = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ForeignMessage("not_json", "the queued message is not JSON") from None
    if not isinstance(message, dict) or not isinstance(message.get("headers"), dict):
        raise ForeignMessage("not_ours", "the queued message is not a Celery task message")
    headers = message["headers"]
    if headers.get("task") != APPLY_TASK:
        raise ForeignMessage(
            "not_ours", f"the queued message is for task {str(headers.get('task'))[:100]!r}"
        )
    try:
        args = task_body(message)[0]
    except (KeyError, TypeError, ValueError, IndexError):
        raise ForeignMessage("not_json", "the queued task message's body is not JSON") from None
    try:
        return headers.get("id"), args[0]
    except (IndexError, TypeError, KeyError):
        raise ForeignMessage(
            "not_ours", "the queued task message has no envelope argument"
        ) from None


def with_argument(raw: bytes | str, argument: Any) -> bytes:
    """The queued message `raw` with its task's first argument (the envelope) replaced."""
    message = orjson.loads(raw)
    body = task_body(message)
    body[0][0] = argument
    encoded = orjson.dumps(body)
    if (message.get("properties") or {}).get("body_encoding") == "base64":
        message["body"] = b64encode(encoded).decode("ascii")
    else:
        message["body"] = encoded.decode()
    return encode(message)


def decode_envelope(raw: bytes | str, keys: EnvelopeKeys | None = None) -> Envelope:
    """The envelope inside one queued message; ForeignMessage where there is none, or, given
    `keys`, where none of them signed it."""
    _task_id, argument = parse_task_message(raw)
    try:
        if keys is not None:
            keys.verify(argument)
        return Envelope.from_dict(argument)
    except SignatureError as exc:
        raise ForeignMessage(exc.code, str(exc)) from None
    except EnvelopeError as exc:
        raise ForeignMessage("bad_envelope", str(exc)) from None


# --- unacknowledged messages ---------------------------------------------------------------------


def unacked_suffix(queue: str) -> str:
    """What follows the message in an `unacked` entry the group scripts write for `queue`: its
    exchange and routing key.

    userdest declares each queue with an exchange and a routing key of its own name
    (shared/celery_app.py), so either leads kombu's restore back to the queue. (kombu's own entries
    carry the exchange the message was published to, "" for the default one.)
    """
    name = orjson.dumps(queue).decode()
    return f",{name},{name}]"


def unacked_entry(value: bytes | str) -> tuple[dict[str, Any], str] | None:
    """The message and the queue (routing key) of one `unacked` entry; None if it is not one."""
    try:
        message, _exchange, key = orjson.loads(value)
    except (orjson.JSONDecodeError, ValueError, TypeError):
        return None
    if not isinstance(message, dict):
        return None
    return message, str(key)


def unacked_queue(value: bytes | str) -> str | None:
    """The queue an `unacked` entry was routed to."""
    entry = unacked_entry(value)
    return entry[1] if entry is not None else None


def unacked_entries(client: redis.Redis, chunk: int = 1000) -> Iterator[tuple[bytes, bytes]]:
    """Every (tag, entry) of the `unacked` hash, read in chunks."""
    yield from client.hscan_iter(UNACKED, count=chunk)


def delivery_times(client: redis.Redis) -> list[tuple[bytes, float]]:
    """Every unacknowledged message's tag and delivery time, oldest first."""
    return client.zrange(UNACKED_INDEX, 0, -1, withscores=True)  # type: ignore[return-value]


def restore_unacked(
    client: redis.Redis,
    older_than: float,
    queues: tuple[str, ...],
    tags: list[bytes] | None = None,
) -> list[str]:
    """Put back on their queue the unacknowledged messages delivered before the epoch second
    `older_than` (a lost worker's), as kombu does after the visibility timeout, or those of
    `tags` whatever their age; the queue of each.

    Each message moves in a transaction watching `unacked`: it leaves the hash and its index and
    goes to the consuming end of its queue (the next message a worker takes), marked redelivered,
    exactly once even while kombu's own restore runs. Entries of other queues are left alone.
    """
    restored: list[str] = []
    if tags is None:
        tags = client.zrangebyscore(UNACKED_INDEX, "-inf", older_than)  # type: ignore[assignment]
    for tag in tags or []:

        def move(pipe: redis.client.Pipeline, tag: bytes = tag) -> str | None:
            raw = pipe.hget(UNACKED, tag)
            entry = unacked_entry(raw) if raw is not None else None
            if raw is not None and (entry is None or entry[1] not in queues):
                return None
            pipe.multi()
            pipe.zrem(UNACKED_INDEX, tag)
            if entry is None:
                return None  # acknowledged meanwhile; only its index entry was left
            message, queue = entry
            with contextlib.suppress(KeyError, TypeError):
                message["headers"]["redelivered"] = True
                message["properties"]["delivery_info"]["redelivered"] = True
            pipe.hdel(UNACKED, tag)
            pipe.rpush(queue, encode(message))
            return queue

        queue = client.transaction(move, UNACKED, value_from_callable=True)  # type: ignore[arg-type]
        if isinstance(queue, str):
            restored.append(queue)
    return restored


# --- groups: messages a worker takes beside the one Celery delivered ------------------------------

GROUP_PREFIX = "userdest:group:"
"""The Redis key of a group record: the tags of the messages a leader took, in order."""

# The `unacked` entry of a queued message, and back. kombu restores an entry by reading its payload
# as a message of its own shape (it sets headers.redelivered and properties.delivery_info), so a
# message of another shape (not JSON, not ours) is kept wrapped in that shape, its bytes as `body`
# and RAW_MARK (`userdest_raw`) set, where kombu can restore it without failing and the worker can unwrap it.
# `give_back` puts a group's messages still in `unacked` back at the head of the queue, oldest at
# the very head, so they are taken again first and in order.
_HELPERS = """
local function kept(item, suffix)
  if string.sub(item, 1, 1) == '{' then
    local ok, m = pcall(cjson.decode, item)
    if ok and type(m) == 'table' and type(m.headers) == 'table' and type(m.properties) == 'table'
        and type(m.properties.delivery_info) == 'table' then
      local id = m.headers.id
      if type(id) ~= 'string' then id = nil end
      local calls = m.properties.userdest_calls
      if type(calls) ~= 'number' or calls < 1 then calls = 1 end
      return '[' .. item .. suffix, id, calls
    end
  end
  local wrapped = {body = item, headers = {}, properties = {delivery_info = {}, userdest_raw = 1}}
  return '[' .. cjson.encode(wrapped) .. suffix, nil, 1
end
local function unkept(entry, suffix)
  local m = cjson.decode(entry)[1]
  if type(m.properties) == 'table' and m.properties.userdest_raw then return m.body end
  return string.sub(entry, 2, #entry - #suffix)
end
local function give_back(group, queue, unacked, index, suffix)
  local tags = redis.call('LRANGE', group, 0, -1)
  local n = 0
  for i = #tags, 1, -1 do
    local entry = redis.call('HGET', unacked, tags[i])
    if entry then
      redis.call('HDEL', unacked, tags[i])
      redis.call('ZREM', index, tags[i])
      redis.call('RPUSH', queue, unkept(entry, suffix))
      n = n + 1
    end
  end
  redis.call('DEL', group)
  return n
end
"""

# KEYS: queue, unacked, unacked_index, group. ARGV: most messages, most bytes, now, leader id,
# group record ttl, the end of an `unacked` entry after its payload, GROUP_PREFIX, and optionally
# most calls (CALLS_PROPERTY; unbounded when left out). Returns the taken messages, oldest first, as tag, raw, tag, raw... Its shebang
# declares it may write, so a full Redis refuses it before it runs rather than after a pop.
TAKE_SCRIPT = """#!lua
local suffix = ARGV[6]
give_back(KEYS[4], KEYS[1], KEYS[2], KEYS[3], suffix)
local out = {}
local n = 0
local bytes = 0
local calls = 0
local limit = tonumber(ARGV[1])
local budget = tonumber(ARGV[2])
local most_calls = tonumber(ARGV[8]) or math.huge
while n < limit and bytes < budget and calls < most_calls do
  local item = redis.call('RPOP', KEYS[1])
  if not item then break end
  n = n + 1
  bytes = bytes + #item
  local tag = ARGV[4] .. ':' .. n
  local entry, id, carried = kept(item, suffix)
  calls = calls + carried
  redis.call('HSET', KEYS[2], tag, entry)
  redis.call('ZADD', KEYS[3], ARGV[3], tag)
  redis.call('RPUSH', KEYS[4], tag)
  out[#out + 1] = tag
  out[#out + 1] = item
  if id then
    -- A leader put back after its worker process died, taken here before it ran again: its
    -- group goes back to the head of the queue, to be taken next, into this group.
    give_back(ARGV[7] .. id, KEYS[1], KEYS[2], KEYS[3], suffix)
  end
end
if n > 0 then redis.call('EXPIRE', KEYS[4], tonumber(ARGV[5])) end
return out
"""

# KEYS: unacked, unacked_index, group. ARGV: the tags. Acknowledging frees memory: allowed when full.
ACK_SCRIPT = """#!lua flags=allow-oom
for i = 1, #ARGV do
  redis.call('HDEL', KEYS[1], ARGV[i])
  redis.call('ZREM', KEYS[2], ARGV[i])
end
redis.call('DEL', KEYS[3])
return #ARGV
"""

# KEYS: queue, unacked, unacked_index, group. ARGV: the suffix. Puts a group back, oldest message
# at the head of the queue (the end Celery pops), so the group is taken again first and in order.
# It frees as much as it writes: allowed when Redis is full.
RESTORE_SCRIPT = """#!lua flags=allow-oom
return give_back(KEYS[4], KEYS[1], KEYS[2], KEYS[3], ARGV[1])
"""


def with_helpers(source: str) -> str:
    """A group script with its shebang line first and the helpers above after it."""
    shebang, _, body = source.partition("\n")
    return f"{shebang}\n{_HELPERS}{body}"


def group_keys(queue: str, leader: str) -> list[str]:
    """The keys a group script of `leader` on `queue` touches, in the order the scripts take them."""
    return [queue, UNACKED, UNACKED_INDEX, GROUP_PREFIX + leader]
