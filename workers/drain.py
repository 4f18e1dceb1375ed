"""Taking more queued messages for a running task, with kombu's own acknowledgement bookkeeping.

A worker process that has started one message (the group's leader, delivered by Celery) takes up to
WORKER_BATCH_MESSAGES - 1 more from the same queue, applies them all in one transaction and only
then acknowledges them (SPEC 5.9). What it takes must survive its death as Celery's own deliveries
do, so one Lua script, atomic in Redis, moves each message from the queue into kombu's `unacked`
hash and `unacked_index` (exactly as kombu's `QoS.append` writes them: `[payload, exchange,
routing_key]`), and names them in a group record kept under the leader's task id:

- the transaction commits: the taken messages are acknowledged (removed from `unacked`), then
  Celery acknowledges the leader;
- a transient failure: they go back to the head of their queue at once, visible again;
- the worker process dies: Celery puts the leader back (`reject_on_worker_lost`); when it runs
  again, the same script first puts its group back, so the whole group returns together;
- the whole worker dies: kombu restores everything in `unacked` after VISIBILITY_TIMEOUT, the
  group included, exactly as it restores the leader.

A full Redis (maxmemory, noeviction) refuses the script before it runs: nothing is taken, the
leader is applied alone. A take never blocks: an empty queue gives an empty group, so a lone
message is applied at once.
"""

from __future__ import annotations

import time
from base64 import b64decode
from dataclasses import dataclass
from typing import Any

import orjson
import redis

GROUP_PREFIX = "userdest:group:"
"""The Redis key of a group record: the tags of the messages a leader took, in order."""

# kombu's defaults for the Redis transport (`Channel.unacked_key`, `unacked_index_key`).
UNACKED = "unacked"
UNACKED_INDEX = "unacked_index"

# KEYS: queue, unacked, unacked_index, group. ARGV: most messages, most bytes, now, leader id,
# group record ttl, the end of an `unacked` entry after its payload, GROUP_PREFIX. Returns the
# taken messages, oldest first, as tag, raw, tag, raw... Its shebang declares it may write, so a full Redis refuses it before it runs rather
# than after a pop.
_TAKE = """#!lua
local suffix = ARGV[6]
give_back(KEYS[4], KEYS[1], KEYS[2], KEYS[3], suffix)
local out = {}
local n = 0
local bytes = 0
local limit = tonumber(ARGV[1])
local budget = tonumber(ARGV[2])
while n < limit and bytes < budget do
  local item = redis.call('RPOP', KEYS[1])
  if not item then break end
  n = n + 1
  bytes = bytes + #item
  local tag = ARGV[4] .. ':' .. n
  local entry, id = kept(item, suffix)
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
_ACK = """#!lua flags=allow-oom
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
_RESTORE = """#!lua flags=allow-oom
return give_back(KEYS[4], KEYS[1], KEYS[2], KEYS[3], ARGV[1])
"""

# The `unacked` entry of a queued message, and back. kombu restores an entry by reading its payload
# as a message of its own shape (it sets headers.redelivered and properties.delivery_info), so a
# message of another shape (not JSON, not ours) is kept wrapped in that shape, its bytes as `body`,
# where kombu can restore it without failing and this module can unwrap it. `give_back` puts a
# group's messages still in `unacked` back at the head of the queue, oldest at the very head, so
# they are taken again first and in order.
_HELPERS = """
local function kept(item, suffix)
  if string.sub(item, 1, 1) == '{' then
    local ok, m = pcall(cjson.decode, item)
    if ok and type(m) == 'table' and type(m.headers) == 'table' and type(m.properties) == 'table'
        and type(m.properties.delivery_info) == 'table' then
      local id = m.headers.id
      if type(id) ~= 'string' then id = nil end
      return '[' .. item .. suffix, id
    end
  end
  local wrapped = {body = item, headers = {}, properties = {delivery_info = {}, userdest_raw = 1}}
  return '[' .. cjson.encode(wrapped) .. suffix, nil
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


def _script(source: str) -> str:
    """`source` with its shebang line first and the helpers above after it."""
    shebang, _, body = source.partition("\n")
    return f"{shebang}\n{_HELPERS}{body}"


class Full(Exception):
    """Redis is at its memory limit: nothing was taken."""


@dataclass(frozen=True, slots=True)
class Taken:
    """One message taken from a queue: its tag in `unacked` and its bytes as queued."""

    tag: str
    raw: bytes


class Drainer:
    """Takes, acknowledges and puts back the messages of one worker process's groups."""

    def __init__(self, client: redis.Redis, visibility_timeout: int) -> None:
        self._client = client
        self._ttl = visibility_timeout * 2
        self._take = client.register_script(_script(_TAKE))
        self._ack = client.register_script(_ACK)
        self._restore = client.register_script(_script(_RESTORE))

    def take(self, queue: str, leader: str, most: int, most_bytes: int) -> list[Taken]:
        """Up to `most` messages (and about `most_bytes`) waiting in `queue`, oldest first; first
        puts back whatever an earlier run of this leader took and never acknowledged."""
        try:
            reply = self._take(
                keys=[queue, UNACKED, UNACKED_INDEX, GROUP_PREFIX + leader],
                args=[
                    most,
                    most_bytes,
                    time.time(),
                    leader,
                    self._ttl,
                    _suffix(queue),
                    GROUP_PREFIX,
                ],
            )
        except redis.exceptions.OutOfMemoryError as exc:
            # Redis is full: take nothing, but do put an earlier run's group back.
            self.restore(queue, leader)
            raise Full(str(exc)) from None
        return [Taken(_text(reply[i]), reply[i + 1]) for i in range(0, len(reply), 2)]

    def ack(self, leader: str, taken: list[Taken]) -> None:
        """Forget the group's messages: their effects are committed."""
        self._ack(keys=[UNACKED, UNACKED_INDEX, GROUP_PREFIX + leader], args=[t.tag for t in taken])

    def restore(self, queue: str, leader: str) -> int:
        """Put the group's messages back at the head of `queue`; how many went back."""
        keys = [queue, UNACKED, UNACKED_INDEX, GROUP_PREFIX + leader]
        return int(self._restore(keys=keys, args=[_suffix(queue)]))


def _suffix(queue: str) -> str:
    """What follows the payload in an `unacked` entry of `queue`: its exchange and routing key.

    userdest declares each queue with an exchange and a routing key of its own name
    (shared/celery_app.py); kombu needs them to find the queue again when it restores.
    """
    name = orjson.dumps(queue).decode()
    return f",{name},{name}]"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class NotOurs(ValueError):
    """A queued message that is not an APPLY_TASK message in Celery's format; `code` says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def task_message(raw: bytes, task_name: str) -> tuple[str | None, Any]:
    """The task id and first argument (the envelope) of a message as kombu queues it."""
    try:
        message = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise NotOurs("not_json", "the queued message is not JSON") from None
    if not isinstance(message, dict) or not isinstance(message.get("headers"), dict):
        raise NotOurs("not_ours", "the queued message is not a Celery task message")
    headers = message["headers"]
    if headers.get("task") != task_name:
        raise NotOurs(
            "not_ours", f"the queued message is for task {str(headers.get('task'))[:100]!r}"
        )
    try:
        body = message["body"]
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = b64decode(body)
        args = orjson.loads(body)[0]
    except (KeyError, TypeError, ValueError):
        raise NotOurs("not_json", "the queued task message's body is not JSON") from None
    try:
        return headers.get("id"), args[0]
    except (IndexError, TypeError, KeyError):
        raise NotOurs("not_ours", "the queued task message has no envelope argument") from None
