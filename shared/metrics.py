"""Every Prometheus metric of userdest, declared here and nowhere else (STYLE 14).

Receivers run as several gunicorn workers and Celery runs several worker processes, so each process
keeps its own values. When PROMETHEUS_MULTIPROC_DIR names a writable, emptied directory before the
processes start, prometheus_client keeps the values in files there and `render()` sums them; without
it, `render()` shows this process only (fine for one process and for tests). A worker that serves
metrics always has such a directory (workers/start.py).

No label takes a value a sender chooses: endpoints, status codes, reason codes, call types, scopes
and queue names are fixed sets, so no traffic can grow the number of series. The one label an
operator chooses, `app` (an app's name), is capped per process (`AppLabels`). Which attribute a
value was ignored for is in Postgres (`ignored_values`), not in a label.

Two kinds of metric: counters and histograms that processes move as they work (below), and gauges
of state read when Prometheus scrapes (`StateCollector`: queue depths and ages from Redis, open dead
letters from Postgres), so they are right however many processes there are and after any restart.
"""

from __future__ import annotations

import logging
import os
import platform
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from importlib import metadata

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    values,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from shared.queues import QUEUES
from shared.queuestate import QueueState

logger = logging.getLogger(__name__)

_FAST = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_SIZES = (256, 1024, 4096, 16384, 32768, 65536, 131072, 262144, 524288, 1048576)
_LAG = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)

# --- receiver (api/) -----------------------------------------------------------------------------

HTTP_REQUESTS = Counter(
    "userdest_http_requests_total",
    "HTTP requests answered by the receiver, by endpoint and status code.",
    ["endpoint", "status"],
)
HTTP_REQUEST_SECONDS = Histogram(
    "userdest_http_request_duration_seconds",
    "Time from the start of a request to its answer, by endpoint.",
    ["endpoint"],
    buckets=_FAST,
)
HTTP_REQUEST_BYTES = Histogram(
    "userdest_http_request_body_bytes",
    "Request body size after decompression, by endpoint.",
    ["endpoint"],
    buckets=_SIZES,
)
HTTP_ERRORS = Counter(
    "userdest_http_errors_total",
    "Requests refused by the receiver, by stable reason code (invalid_api_key, ...).",
    ["code"],
)
CALLS_ACCEPTED = Counter(
    "userdest_calls_accepted_total",
    "Calls that passed the receiver's checks and were enqueued, by endpoint.",
    ["endpoint"],
)
CALLS_REJECTED = Counter(
    "userdest_calls_rejected_total",
    "Calls that failed a receiver check (first reason of each call), by reason code.",
    ["reason"],
)
APP_CALLS = Counter(
    "userdest_app_calls_total",
    "Calls the receiver took per app: accepted (enqueued) or rejected (a call that failed its "
    "checks: a batch's, kept as a dead letter, or a single call answered 400).",
    ["app", "outcome"],
)
APP_REQUESTS_REFUSED = Counter(
    "userdest_app_requests_refused_total",
    "Requests refused after their key named an app (rate limited, too large, not JSON, a bad "
    "call, Redis unavailable), per app.",
    ["app"],
)
AUTH_LOOKUPS = Counter(
    "userdest_auth_lookups_total",
    "API key look-ups: hit (cached), miss (read from Postgres), stale (Postgres down, cache used), "
    "busy (an unseen key past AUTH_LOOKUPS_PER_SECOND).",
    ["result"],
)

# --- workers (workers/) --------------------------------------------------------------------------

CALLS_APPLIED = Counter(
    "userdest_calls_applied_total",
    "Calls applied to Postgres by the workers, by call type.",
    ["type"],
)
COERCIONS_IGNORED = Counter(
    "userdest_coercions_ignored_total",
    "Values ignored or stored changed, by scope and reason: uncoercible (not convertible to the "
    "attribute's type), truncated (a string stored cut to 255), json_too_long (an object or array "
    "too long for a string attribute, not stored), unknown_choices (a list stored without members "
    "that are not choices) or bad_name (an attribute name out of limits). "
    "Which attribute: `ignored_values` in Postgres.",
    ["scope", "reason"],
)
NAMES_OVER_CAP = Counter(
    "userdest_names_over_cap_total",
    "New attribute or event names ignored because the app reached its cap, by scope.",
    ["scope"],
)
NAMES_OVER_BUDGET = Counter(
    "userdest_names_over_budget_total",
    "New attribute or event names ignored because traffic had spent the app's budget of new names "
    "for the hour (DEFINITION_BUDGET, or the app's own), by scope.",
    ["scope"],
)
DEAD_LETTERS = Counter(
    "userdest_dead_letters_total",
    "Calls stored as dead letters (receiver rejections and worker failures), by reason code.",
    ["reason"],
)
APPLY_LAG_SECONDS = Histogram(
    "userdest_apply_lag_seconds",
    "End-to-end lag, by queue: from a message's receipt (or replay) to its effects committed.",
    ["queue"],
    buckets=_LAG,
)
APPLY_BATCH_SECONDS = Histogram(
    "userdest_apply_batch_seconds",
    "Time a worker takes to apply one group of queued messages in one transaction.",
    buckets=_FAST,
)
GROUP_MESSAGES = Histogram(
    "userdest_group_messages",
    "Queued messages a worker applied together in one transaction.",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500),
)
WORKER_PAUSES = Counter(
    "userdest_worker_pauses_total",
    "Times a worker process paused consuming because Postgres could not be reached.",
)


