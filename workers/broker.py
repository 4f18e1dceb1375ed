"""What a worker changes in kombu's Redis transport so that no message and no full Redis kills it.

Two things in kombu 5.7 lose messages, where a worker must survive anything the broker or a
message can do to it:

- Its reader parses a popped message with `json.loads` and hands it on as a message of kombu's
  shape: a message that is not JSON, or not of that shape, raises in the event loop, the worker
  stops with "Unrecoverable error" and the message, already popped, is gone. A message for a task
  that is not ours is discarded by Celery, which logs its whole body first.
- It pops a message (BRPOP), then records it in `unacked` in a second command: against a full
  Redis (`noeviction`) that write fails with OutOfMemoryError, the worker stops, and the popped
  message is gone.

`install(app)` replaces the transport's `loads` with one that turns such a message into an
APPLY_TASK message carrying `{"set_aside": reason, "raw": text}`, which the task keeps as a dead
letter without ever logging its body; and it records a popped message in `unacked` with a script
allowed to run when Redis is full (it adds back little more than the pop freed), and likewise
acknowledges; the other writes a starting worker makes (queue bindings, the sweep's lock) wait
for a Redis with room, and the worker starts. The format it reads and writes is shared/wire.py's.

It also has Celery decode a task's JSON body with orjson, as the worker decodes the messages it
takes behind it (shared/wire.py), rather than with kombu's `json.loads`, which reads `NaN` and
turns objects such as `{"__type__": "datetime", "__value__": …}` into Python objects: every
envelope a worker verifies and applies is then the same object whichever way it came
(docs/security.md).
tests/reliability/test_worker_groups.py runs a real worker against poison messages and a full
Redis, so an upgrade of kombu that changes either fails there.
"""

from __future__ import annotations

import logging
import secrets
import time
from typing import TYPE_CHECKING, Any

import orjson
import redis
from kombu import serialization
from kombu.transport import redis as kombu_redis
from kombu.utils.json import dumps

from shared import wire
from shared.queues import APPLY_TASK, INGEST, QUEUES
from shared.redisconn import make_redis
from shared.settings import Settings
from workers.failures import is_not_primary

if TYPE_CHECKING:
    from celery import Celery

logger = logging.getLogger(__name__)

SET_ASIDE = "set_aside"
"""The key of the envelope that stands for a message set aside; its value is the reason."""
SET_ASIDE_TOKEN = secrets.token_hex(16)
"""Made at import, before the pool forks: what a set-aside envelope carries to show it was made by
this worker's decoder, not written into Redis by someone who wants to pick its dead letters'
reason and app (such a payload is an unsigned envelope like any other)."""

_APPEND = """#!lua flags=allow-oom
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
return 1
"""

_ACK = """#!lua flags=allow-oom
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
"""

_original_loads = kombu_redis.loads
_REFUSED = kombu_redis.redis.exceptions.ResponseError
"""What a Redis that refuses writes raises (OutOfMemoryError, ReadOnlyError and NOREPLICAS are all
ResponseErrors): full, a replica, or short of replicas; the start-up writes below wait for it
instead of stopping the worker."""


def set_aside(raw: bytes | str, reason: str, celery: Celery) -> dict[str, Any]:
    """An APPLY_TASK message, in kombu's shape, standing for a message that cannot be one."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    return wire.task_message(
        celery,
        {SET_ASIDE: reason, "raw": text, "token": SET_ASIDE_TOKEN},
        INGEST,
        f"[set aside: {reason}]",
        exchange=INGEST,
    )


def tolerant_loads(celery: Celery) -> Any:
    def loads(raw: str | bytes) -> Any:
        try:
            message = _original_loads(raw)
        except ValueError:
            return _aside(raw, "not_json", celery)
        if isinstance(message, list) and len(message) == 3 and wire.kombu_shaped(message[0]):
            return message  # an `unacked` entry, read to restore it: [message, exchange, key]
        if not wire.kombu_shaped(message):
            return _aside(raw, "not_ours", celery)
        kept = wire.wrapped_raw(message)  # a foreign message a group took, kept wrapped
        if kept is not None:
            return _aside(kept, "not_ours", celery)
        task = message["headers"].get("task")
        if task is None:  # kombu's own (a control message): not a task
            return message
        if task != APPLY_TASK:
            return _aside(raw, "not_ours", celery)
        try:
            wire.task_body(message)
        except (TypeError, ValueError):
            return _aside(raw, "not_json", celery)
        return message

    return loads


def _aside(raw: str | bytes, reason: str, celery: Celery) -> dict[str, Any]:
    logger.error("message set aside", extra={"reason": reason})
    return set_aside(raw, reason, celery)


def append(self: kombu_redis.QoS, message: Any, delivery_tag: str) -> None:
    """kombu's `QoS.append`, as one script that a full Redis still runs."""
    delivery = message.delivery_info
    entry = dumps([message._raw, delivery["exchange"], delivery["routing_key"]])
    with self.channel.conn_or_acquire() as client:
        client.eval(
            _APPEND, 2, self.unacked_index_key, self.unacked_key, time.time(), delivery_tag, entry
        )
    kombu_redis.virtual.QoS.append(self, message, delivery_tag)


def ack(self: kombu_redis.QoS, delivery_tag: str) -> None:
    """kombu's `QoS.ack` (a MULTI, which a full Redis refuses), as a script it runs; a message
    delivered on a channel closed since (its connection lost in a failover while the message was
    being applied) is acknowledged through a client of its own."""
    if self.channel.connection is None and _detached:
        _detached[0].eval(_ACK, 2, self.unacked_index_key, self.unacked_key, delivery_tag)
    else:
        with self.channel.conn_or_acquire() as client:
            client.eval(_ACK, 2, self.unacked_index_key, self.unacked_key, delivery_tag)
    kombu_redis.virtual.QoS.ack(self, delivery_tag)


