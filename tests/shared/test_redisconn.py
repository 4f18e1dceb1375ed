"""One Redis client factory for a redis:// or sentinel:// REDIS_URL; WAIT after a push."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import redis
from redis.sentinel import SentinelConnectionPool
from sqlalchemy import Engine, event, text

from shared.celery_app import make_celery
from shared.db import make_engine
from shared.publish import BrokerUnreplicated, Publisher
from shared.queues import INGEST
from shared.redisconn import Commands, make_redis, sentinel_nodes
from shared.settings import Settings
from tests.support.envelopes import envelope

SENTINELS = "sentinel://:pw@h1:26380;sentinel://h2:26381;sentinel://h3/2"


def test_sentinel_urls_name_every_sentinel_the_database_and_the_master_password() -> None:
    assert sentinel_nodes(SENTINELS) == ([("h1", 26380), ("h2", 26381), ("h3", 26379)], 2, "pw")


def test_a_sentinel_url_gives_a_client_that_asks_the_sentinels_for_the_master() -> None:
    settings = Settings(redis_url=SENTINELS, redis_sentinel_master="main", broker_timeout=1.5)
    client = make_redis(settings)
    pool = client.connection_pool
    assert isinstance(pool, SentinelConnectionPool)
    assert pool.service_name == "main"
    assert pool.connection_kwargs["db"] == 2 and pool.connection_kwargs["password"] == "pw"
    assert pool.connection_kwargs["socket_timeout"] == 1.5


def test_a_plain_url_gives_a_plain_client() -> None:
    client = make_redis(Settings(redis_url="redis://127.0.0.1:6390/3"))
    assert type(client.connection_pool) is redis.ConnectionPool
    assert client.connection_pool.connection_kwargs["db"] == 3


def test_the_workers_transport_knows_the_master_and_the_sentinels_password() -> None:
    settings = Settings(
        redis_url=SENTINELS, redis_sentinel_master="main", redis_sentinel_password="s3"
    )
    options: dict[str, Any] = make_celery(settings).conf.broker_transport_options
    assert options["master_name"] == "main"
    assert options["sentinel_kwargs"]["password"] == "s3"
    assert "master_name" not in make_celery(Settings()).conf.broker_transport_options


def test_every_engine_connects_with_a_timeout_and_keepalives(
    engine: Engine, settings: Settings
) -> None:
    """Its own connect_args add to them, and win where both name one."""
    made = make_engine(settings, connect_args={"connect_timeout": 3, "options": "-c work_mem=8MB"})
    seen: list[dict[str, Any]] = []
    event.listen(made, "do_connect", lambda dialect, rec, cargs, cparams: seen.append(cparams))
    with made.connect() as conn:  # `engine` (the fixture) made the database
        assert conn.scalar(text("SHOW work_mem")) == "8MB"
    made.dispose()
    assert seen[0]["connect_timeout"] == 3
    assert seen[0]["keepalives"] == 1 and seen[0]["keepalives_idle"] == 10


def test_a_push_without_the_replicas_asked_for_is_refused_after_it_lands(
    settings: Settings, redis_client: redis.Redis
) -> None:
    """The test Redis has no replica: WAIT 1 answers 0 once its timeout passes."""
    waiting = dataclasses.replace(settings, redis_wait_replicas=1, redis_wait_timeout_ms=10)
    publisher = Publisher(make_celery(waiting), make_redis(waiting), waiting)
    with pytest.raises(BrokerUnreplicated, match="0 of 1 replicas"):
        publisher.publish(
            envelope(1, [{"type": "track", "event": "e", "userId": "u"}]).to_dict(), INGEST
        )
    assert redis_client.llen(INGEST) == 1  # it may be applied: the sender's retry is deduplicated
    plain = Publisher(make_celery(settings), make_redis(settings), settings)
    plain.publish(envelope(1, [{"type": "track", "event": "e", "userId": "u"}]).to_dict(), INGEST)
    assert redis_client.llen(INGEST) == 2


def test_commands_keep_their_connection_and_take_a_new_one_once_it_drops(
    settings: Settings, redis_client: redis.Redis
) -> None:
    client = make_redis(settings)
    commands = Commands(client)
    assert commands.execute("LPUSH", "commands-test", b"a") == 1
    mine = commands.execute("CLIENT", "ID")
    assert commands.execute("CLIENT", "ID") == mine  # the same connection each time
    redis_client.client_kill_filter(_id=mine)
    # The dropped connection is retried once, on a new one, as make_redis's clients retry.
    assert commands.execute("LPUSH", "commands-test", b"b") == 2
    assert commands.execute("CLIENT", "ID") != mine
    assert redis_client.lrange("commands-test", 0, -1) == [b"b", b"a"]
    client.close()


def test_a_command_that_fails_gives_its_connection_back_closed(settings: Settings) -> None:
    client = make_redis(settings)
    commands = Commands(client)
    commands.execute("SET", "commands-test", "x")
    with pytest.raises(redis.ResponseError):
        commands.execute("LPUSH", "commands-test", b"a")  # the key holds a string
    assert commands.execute("DEL", "commands-test") == 1
    client.close()
    unreachable = make_redis(dataclasses.replace(settings, redis_url="redis://127.0.0.1:1/0"))
    with pytest.raises(redis.ConnectionError):
        Commands(unreachable).execute("LPUSH", "commands-test", b"a")
