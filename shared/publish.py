"""Putting envelopes on a queue, as exactly the message `celery.send_task` would write.

`celery.send_task(APPLY_TASK, args=[envelope], queue=INGEST)` serializes with the standard
library's json and opens a Redis client object per message, several times the cost of the push
itself (docs/receiver.md has the figures). The receiver publishes a few hundred thousand calls a minute, so it builds
the same message itself (shared/wire.py: Celery's own `as_task_v2` makes the task headers and body, so
the task protocol stays Celery's; it does so once per process and queue, into a template whose
slots each message fills: `wire.TaskTemplate`), orjson serializes the envelope once, and one LPUSH on a long-lived
connection pool delivers it. Each envelope is signed on the way (`EnvelopeKeys.seal`, serialized once
with its MAC, the same bytes then go into the message). tests/api/test_publish.py reads such a message back through
kombu and checks it against one written by `send_task`, so an upgrade that changes the format fails
there and not in production. `userdest replay` and `userdest deadletters replay` publish through the
same class, onto the `replay` queue.

The client (shared/redisconn.py) has short socket timeouts (BROKER_TIMEOUT) and retries only a
dropped connection, once, so an unreachable Redis is reported promptly; the LPUSH goes on its
connections through `redisconn.Commands`, without redis-py's per-command pool bookkeeping. With REDIS_WAIT_REPLICAS the
LPUSH is followed by WAIT in the same pipeline, and too few replicas raise BrokerUnreplicated.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import orjson
import redis

from shared import wire
from shared.envelope import EnvelopeKeys
from shared.redisconn import Commands, NotReplicated, check_replicated, wait_command
from shared.settings import Settings

if TYPE_CHECKING:
    from celery import Celery

logger = logging.getLogger(__name__)


class BrokerUnavailable(Exception):
    """Redis did not take the message: nothing of it was enqueued."""


class BrokerUnreplicated(BrokerUnavailable):
    """Redis took the message but fewer replicas than REDIS_WAIT_REPLICAS acknowledged it in time:
    it may well be applied, and a sender's retry of it is deduplicated by its messageId."""


MEMORY_CHECK_SECONDS = 1.0
"""How long one process trusts its last reading of Redis's memory: one INFO a second, not one a
request. Meanwhile it adds what it pushed itself; what other processes push lands in the room
between the high-water mark and maxmemory."""


class HighWater:
    """Whether Redis is past REDIS_HIGH_WATER of its maxmemory (admission control).

    A Redis with noeviction refuses every write once full, and a worker then cannot even move a
    message it takes into kombu's `unacked` hash; so publishers stop at a mark below maxmemory and
    leave the rest to the workers. A Redis without maxmemory is never over the mark.
    """

    def __init__(
        self,
        client: redis.Redis,
        fraction: float,
        ttl: float = MEMORY_CHECK_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._fraction = fraction
        self._ttl = ttl
        self._clock = clock
        self._checked = -math.inf
        self._reading: tuple[int, int] = (0, 0)
        self._pushed = 0
        self._lock = threading.Lock()

    def reading(self) -> tuple[int, int]:
        """(used_memory, maxmemory) as last read, at most `ttl` seconds old; raises RedisError."""
        now = self._clock()
        if now - self._checked >= self._ttl:
            with self._lock:
                if now - self._checked >= self._ttl:
                    info = self._client.info("memory")
                    self._reading = (int(info["used_memory"]), int(info.get("maxmemory") or 0))
                    self._pushed = 0
                    self._checked = now
        used, limit = self._reading
        return used + self._pushed, limit

    def pushed(self, size: int) -> None:
        """Count bytes this process pushed since the last reading."""
        self._pushed += size

    def over(self) -> bool:
        """True where Redis has a maxmemory and uses more than the mark of it."""
        used, limit = self.reading()
        return limit > 0 and used >= limit * self._fraction


class Publisher:
    """Signs envelopes and enqueues them for the APPLY_TASK task on a queue, or raises
    BrokerUnavailable."""

    def __init__(self, celery: Celery, client: redis.Redis, settings: Settings) -> None:
        self._client = client
        self._commands = Commands(client)
        self._settings = settings
        self._keys = EnvelopeKeys.of(settings)
        self._wait = wait_command(settings)
        self._templates = wire.TaskTemplates(celery)

    def message(self, envelope: dict[str, Any], queue: str) -> bytes:
        """The bytes kombu's Redis transport would push for `send_task(APPLY_TASK, [envelope])`,
        the envelope signed with ENVELOPE_SECRET (its `mac` last)."""
        summary = f"[envelope app_id={envelope.get('app_id')} calls={len(envelope['calls'])}]"
        sealed = orjson.Fragment(self._keys.seal(envelope))
        return self._templates.of(queue).encode(sealed, summary, calls=len(envelope["calls"]))

    def publish(self, envelope: dict[str, Any], queue: str) -> int:
        """Returns once Redis has the message, with its size; BrokerUnavailable if it cannot be
        reached."""
        return self.publish_many([envelope], queue)

    def publish_many(self, envelopes: Sequence[dict[str, Any]], queue: str) -> int:
        """One LPUSH of several messages, in order: Redis takes all of them or none. Returns the
        bytes pushed."""
        if not envelopes:
            return 0
        payloads = [self.message(envelope, queue) for envelope in envelopes]
        try:
            if self._wait is None:
                self._commands.execute("LPUSH", queue, *payloads)
            else:
                # WAIT counts the writes of its own connection: both go on one, together.
                answers = self._commands.pipeline(("LPUSH", queue, *payloads), self._wait)
                check_replicated(self._settings, int(answers[-1]))
        except NotReplicated as exc:
            logger.warning(
                "enqueued without replicas",
                extra={"request_id": envelopes[0].get("request_id"), "error": str(exc)},
            )
            raise BrokerUnreplicated(str(exc)) from None
        except redis.RedisError as exc:
            logger.warning(
                "enqueue failed",
                extra={"request_id": envelopes[0].get("request_id"), "error": type(exc).__name__},
            )
            raise BrokerUnavailable(f"{type(exc).__name__}: {exc}") from None
        return sum(len(p) for p in payloads)