_original_size = kombu_redis.Channel._size
_original_queue_bind = kombu_redis.Channel._queue_bind


def size(self: kombu_redis.Channel, queue: str) -> int:
    """kombu's queue length, read in a MULTI that a full Redis refuses: read without one then."""
    try:
        return int(_original_size(self, queue))
    except _REFUSED:
        with self.conn_or_acquire() as client:
            return sum(int(client.llen(self._q_for_pri(queue, p))) for p in self.priority_steps)


def queue_bind(self: kombu_redis.Channel, *args: Any) -> None:
    """kombu records a queue's binding (a write) each time a worker starts; a full Redis keeps
    the one recorded before, and the worker starts."""
    try:
        _original_queue_bind(self, *args)
    except _REFUSED as exc:
        logger.warning(
            "redis refuses writes, keeping the queue bindings it has",
            extra={"error": type(exc).__name__},
        )


_original_restore_visible = kombu_redis.QoS.restore_visible


def restore_visible(self: kombu_redis.QoS, *args: Any, **kwargs: Any) -> None:
    """kombu's sweep of `unacked`, which takes a lock (a write) first: a full Redis skips a round
    (the next comes within a minute) instead of stopping the worker."""
    restore_orphans()
    try:
        _original_restore_visible(self, *args, **kwargs)
    except _REFUSED as exc:
        logger.warning(
            "redis refuses writes, restoring unacknowledged messages later",
            extra={"error": type(exc).__name__},
        )


_original_restore_unacked = kombu_redis.QoS.restore_unacked

_detached: list[redis.Redis] = []
"""The client (one, made at install) for acknowledgements whose channel is gone."""
_orphans: set[bytes] = set()
"""Tags of held messages a closed channel could not hand back."""


def restore_unacked(self: kombu_redis.QoS, client: Any = None) -> Any:
    """kombu's hand-back of the messages a worker holds when its connection closes. On a
    sentinel:// connection lost in a failover it fails (kombu 5.7: the closed channel rebuilds its
    pool from a connection that is gone, AttributeError in `_connparams`) and the worker exits; a
    Redis that cannot be reached fails it too. The messages are still in `unacked`: the worker
    stays up, finishes what it runs, and kombu's sweep restores the rest after VISIBILITY_TIMEOUT."""
    try:
        return _original_restore_unacked(self, client)
    except (AttributeError, kombu_redis.redis.exceptions.RedisError) as exc:
        logger.warning(
            "cannot hand back held messages now, retrying after reconnecting",
            extra={"held": len(self._delivered), "error": type(exc).__name__},
        )
        _orphans.update(str(tag).encode() for tag in self._delivered)
        self._delivered.clear()
        return None


def restore_orphans() -> None:
    """Hand back the messages a closed channel could not (`restore_unacked`), through the
    detached client, once Redis answers again: a message applied meanwhile by this worker is
    delivered again and skipped (its messageId), none waits for VISIBILITY_TIMEOUT."""
    if not _orphans or not _detached:
        return
    tags = sorted(_orphans)
    try:
        restored = wire.restore_unacked(_detached[0], 0, QUEUES, tags=tags)
    except kombu_redis.redis.exceptions.RedisError:
        return  # the next sweep tries again
    _orphans.difference_update(tags)
    logger.warning("held messages handed back", extra={"restored": len(restored)})


_original_brpop_read = kombu_redis.Channel._brpop_read


def brpop_read(self: kombu_redis.Channel, **options: Any) -> Any:
    """BRPOP pops, a write that a replica (READONLY) or a master short of replicas (NOREPLICAS)
    refuses, and kombu stops the worker on it: reported as a lost connection instead, Celery
    reconnects with backoff until a master takes writes."""
    try:
        return _original_brpop_read(self, **options)
    except kombu_redis.redis.exceptions.ResponseError as exc:
        if not is_not_primary(exc):
            raise
        self.client.connection.disconnect()
        raise kombu_redis.redis.exceptions.ConnectionError(f"waiting for a master: {exc}") from None


def strict_json_loads(data: str | bytes) -> Any:
    """Celery's JSON decoder in a worker: orjson's, the parser of every other message."""
    return orjson.loads(data)


def decode_json_with_orjson() -> None:
    """Have kombu (and so Celery, for a task's body) decode `application/json` with orjson;
    encoding stays kombu's."""
    serialization.registry.register("json", dumps, strict_json_loads, "application/json", "utf-8")


def install(celery: Celery, settings: Settings) -> None:
    """Make this process's kombu Redis transport tolerant of poison messages, a full Redis and a
    failover, and its JSON bodies decoded by orjson."""
    _detached[:] = [make_redis(settings)]
    decode_json_with_orjson()
    kombu_redis.QoS.restore_visible = restore_visible  # type: ignore[method-assign]
    kombu_redis.QoS.restore_unacked = restore_unacked  # type: ignore[method-assign]
    kombu_redis.QoS.ack = ack  # type: ignore[method-assign]
    kombu_redis.Channel._size = size  # type: ignore[method-assign]
    kombu_redis.Channel._queue_bind = queue_bind  # type: ignore[method-assign]
    kombu_redis.Channel._brpop_read = brpop_read  # type: ignore[method-assign]
    kombu_redis.loads = tolerant_loads(celery)
    kombu_redis.QoS.append = append  # type: ignore[method-assign]
