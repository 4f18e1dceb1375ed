"""What waits in the Redis queues, read without consuming anything: for `userdest queue stats` and
for the queue gauges of /metrics (one reading for both, so they never disagree).

A queue is kombu's Redis list of that name: publishers LPUSH, workers take from the other end, so
the oldest waiting message is the list's last element. A message delivered to a worker and not yet
acknowledged sits in kombu's `unacked` hash (tag -> [message, exchange, routing key]) and its
`unacked_index` sorted set (tag -> delivery time) until it is acknowledged or, after the visibility
timeout, put back on its queue.

Cost, measured on this machine (a scrape of one receiver process): 0.1 to 4 ms with 100,000
messages waiting and up to 100 unacknowledged; the unacknowledged messages are read whole, about
13 ms a thousand, which is a few milliseconds in normal running (at most workers x concurrency x
prefetch of them).
"""

from __future__ import annotations

import base64
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime

import orjson
import redis

from shared.envelope import Envelope, EnvelopeError
from shared.queues import APPLY_TASK, QUEUES
from shared.timeparse import parse_iso, utcnow

UNACKED = "unacked"
"""kombu's Redis hash of delivered, unacknowledged messages (its `unacked_key`)."""
UNACKED_INDEX = "unacked_index"
"""kombu's sorted set of the same messages' delivery times (its `unacked_index_key`)."""


class MessageError(ValueError):
    """A queued message that is not an APPLY_TASK message carrying an envelope."""


def decode_message(raw: bytes | str) -> Envelope:
    """The envelope inside one message as kombu's Redis transport stores it."""
    try:
        message = orjson.loads(raw)
        headers = message.get("headers") or {}
        if headers.get("task") != APPLY_TASK:
            raise MessageError(f"not a {APPLY_TASK} message")
        body = message["body"]
        if (message.get("properties") or {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = orjson.loads(body)[0]
        return Envelope.from_dict(args[0])
    except MessageError:
        raise
    except EnvelopeError as exc:
        raise MessageError(str(exc)) from None
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, AttributeError, ValueError):
        raise MessageError("not a message kombu wrote") from None


def lag_seconds(envelope: Envelope, now: datetime) -> float | None:
    received = parse_iso(envelope.received_at)
    if received is None:
        return None
    return round(max(0.0, (now - received).total_seconds()), 3)


@dataclass(frozen=True, slots=True)
class QueueState:
    """One queue, at one instant."""

    waiting: int
    unacked: int
    lag_seconds: float | None
    """Age of the oldest waiting message, from its envelope's received_at (None when none waits
    or it cannot be read)."""
    oldest_unacked_seconds: float | None
    """Time since the oldest unacknowledged message was delivered (None when there is none)."""

    def answer(self) -> dict[str, int | float | None]:
        return {
            "waiting": self.waiting,
            "unacked": self.unacked,
            "lag_seconds": self.lag_seconds,
            "oldest_unacked_seconds": self.oldest_unacked_seconds,
        }


def routing_key(value: bytes | str) -> str | None:
    """The queue an `unacked` entry was routed to."""
    try:
        _message, _exchange, key = orjson.loads(value)
    except (orjson.JSONDecodeError, ValueError, TypeError):
        return None
    return str(key)


def _unacked(client: redis.Redis, clock: float) -> tuple[Counter[str], dict[str, float]]:
    """Unacknowledged messages by queue, and the age of each queue's oldest."""
    queue_of: dict[bytes, str] = {}
    for tag, value in client.hscan_iter(UNACKED, count=1000):
        key = routing_key(value)
        if key is not None:
            queue_of[tag] = key
    counts: Counter[str] = Counter(queue_of.values())
    oldest: dict[str, float] = {}
    if queue_of:
        delivered_at: list[tuple[bytes, float]] = client.zrange(  # type: ignore[assignment]
            UNACKED_INDEX, 0, -1, withscores=True
        )
        for tag, delivered in delivered_at:
            queue = queue_of.get(tag)
            if queue is not None and queue not in oldest:
                oldest[queue] = round(max(0.0, clock - float(delivered)), 3)
                if len(oldest) == len(counts):
                    break
    return counts, oldest


def read_queues(client: redis.Redis) -> dict[str, QueueState]:
    """Each queue's state: waiting and unacknowledged messages, and the age of the oldest of each."""
    pipe = client.pipeline(transaction=True)
    for queue in QUEUES:
        pipe.llen(queue)
        pipe.lindex(queue, -1)
    answers = pipe.execute()
    clock, now = time.time(), utcnow()
    unacked, oldest_unacked = _unacked(client, clock)
    states: dict[str, QueueState] = {}
    for position, queue in enumerate(QUEUES):
        waiting, oldest = answers[2 * position], answers[2 * position + 1]
        lag = None
        if oldest is not None:
            try:
                lag = lag_seconds(decode_message(oldest), now)
            except MessageError:
                lag = None
        states[queue] = QueueState(
            waiting=int(waiting),
            unacked=unacked[queue],
            lag_seconds=lag,
            oldest_unacked_seconds=oldest_unacked.get(queue),
        )
    return states
