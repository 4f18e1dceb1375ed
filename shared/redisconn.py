"""Every Redis client of userdest comes from here: one plain `redis://` URL, or Redis Sentinel.

REDIS_URL names either one Redis (`redis://host:6379/0`) or the Sentinels that watch a master, in
kombu's own form `sentinel://h1:26379;sentinel://h2:26379;sentinel://h3:26379/0`, with the master's
name in REDIS_SENTINEL_MASTER. With Sentinels, redis-py's `Sentinel.master_for` asks them for the
master on every new connection, so a client follows a failover by itself; the workers' Celery app
hands the same URL and options to kombu's `sentinel://` transport (shared/celery_app.py).

REDIS_WAIT_REPLICAS makes a write that answers a sender wait for that many replicas (`replicated`).
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import unquote, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

from shared.settings import Settings

SENTINEL_PORT = 26379


def sentinel_nodes(url: str) -> tuple[list[tuple[str, int]], int, str | None]:
    """The (host, port) of each Sentinel in a `sentinel://...;sentinel://.../db` URL, the database
    number (from the last part, as kombu reads it) and the master's password, if one part has it."""
    nodes: list[tuple[str, int]] = []
    db, password = 0, None
    for part in url.split(";"):
        split = urlsplit(part.strip())
        if split.scheme != "sentinel" or not split.hostname:
            raise ValueError(f"not a sentinel:// address: {part!r}")
        nodes.append((split.hostname, split.port or SENTINEL_PORT))
        if split.password:
            password = unquote(split.password)
        if split.path.strip("/"):
            db = int(split.path.strip("/"))
    return nodes, db, password


def is_sentinel(url: str) -> bool:
    return url.startswith("sentinel://")


def sentinel_kwargs(settings: Settings) -> dict[str, Any]:
    """How to talk to the Sentinels themselves (redis-py's and kombu's `sentinel_kwargs`)."""
    return {
        "socket_timeout": settings.broker_timeout,
        "socket_connect_timeout": settings.broker_timeout,
        "password": settings.redis_sentinel_password or None,
    }


def make_redis(settings: Settings, read_timeout: float | None = None) -> redis.Redis:
    """A Redis client with bounded waits (BROKER_TIMEOUT, or `read_timeout` for answers that may
    be large) and one retry of a dropped connection; through the Sentinels when REDIS_URL names
    them."""
    options: dict[str, Any] = {
        "socket_timeout": read_timeout or settings.broker_timeout,
        "socket_connect_timeout": settings.broker_timeout,
        "retry": Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
        "health_check_interval": 30,
    }
    if not is_sentinel(settings.redis_url):
        return redis.Redis.from_url(settings.redis_url, **options)
    nodes, db, password = sentinel_nodes(settings.redis_url)
    sentinel = Sentinel(nodes, sentinel_kwargs=sentinel_kwargs(settings))
    return sentinel.master_for(settings.redis_sentinel_master, db=db, password=password, **options)


class Commands:
    """Single commands on connections of `client`'s pool that it keeps between calls.

    redis-py's own path for one command (`client.lpush`) checks a connection out of its pool and
    back under a lock, polls the socket for stray data on each check-out and records observability
    figures: on the receiver's hot path that cost more CPU than sending the command and reading
    its answer (docs/receiver.md). Here a connection is taken from this object's own list (from
    the pool once, where the list is empty) and the command goes through the connection's
    methods, so its timeouts, health check (`health_check_interval`), retry policy (`make_redis`:
    one retry of a dropped connection, on a new one) and, through Sentinels, the master's address
    are the client's. A connection that fails in any way is disconnected and returned to the pool,
    so none is kept with an answer half read.
    """

    def __init__(self, client: redis.Redis) -> None:
        self._pool = client.connection_pool
        self._idle: list[Any] = []
        self._pid = os.getpid()

    def execute(self, *args: Any) -> Any:
        """The answer to one command, as the connection's parser reads it; raises RedisError."""
        return self.pipeline(args)[0]

    def pipeline(self, *commands: tuple[Any, ...]) -> list[Any]:
        """The answers to `commands`, sent together on one connection (so that a WAIT among them
        counts the writes before it); raises RedisError at the first error answer."""
        if self._pid != os.getpid():  # a forked child: the parent's sockets are not its own
            self._idle, self._pid = [], os.getpid()
        try:
            conn = self._idle.pop()
        except IndexError:
            conn = self._pool.get_connection()
        try:
            packed = conn.pack_commands(commands)
            answers = conn.retry.call_with_retry(
                lambda: _send(conn, packed, len(commands)), lambda _error: conn.disconnect()
            )
        except BaseException:
            conn.disconnect()
            self._pool.release(conn)
            raise
        self._idle.append(conn)
        return answers


def _send(conn: Any, packed: Any, count: int) -> list[Any]:
    conn.send_packed_command(packed)
    return [conn.read_response() for _ in range(count)]


class NotReplicated(redis.RedisError):
    """Fewer replicas than REDIS_WAIT_REPLICAS acknowledged a write in REDIS_WAIT_TIMEOUT_MS: the
    write may still be on the master, but a failover now could lose it."""


def wait_command(settings: Settings) -> tuple[Any, ...] | None:
    """The WAIT to send after a write on the same connection, or None where it is off."""
    if settings.redis_wait_replicas <= 0:
        return None
    return ("WAIT", settings.redis_wait_replicas, settings.redis_wait_timeout_ms)


def check_replicated(settings: Settings, acknowledged: int) -> None:
    """Raise NotReplicated unless WAIT's answer reaches REDIS_WAIT_REPLICAS."""
    if acknowledged < settings.redis_wait_replicas:
        raise NotReplicated(
            f"{acknowledged} of {settings.redis_wait_replicas} replicas acknowledged "
            f"within {settings.redis_wait_timeout_ms} ms"
        )


def replicated(client: redis.Redis, settings: Settings) -> None:
    """After writes made by this thread through `client`: wait for REDIS_WAIT_REPLICAS replicas,
    or raise NotReplicated. WAIT counts the writes of its own connection; redis-py's pool hands a
    thread back the connection it last returned (last in, first out), so a single-threaded caller
    (the CLI) waits on the connection that wrote. The receiver, which has threads, puts WAIT in the
    pipeline of its push instead (shared/publish.py)."""
    command = wait_command(settings)
    if command is not None:
        check_replicated(settings, int(client.execute_command(*command)))
