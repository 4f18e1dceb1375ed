"""The receiver's publisher: shared/publish.py's, answering 503 when Redis cannot take a message
or is past its high-water mark (admission control).

The message format and why the receiver builds it itself are described in shared/publish.py.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from redis import Redis, RedisError

from shared import publish
from shared.calls import Refusal
from shared.publish import BrokerUnavailable, BrokerUnreplicated, HighWater
from shared.redisconn import make_redis
from shared.settings import Settings

__all__ = ["HighWater", "Publisher", "make_redis"]


class Publisher(publish.Publisher):
    """Signs envelopes and enqueues them for the APPLY_TASK task on a queue, or raises Refusal
    503."""

    def __init__(
        self,
        celery: Celery,
        client: Redis,
        retry_after: int,
        high_water: HighWater,
        settings: Settings,
    ) -> None:
        super().__init__(celery, client, settings)
        self._retry_after = {"Retry-After": str(retry_after)}
        self.high_water = high_water

    def publish(self, envelope: dict[str, Any], queue: str) -> int:
        """Returns once Redis has the message; 503 broker_unavailable if it cannot be reached,
        503 broker_full where it is past its high-water mark, 503 broker_unreplicated where fewer
        than REDIS_WAIT_REPLICAS replicas confirmed it."""
        try:
            full = self.high_water.over()
        except RedisError:
            full = None
        if full:
            raise Refusal(
                503,
                "broker_full",
                "the queue is near its memory limit; nothing was accepted, retry later",
                headers=self._retry_after,
            )
        try:
            if full is None:
                raise BrokerUnavailable("Redis did not answer INFO")
            size = super().publish(envelope, queue)
        except BrokerUnreplicated:
            raise Refusal(
                503,
                "broker_unreplicated",
                "the queue's replicas did not confirm the calls in time; they may be accepted "
                "already: retry with the same messageIds, which are applied once",
                headers=self._retry_after,
            ) from None
        except BrokerUnavailable:
            raise Refusal(
                503,
                "broker_unavailable",
                "the queue cannot be reached; nothing was accepted, retry later",
                headers=self._retry_after,
            ) from None
        self.high_water.pushed(size)
        return size
