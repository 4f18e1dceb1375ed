"""One typed settings object, built from the environment by `Settings.from_env()`.

Nothing here runs at import time: every entry point builds its own settings, and `verify()` turns a
bad value into one clear line at start-up instead of a traceback on the first request.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from shared.attributes import BUDGET_DEFAULT, CAP_MAX
from shared.queues import QUEUES

SECRET_MIN = 16
"""The shortest ENVELOPE_SECRET (each of its secrets) or SUPPRESSION_SECRET accepted."""


class SettingsError(ValueError):
    """A setting is missing or malformed; the message is one line meant for an operator."""


def _sqlalchemy_url(url: str) -> str:
    """Accept the usual `postgresql://` form and pick the psycopg 3 driver for it.

    libpq's multi-host form `postgresql://u@h1:5432,h2:5432/db`, which SQLAlchemy's URL parser
    cannot read, becomes SQLAlchemy's own `postgresql+psycopg://u@/db?host=h1:5432&host=h2:5432`;
    the other multi-host forms (`?host=h1,h2&port=p1,p2`, `?host=h1:p1&host=h2:p2`) pass as they are.
    """
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            url = "postgresql+psycopg://" + url[len(prefix) :]
    split = urlsplit(url)
    userinfo, _, hosts = split.netloc.rpartition("@")
    if "," not in hosts:
        return url
    query = "&".join([*(f"host={host}" for host in hosts.split(",")), *filter(None, [split.query])])
    netloc = f"{userinfo}@" if userinfo else ""
    return urlunsplit((split.scheme, netloc, split.path, query, split.fragment))


def _port_ok(url: str) -> bool:
    try:
        urlsplit(url).port  # noqa: B018 (urlsplit checks the port only when it is read)
    except ValueError:
        return False
    return True


def _hosts_ok(url: str) -> bool:
    """Every host:port of a (possibly multi-host) DATABASE_URL has a number for a port."""
    split = urlsplit(url)
    hosts = split.netloc.rpartition("@")[2].split(",")
    hosts += [h for key, h in parse_qsl(split.query) if key == "host"]
    ports = [p for key, value in parse_qsl(split.query) if key == "port" for p in value.split(",")]
    # An IPv6 address is bracketed: only what follows "]" can hold a port.
    tails = [host.rpartition("]")[2] for host in hosts]
    ports += [tail.rpartition(":")[2] for tail in tails if ":" in tail]
    return all(p.isdigit() for p in ports if p)


def _redis_url_ok(url: str) -> bool:
    """redis://, rediss:// or unix:// with a numeric port, or one or more sentinel:// parts."""
    if url.startswith("sentinel://"):
        parts = [urlsplit(part.strip()) for part in url.split(";")]
        return all(p.scheme == "sentinel" and p.hostname and _port_ok(p.geturl()) for p in parts)
    return urlsplit(url).scheme in ("redis", "rediss", "unix") and _port_ok(url)


def _redact(url: str) -> str:
    """A URL fit for an error message: any password replaced by ***."""
    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", url)