RETRIES = Counter(
    "userdest_task_retries_total",
    "Messages a worker set aside to retry later (a transient database failure), by queue.",
    ["queue"],
)
DUPLICATES_SKIPPED = Counter(
    "userdest_duplicates_skipped_total",
    "Calls skipped because their messageId was already applied (a redelivery, a client's retry, "
    "a replay), by queue.",
    ["queue"],
)
CALLS_SUPPRESSED = Counter(
    "userdest_calls_suppressed_total",
    "Calls skipped because they name an erased person (a suppressed id, email or phone), by call "
    "type; `userdest messages show` says so for each, `userdest suppressions` lists and lifts.",
    ["type"],
)
CALLS_ROUTED_AWAY = Counter(
    "userdest_calls_routed_away_total",
    "Calls accepted but not applied because their `integrations` turn this destination off "
    "(docs/workers.md, routing), by call type.",
    ["type"],
)


APP_LABELS = 100
"""The most apps one process labels by name; apps it meets after that count under `other`."""
OTHER_APP = "other"


class AppLabels:
    """The `app` label of an app's name: its name for the first `cap` apps this process meets,
    `other` for the rest. App names are made by operators, not senders, and still a deployment
    with thousands of apps must not make thousands of series per process."""

    def __init__(self, cap: int = APP_LABELS) -> None:
        self._cap = cap
        self._named: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, app_name: str) -> str:
        if app_name in self._named:
            return app_name
        with self._lock:
            if len(self._named) < self._cap:
                self._named.add(app_name)
                return app_name
        return OTHER_APP


app_label = AppLabels()
"""This process's app labels (one per process: each process's series are summed by the scrape)."""


def queue_label(name: object) -> str:
    """A queue name fit for a label: one of QUEUES, else `other` (a label never grows)."""
    return name if isinstance(name, str) and name in QUEUES else "other"


def prime_worker_series() -> None:
    """Create the worker series whose labels are known ahead at zero, so that dashboards, alerts
    and `rate()` see them before the first retry or duplicate (and multiprocess mode lists them)."""
    for queue in QUEUES:
        RETRIES.labels(queue)
        DUPLICATES_SKIPPED.labels(queue)
        APPLY_LAG_SECONDS.labels(queue)


# --- read when scraped -----------------------------------------------------------------------------


