"""The optional per-key rate limit: unit tests on fakeredis, then through receivers on real Redis."""

from __future__ import annotations

import fakeredis
import pytest
import redis

from shared.calls import Refusal
from shared.ratelimit import RateLimiter
from tests.support.receiver import Tenant, basic, jdump

CALL = {"type": "track", "event": "Clicked", "userId": "u1"}


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def allowed(limiter: RateLimiter, key: str = "key_a") -> bool:
    try:
        limiter.check(key)
    except Refusal as exc:
        assert exc.status == 429
        assert exc.code == "rate_limited"
        return False
    return True


@pytest.fixture
def fake() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


def test_off_by_default_and_never_touches_redis():
    unreachable = redis.Redis(port=1, socket_connect_timeout=0.1)
    limiter = RateLimiter(unreachable, per_second=0.0, burst=0, retry_after=5)
    assert not limiter.enabled
    assert all(allowed(limiter) for _ in range(1000))


def test_a_burst_then_429_with_retry_after(fake):
    clock = Clock()
    limiter = RateLimiter(fake, per_second=2.0, burst=3, retry_after=4, clock=clock)
    assert [allowed(limiter) for _ in range(5)] == [True, True, True, False, False]
    with pytest.raises(Refusal) as refused:
        limiter.check("key_a")
    assert refused.value.headers == {"Retry-After": "4", "X-RateLimit-Reset": "4"}


def test_the_burst_defaults_to_one_second_of_the_rate(fake):
    limiter = RateLimiter(fake, per_second=10.0, burst=0, retry_after=1, clock=Clock())
    assert sum(allowed(limiter) for _ in range(50)) == 10


def test_the_rate_is_sustained_over_time(fake):
    # 5 a second, sent 20 a second for 10 seconds: about 50 get through, not 200 and not 10.
    clock = Clock()
    limiter = RateLimiter(fake, per_second=5.0, burst=5, retry_after=1, clock=clock)
    passed = 0
    for _ in range(200):
        passed += allowed(limiter)
        clock.now += 0.05
    assert 45 <= passed <= 60


def test_refused_requests_do_not_count(fake):
    clock = Clock()
    limiter = RateLimiter(fake, per_second=2.0, burst=2, retry_after=1, clock=clock)
    assert sum(allowed(limiter) for _ in range(1000)) == 2
    clock.now += 2.0  # two windows later nothing of the storm is left
    assert [allowed(limiter) for _ in range(3)] == [True, True, False]


def test_keys_are_limited_separately(fake):
    limiter = RateLimiter(fake, per_second=1.0, burst=1, retry_after=1, clock=Clock())
    assert allowed(limiter, "key_a")
    assert not allowed(limiter, "key_a")
    assert allowed(limiter, "key_b")


def test_slow_rates_use_longer_windows(fake):
    clock = Clock()
    limiter = RateLimiter(fake, per_second=0.5, burst=0, retry_after=2, clock=clock)
    assert [allowed(limiter) for _ in range(2)] == [True, False]
    clock.now += 1.0
    assert not allowed(limiter)
    clock.now += 3.0
    assert allowed(limiter)


def test_counters_expire(fake):
    limiter = RateLimiter(fake, per_second=1.0, burst=1, retry_after=1, clock=Clock())
    limiter.check("key_a")
    [key] = fake.keys("userdest:ratelimit:*")
    assert 0 < fake.pttl(key) <= 3000


def test_the_limit_is_shared_by_every_receiver_and_429_is_not_enqueued(
    make_receiver, tenant: Tenant, redis_client: redis.Redis, ingest_queue
):
    first = make_receiver(rate_limit_per_second=0.5, rate_limit_burst=2, retry_after_seconds=9)
    second = make_receiver(rate_limit_per_second=0.5, rate_limit_burst=2, retry_after_seconds=9)
    headers = basic(tenant.api_key)
    assert (
        first.test_client().post("/v1/track", data=jdump(CALL), headers=headers).status_code == 200
    )
    assert (
        second.test_client().post("/v1/track", data=jdump(CALL), headers=headers).status_code == 200
    )
    response = first.test_client().post("/v1/track", data=jdump(CALL), headers=headers)
    assert response.status_code == 429
    assert response.json["code"] == "rate_limited"
    assert response.headers["Retry-After"] == "9"
    assert len(ingest_queue()) == 2
    # Another key of the same app has its own allowance; the body writeKey is limited too.
    _, other = tenant.new_key()
    body = jdump({**CALL, "writeKey": other})
    assert second.test_client().post("/v1/track", data=body).status_code == 200
