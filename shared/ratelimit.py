"""An optional per-key request limit shared by every receiver, kept in Redis (off by default).

A sliding-window counter: the window is the time it takes to earn a full burst
(RATE_LIMIT_BURST / RATE_LIMIT_PER_SECOND seconds), each key counts its requests per window in
Redis, and a request is let through while `previous window x (share of it still in view), rounded
down, + this window` stays within the burst. One round trip per request (INCR, PEXPIRE, GET in one
pipeline), no script, no lock; a refused request is taken back out of the count, so a sender that
keeps trying still gets the configured rate through. Windows follow each receiver's clock, which
NTP keeps close enough for a limit of this kind.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import redis

from shared.calls import Refusal

PREFIX = "userdest:ratelimit:"


class RateLimiter:
    def __init__(
        self,
        client: redis.Redis,
        per_second: float,
        burst: int,
        retry_after: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.enabled = per_second > 0
        self._client = client
        self._capacity = burst if burst > 0 else max(1, math.ceil(per_second))
        self._window = self._capacity / per_second if self.enabled else 1.0
        self._expire_ms = math.ceil(self._window * 2000) + 1000
        self._headers = {"Retry-After": str(retry_after), "X-RateLimit-Reset": str(retry_after)}
        self._clock = clock

    def check(self, key_id: str) -> None:
        """Count one request of `key_id`; 429 with Retry-After where it is over its limit."""
        if not self.enabled:
            return
        position = self._clock() / self._window
        slot = int(position)
        current = f"{PREFIX}{key_id}:{slot}"
        try:
            pipe = self._client.pipeline(transaction=False)
            pipe.incr(current)
            pipe.pexpire(current, self._expire_ms)
            pipe.get(f"{PREFIX}{key_id}:{slot - 1}")
            count, _, previous = pipe.execute()
            estimate = int(int(previous or 0) * (1.0 - (position - slot))) + int(count)
            over = estimate > self._capacity
            if over:
                self._client.decr(current)
        except redis.RedisError:
            # The same Redis carries the queue: nothing could be accepted now anyway.
            raise Refusal(
                503,
                "broker_unavailable",
                "the queue cannot be reached; nothing was accepted, retry later",
                headers={"Retry-After": self._headers["Retry-After"]},
            ) from None
        if over:
            raise Refusal(
                429,
                "rate_limited",
                "too many requests for this API key; retry later",
                headers=self._headers,
            )