class StateCollector(Collector):
    """Gauges read from Redis and Postgres at scrape time, kept for `ttl` seconds so that frequent
    scrapes of many processes cost the stores little. A store that does not answer leaves its
    gauges out and reports `userdest_scrape_source_up{source} 0`."""

    def __init__(
        self,
        read_queues: Callable[[], Mapping[str, QueueState]],
        read_dead_letters: Callable[[], Mapping[str, int]],
        ttl: float = 5.0,
        read_redis_memory: Callable[[], Mapping[str, int]] | None = None,
        read_maintenance: Callable[[], Mapping[str, float | None]] | None = None,
    ) -> None:
        self._readers: dict[str, Callable[[], Mapping[str, object]]] = {
            "redis": read_queues,
            "postgres": read_dead_letters,
        }
        if read_redis_memory is not None:
            self._readers["redis_memory"] = read_redis_memory
        if read_maintenance is not None:
            self._readers["maintenance"] = read_maintenance
        self._ttl = ttl
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, Mapping[str, object] | None]] = {}

    def _read(self, source: str) -> Mapping[str, object] | None:
        with self._lock:
            at, value = self._cache.get(source, (float("-inf"), None))
            if time.monotonic() - at < self._ttl:
                return value
            try:
                value = self._readers[source]()
            except Exception as exc:  # a scrape must answer whatever a store does
                logger.warning(
                    "metrics source unreadable",
                    extra={"source": source, "error": type(exc).__name__},
                )
                value = None
            self._cache[source] = (time.monotonic(), value)
            return value

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily(
            "userdest_scrape_source_up",
            "Whether the last read of a store for the gauges below answered (1) or not (0).",
            labels=["source"],
        )
        queues = self._read("redis")
        up.add_metric(["redis"], 0 if queues is None else 1)
        if queues is not None:
            families = {
                "waiting": GaugeMetricFamily(
                    "userdest_queue_waiting_messages",
                    "Messages waiting in a queue (the Redis list's length).",
                    labels=["queue"],
                ),
                "unacked": GaugeMetricFamily(
                    "userdest_queue_unacked_messages",
                    "Messages of a queue delivered to a worker and not yet acknowledged.",
                    labels=["queue"],
                ),
                "lag_seconds": GaugeMetricFamily(
                    "userdest_queue_lag_seconds",
                    "Age of a queue's oldest waiting message, from its receipt (0 when empty).",
                    labels=["queue"],
                ),
                "oldest_unacked_seconds": GaugeMetricFamily(
                    "userdest_queue_oldest_unacked_seconds",
                    "Time since a queue's oldest unacknowledged message was delivered (0 if none).",
                    labels=["queue"],
                ),
            }
            for name, state in queues.items():
                for field, family in families.items():
                    family.add_metric([queue_label(name)], getattr(state, field) or 0.0)
            yield from families.values()
        letters = self._read("postgres")
        up.add_metric(["postgres"], 0 if letters is None else 1)
        if letters is not None:
            open_letters = GaugeMetricFamily(
                "userdest_dead_letters_open",
                "Dead letters not replayed, by reason code.",
                labels=["reason"],
            )
            for reason, count in sorted(letters.items()):
                open_letters.add_metric([reason], float(count))  # type: ignore[arg-type]
            yield open_letters
        if "redis_memory" in self._readers:
            memory = self._read("redis_memory")
            up.add_metric(["redis_memory"], 0 if memory is None else 1)
            if memory is not None:
                yield from _memory_families(memory)
        if "maintenance" in self._readers:
            maintenance = self._read("maintenance")
            up.add_metric(["maintenance"], 0 if maintenance is None else 1)
            if maintenance is not None:
                yield _maintenance_family(maintenance)
        yield up


def _memory_families(memory: Mapping[str, object]) -> Iterator[GaugeMetricFamily]:
    """Redis's memory as INFO reports it, so an alert fires before the receivers' high-water mark
    (REDIS_HIGH_WATER of maxmemory) turns calls away."""
    yield GaugeMetricFamily(
        "userdest_redis_used_memory_bytes",
        "Memory the Redis of REDIS_URL uses (INFO memory used_memory).",
        value=float(memory["used_memory"]),  # type: ignore[arg-type]
    )
    yield GaugeMetricFamily(
        "userdest_redis_maxmemory_bytes",
        "The memory limit of the Redis of REDIS_URL (INFO memory maxmemory; 0: none).",
        value=float(memory["maxmemory"]),  # type: ignore[arg-type]
    )


def _maintenance_family(maintenance: Mapping[str, object]) -> GaugeMetricFamily:
    """When the newest `userdest maintenance run` finished (no sample until one has)."""
    family = GaugeMetricFamily(
        "userdest_maintenance_last_success_timestamp_seconds",
        "When the newest maintenance run finished its work, in seconds since the epoch.",
    )
    finished = maintenance.get("finished_at")
    if finished is not None:
        family.add_metric([], float(finished))  # type: ignore[arg-type]
    return family


class BuildInfo(Collector):
    """`userdest_build_info{version, python} 1`: which release a process runs."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            version = metadata.version("userdest")
        except metadata.PackageNotFoundError:
            version = "unknown"
        info = GaugeMetricFamily(
            "userdest_build_info",
            "Always 1; the labels say which userdest and Python a process runs.",
            labels=["version", "python"],
        )
        info.add_metric([version, platform.python_version()], 1)
        yield info


class _Chain(Collector):
    def __init__(self, collectors: Iterable[Collector]) -> None:
        self._collectors = list(collectors)

    def collect(self) -> Iterator[object]:  # type: ignore[override]
        for collector in self._collectors:
            yield from collector.collect()


def multiprocess() -> bool:
    """Whether this process counts into PROMETHEUS_MULTIPROC_DIR (chosen when prometheus_client
    was first imported)."""
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR")) and (
        values.ValueClass is not values.MutexValue
    )


def registry(extra: Iterable[Collector] = ()) -> CollectorRegistry:
    """The registry to scrape: every process's values in multiprocess mode, else this process's;
    then build info and any `extra` collectors."""
    collected = CollectorRegistry(auto_describe=False)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(collected)
    else:
        collected.register(_Chain([REGISTRY]))
    collected.register(BuildInfo())
    for collector in extra:
        collected.register(collector)
    return collected


def render(extra: Iterable[Collector] = ()) -> tuple[bytes, str]:
    """The Prometheus text exposition of `registry(extra)` and its content type."""
    return generate_latest(registry(extra)), CONTENT_TYPE_LATEST
