"""Every Prometheus metric of userdest, declared here and nowhere else (STYLE 14).

Receivers run as several gunicorn workers and Celery runs several worker processes, so each process
keeps its own values. When PROMETHEUS_MULTIPROC_DIR names a writable, emptied directory before the
processes start, prometheus_client keeps the values in files there and `render()` sums them; without
it, `render()` shows this process only (fine for one process and for tests).

Label values must stay few: endpoints, status codes, reason codes, call types and scopes are fixed
sets. `attribute` on COERCIONS_IGNORED is the one label fed by traffic; it is bounded by the per-app
cap on attribute definitions (SPEC 2).
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

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
CALLS_ROUTED_AWAY = Counter(
    "userdest_calls_routed_away_total",
    "Calls accepted but not applied because their `integrations` turned this destination off.",
    ["type"],
)
COERCIONS_IGNORED = Counter(
    "userdest_coercions_ignored_total",
    "Values ignored because they could not be converted to their attribute's type.",
    ["scope", "attribute"],
)
NAMES_OVER_CAP = Counter(
    "userdest_names_over_cap_total",
    "New attribute or event names ignored because the app reached its cap, by scope.",
    ["scope"],
)
DEAD_LETTERS = Counter(
    "userdest_dead_letters_total",
    "Calls stored as dead letters (receiver rejections and worker failures), by reason code.",
    ["reason"],
)
APPLY_LAG_SECONDS = Histogram(
    "userdest_apply_lag_seconds",
    "End-to-end lag: from a call's receivedAt at the receiver to its effects committed.",
    buckets=_LAG,
)
APPLY_BATCH_SECONDS = Histogram(
    "userdest_apply_batch_seconds",
    "Time a worker takes to apply one queued message (one request's calls).",
    buckets=_FAST,
)


def registry() -> CollectorRegistry:
    """The registry to scrape: every process's values in multiprocess mode, else this process's."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        collected = CollectorRegistry()
        MultiProcessCollector(collected)
        return collected
    return REGISTRY


def render() -> tuple[bytes, str]:
    """The Prometheus text exposition of `registry()` and its content type."""
    return generate_latest(registry()), CONTENT_TYPE_LATEST