@dataclass(frozen=True, slots=True)
class Settings:
    """Every knob of userdest, each read from the environment variable of the same name."""

    database_url: str = "postgresql://postgres@127.0.0.1:5432/userdest"
    """DATABASE_URL: the Postgres database, postgresql://user@host:port/db, or several hosts as postgresql://user@h1:5432,h2:5432/db?target_session_attrs=read-write."""
    redis_url: str = "redis://127.0.0.1:6379/0"
    """REDIS_URL: the Redis that carries the queues and the per-key rate-limit counters: redis://host:6379/0, or its Sentinels as sentinel://h1:26379;sentinel://h2:26379;sentinel://h3:26379/0."""
    redis_sentinel_master: str = "userdest"
    """REDIS_SENTINEL_MASTER: the name the Sentinels of a sentinel:// REDIS_URL know the master by."""
    redis_sentinel_password: str = ""
    """REDIS_SENTINEL_PASSWORD: the Sentinels' own password, if they have one (the master's goes in REDIS_URL)."""
    redis_wait_replicas: int = 0
    """REDIS_WAIT_REPLICAS: replicas that must have a message before a sender gets 200 (WAIT; 0 turns it off)."""
    redis_wait_timeout_ms: int = 100
    """REDIS_WAIT_TIMEOUT_MS: how long a push waits for those replicas before the answer is 503."""

    max_call_bytes: int = 32 * 1024
    """MAX_CALL_BYTES: the largest single call accepted, after decompression."""
    max_batch_bytes: int = 500 * 1024
    """MAX_BATCH_BYTES: the largest batch body accepted, after decompression."""
    max_batch_calls: int = 2500
    """MAX_BATCH_CALLS: the most calls one batch may hold."""
    max_depth: int = 64
    """MAX_DEPTH: the deepest JSON nesting accepted."""
    auth_cache_ttl: float = 5.0
    """AUTH_CACHE_TTL: seconds a receiver trusts its cached view of keys and domains (<= 10)."""
    readyz_cache_ttl: float = 1.0
    """READYZ_CACHE_TTL: seconds a receiver answers /readyz from its last check (<= 10; 0 checks each time)."""
    trusted_proxies: int = 0
    """TRUSTED_PROXIES: how many X-Forwarded-For hops to trust when recording the remote address."""
    rate_limit_per_second: float = 0.0
    """RATE_LIMIT_PER_SECOND: requests a key may make a second before 429 (0 turns it off)."""
    rate_limit_burst: int = 0
    """RATE_LIMIT_BURST: requests a key may make at once (0 means one second's worth)."""
    retry_after_seconds: int = 5
    """RETRY_AFTER_SECONDS: what a 503 or 429 answer tells the sender to wait."""
    redis_high_water: float = 0.8
    """REDIS_HIGH_WATER: the fraction of Redis's maxmemory past which receivers answer 503, so workers keep room."""
    auth_lookups_per_second: float = 20.0
    """AUTH_LOOKUPS_PER_SECOND: Postgres look-ups of never-seen keys a receiver process makes a second; past it they get 503."""
    broker_timeout: float = 2.0
    """BROKER_TIMEOUT: seconds the receiver waits for Redis, or for Postgres on a key it has not cached, before answering 503."""

    worker_concurrency: int = 2
    """WORKER_CONCURRENCY: worker processes per `celery worker` (its -c option wins)."""
    worker_prefetch: int = 4
    """WORKER_PREFETCH: messages each worker process reserves ahead."""
    worker_queues: str = "ingest,replay"
    """WORKER_QUEUES: the queues a worker consumes, comma separated (its -Q option wins)."""
    worker_batch_messages: int = 2_000
    """WORKER_BATCH_MESSAGES: the most queued messages a worker process applies in one transaction."""
    worker_batch_calls: int = 2_000
    """WORKER_BATCH_CALLS: a worker stops adding messages to a transaction once they hold this many
    calls."""
    worker_batch_bytes: int = 4_194_304
    """WORKER_BATCH_BYTES: a worker stops adding messages to a transaction past this many bytes."""
    task_max_retries: int = 8
    """TASK_MAX_RETRIES: retries of a transient database failure before a dead letter."""
    task_time_limit: int = 300
    """TASK_TIME_LIMIT: seconds one message may take before its worker process is replaced."""
    visibility_timeout: int = 900
    """VISIBILITY_TIMEOUT: seconds before Redis gives an unacknowledged message to another worker."""
    replay_batch_size: int = 100
    """REPLAY_BATCH_SIZE: calls per queue message that replays make (at most MAX_BATCH_CALLS)."""
    dedupe_days: int = 30
    """DEDUPE_DAYS: how long a messageId is remembered per app."""
    definition_budget: int = BUDGET_DEFAULT
    """DEFINITION_BUDGET: new attribute or event names traffic may define per app and scope in any hour (an app's own budget wins; 0: only operators define)."""
    retention_days: int = 0
    """RETENTION_DAYS: days of events and page views kept, by month of receipt (0 keeps all)."""
    worker_metrics_port: int = 0
    """WORKER_METRICS_PORT: where a worker serves Prometheus metrics (0 turns it off)."""
    admin_port: int = 0
    """ADMIN_PORT: a second port of the receiver for /readyz, /metrics and /openapi.json, which the public port then refuses (0: all on one port)."""

    read_api_port: int = 8001
    """READ_API_PORT: where `make run-readapi` serves the read API (its gunicorn command's --bind wins)."""
    read_rate_limit_per_second: float = 100.0
    """READ_RATE_LIMIT_PER_SECOND: read API requests a read key may make a second before 429 (0 turns it off)."""
    read_statement_timeout_ms: int = 2000
    """READ_STATEMENT_TIMEOUT_MS: the longest a read API query may run before it is cancelled (503; 400 for a filter)."""

    log_level: str = "INFO"
    """LOG_LEVEL: the lowest level logged (DEBUG, INFO, WARNING, ERROR)."""

    envelope_secret: str = field(default="", repr=False)
    """ENVELOPE_SECRET: the key of the MAC every queued message carries; receivers, workers and the CLI share it (required). During a rotation a comma list: the first signs, any verifies."""
    suppression_secret: str = field(default="", repr=False)
    """SUPPRESSION_SECRET: the key of the hashes erased ids are remembered by; workers and the CLI share it (required)."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from `environ` (default `os.environ`); unknown variables are ignored."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = env.get(f.name.upper())
            if raw is None or raw == "":
                continue
            kind: type = type(f.default)
            try:
                values[f.name] = kind(raw.strip())
            except ValueError:
                raise SettingsError(
                    f"{f.name.upper()}={raw!r} is not a valid {kind.__name__}"
                ) from None
        return cls(**values)  # type: ignore[arg-type]

    def verify(self) -> Settings:
        """Check every value; raise SettingsError with one line naming the first bad one."""
        db = urlsplit(self.database_url)
        if (
            db.scheme not in ("postgresql", "postgres", "postgresql+psycopg")
            or not db.path.strip("/")
            or not _hosts_ok(self.database_url)
        ):
            raise SettingsError(
                "DATABASE_URL must look like postgresql://user@host:5432/dbname "
                "(or postgresql://user@h1:5432,h2:5432/dbname?target_session_attrs=read-write), "
                f"got {_redact(self.database_url)!r}"
            )
        if not _redis_url_ok(self.redis_url):
            raise SettingsError(
                "REDIS_URL must look like redis://host:6379/0 or "
                "sentinel://h1:26379;sentinel://h2:26379/0, "
                f"got {_redact(self.redis_url)!r}"
            )
        if self.redis_url.startswith("sentinel://") and not self.redis_sentinel_master:
            raise SettingsError(
                "REDIS_SENTINEL_MASTER must name the master of a sentinel:// REDIS_URL"
            )
        if self.redis_wait_replicas < 0 or self.redis_wait_timeout_ms <= 0:
            raise SettingsError(
                "REDIS_WAIT_REPLICAS must not be negative; REDIS_WAIT_TIMEOUT_MS must be positive"
            )
        for name in ("max_call_bytes", "max_batch_bytes", "max_batch_calls", "max_depth"):
            if getattr(self, name) <= 0:
                raise SettingsError(f"{name.upper()} must be positive")
        if self.retention_days < 0 or self.dedupe_days <= 0:
            raise SettingsError("RETENTION_DAYS must not be negative; DEDUPE_DAYS must be positive")
        if not 0 <= self.definition_budget <= CAP_MAX:
            raise SettingsError(f"DEFINITION_BUDGET must be 0 to {CAP_MAX}")
        if self.replay_batch_size <= 0:
            raise SettingsError("REPLAY_BATCH_SIZE must be positive")
        if min(self.worker_batch_messages, self.worker_batch_calls, self.worker_batch_bytes) <= 0:
            raise SettingsError(
                "WORKER_BATCH_MESSAGES, WORKER_BATCH_CALLS and WORKER_BATCH_BYTES must be positive"
            )
        if not 0 < self.auth_cache_ttl <= 10:
            raise SettingsError("AUTH_CACHE_TTL must be above 0 and at most 10 seconds")
        if not 0 <= self.readyz_cache_ttl <= 10:
            raise SettingsError("READYZ_CACHE_TTL must be 0 to 10 seconds")
        if self.trusted_proxies < 0 or self.rate_limit_per_second < 0 or self.rate_limit_burst < 0:
            raise SettingsError("TRUSTED_PROXIES and RATE_LIMIT_* must not be negative")
        if not 0 < self.redis_high_water <= 1:
            raise SettingsError("REDIS_HIGH_WATER must be above 0 and at most 1")
        if self.auth_lookups_per_second <= 0:
            raise SettingsError("AUTH_LOOKUPS_PER_SECOND must be positive")
        if self.visibility_timeout <= self.task_time_limit:
            raise SettingsError("VISIBILITY_TIMEOUT must be above TASK_TIME_LIMIT")
        unknown = [q for q in self.queues if q not in QUEUES]
        if unknown or not self.queues:
            # A typo must not start a worker on some other queue (Celery would fall back to ingest).
            raise SettingsError(
                f"WORKER_QUEUES={self.worker_queues!r} must name one or more of "
                f"{', '.join(QUEUES)}, comma separated"
                + (f" ({unknown[0]!r} is not a queue)" if unknown else "")
            )
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise SettingsError(
                f"LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got {self.log_level!r}"
            )
        for name in ("envelope_secret", "suppression_secret"):
            if len(getattr(self, name)) < SECRET_MIN:
                raise SettingsError(
                    f"{name.upper()} must be set, at least {SECRET_MIN} characters "
                    "(make run and make test set their own; see docs/security.md)"
                )
        if not self.envelope_secrets or any(len(s) < SECRET_MIN for s in self.envelope_secrets):
            raise SettingsError(
                f"ENVELOPE_SECRET must be one secret, or a comma list of them during a rotation, "
                f"each at least {SECRET_MIN} characters (see docs/security.md)"
            )
        return self

    @property
    def envelope_secrets(self) -> list[str]:
        """ENVELOPE_SECRET's secrets, in order: the first signs envelopes, any of them verifies."""
        return [part.strip() for part in self.envelope_secret.split(",") if part.strip()]

    @property
    def sqlalchemy_url(self) -> str:
        """DATABASE_URL with the psycopg 3 driver named, as SQLAlchemy wants it."""
        return _sqlalchemy_url(self.database_url)

    @property
    def task_soft_time_limit(self) -> int:
        """When a message's task is told to stop: 30 s before TASK_TIME_LIMIT, or at 4/5 of a
        short one (a test's), so that a short limit does not stop every task after one second."""
        return max(1, self.task_time_limit - min(30, self.task_time_limit // 5))

    @property
    def queues(self) -> list[str]:
        return [q.strip() for q in self.worker_queues.split(",") if q.strip()]
