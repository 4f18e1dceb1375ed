"""The receiver's publisher: shared/publish.py's, answering 503 when Redis cannot take a message.

The message format and why the receiver builds it itself are described in shared/publish.py.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from redis import Redis

from shared import publish
from shared.calls import Refusal
from shared.publish import BrokerUnavailable, make_redis

__all__ = ["Publisher", "make_redis"]


class Publisher(publish.Publisher):
    """Enqueues envelopes for the APPLY_TASK task on a queue, or raises Refusal 503."""

    def __init__(self, celery: Celery, client: Redis, retry_after: int) -> None:
        super().__init__(celery, client)
        self._retry_after = {"Retry-After": str(retry_after)}

    def publish(self, envelope: dict[str, Any], queue: str) -> None:
        """Returns once Redis has the message; 503 broker_unavailable if it cannot be reached."""
        try:
            super().publish(envelope, queue)
        except BrokerUnavailable:
            raise Refusal(
                503,
                "broker_unavailable",
                "the queue cannot be reached; nothing was accepted, retry later",
                headers=self._retry_after,
            ) from None
