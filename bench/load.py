"""The load generator: a few threads, each with its own `http.client` connection, loopback only.

Bodies are encoded before the clock starts, so a phase times HTTP and nothing else. Every thread
takes the next request from one shared list until it is empty or the phase's time is up. gunicorn's
sync workers close the connection after each answer; `http.client` then opens the next one itself,
so a connection is reused only where the server allows it.
"""

from __future__ import annotations

import http.client
import itertools
import math
import threading
import time
from base64 import b64encode
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import orjson

RETRIES_AFTER_DROP = 1
"""A request whose connection was dropped before any answer is sent again this many times."""


@dataclass(frozen=True, slots=True)
class Request:
    path: str
    body: bytes
    calls: int


@dataclass
class PhaseResult:
    requests: int = 0
    calls: int = 0
    """Calls the receiver answered as accepted."""
    errors: dict[str, int] = field(default_factory=dict)
    """Answers other than 200, and requests that failed, by status or exception name."""
    latencies: list[float] = field(default_factory=list)
    """Seconds from sending each accepted request to reading its whole answer."""
    started: float = 0.0
    finished: float = 0.0
    truncated: bool = False
    """The phase's time ran out before every request was sent."""
    sent_at: dict[int, float] = field(default_factory=dict)
    """Wall-clock time each request left, by index, for a paced phase."""

    @property
    def seconds(self) -> float:
        return self.finished - self.started

    def summary(self, unit: str) -> dict[str, Any]:
        """The phase's figures; `unit` names what was counted (calls or events)."""
        rate = self.calls / self.seconds if self.seconds > 0 else 0.0
        return {
            "requests": self.requests,
            unit: self.calls,
            "seconds": round(self.seconds, 3),
            f"{unit}_per_s": round(rate, 1),
            "requests_per_s": round(self.requests / self.seconds, 1) if self.seconds > 0 else 0.0,
            "p50_ms": round(percentile(self.latencies, 0.50) * 1000, 2),
            "p99_ms": round(percentile(self.latencies, 0.99) * 1000, 2),
            "max_ms": round(max(self.latencies, default=0.0) * 1000, 2),
            "errors": dict(self.errors),
            "truncated": self.truncated,
        }


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank percentile: the smallest value with at least q of them at or below it."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def basic_auth(api_key: str) -> str:
    return "Basic " + b64encode(f"{api_key}:".encode()).decode("ascii")


def single_requests(calls: list[dict[str, Any]]) -> list[Request]:
    """One request per call to /v1/<type>, the type given by the path as Segment's HTTP API does."""
    out = []
    for call in calls:
        body = {k: v for k, v in call.items() if k != "type"}
        out.append(Request(f"/v1/{call['type']}", orjson.dumps(body), 1))
    return out


def batch_requests(calls: list[dict[str, Any]], size: int) -> list[Request]:
    return [
        Request("/v1/batch", orjson.dumps({"batch": calls[i : i + size]}), len(calls[i : i + size]))
        for i in range(0, len(calls), size)
    ]


def send(
    url: str,
    api_key: str,
    requests: list[Request],
    clients: int,
    max_seconds: float,
    rate: float | None = None,
) -> PhaseResult:
    """Send `requests` from `clients` threads; stop early, marked truncated, after `max_seconds`.

    With `rate`, request i leaves no earlier than i / rate seconds after the start (an open-loop
    load at that many requests a second), and `sent_at` records when each one left."""
    parts = urlsplit(url)
    if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError(f"the bench sends to the loopback interface only, not {url!r}")
    headers = {"Authorization": basic_auth(api_key), "Content-Type": "application/json"}
    result = PhaseResult()
    lock = threading.Lock()
    taken = itertools.count()  # next() on a count is atomic under the GIL
    stop = threading.Event()
    result.started = time.perf_counter()
    deadline = result.started + max_seconds

    def client() -> None:
        conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
        latencies: list[float] = []
        errors: dict[str, int] = {}
        accepted = sent = 0
        try:
            while True:
                index = next(taken)
                if index >= len(requests) or stop.is_set():
                    break
                if time.perf_counter() > deadline:
                    result.truncated = True
                    break
                if rate is not None:
                    wait = result.started + index / rate - time.perf_counter()
                    if wait > 0:
                        time.sleep(wait)
                    result.sent_at[index] = time.time()
                req = requests[index]
                status, answer, seconds = _post(conn, req, headers)
                sent += 1
                if status == 200:
                    latencies.append(seconds)
                    accepted += _accepted(req, answer)
                else:
                    errors[str(status)] = errors.get(str(status), 0) + 1
        finally:
            conn.close()
            with lock:
                result.requests += sent
                result.calls += accepted
                result.latencies.extend(latencies)
                for name, n in errors.items():
                    result.errors[name] = result.errors.get(name, 0) + n

    threads = [
        threading.Thread(target=client, name=f"bench-client-{i}", daemon=True)
        for i in range(clients)
    ]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            thread.join()
    except BaseException:  # Ctrl-C: the clients stop after the request in hand
        stop.set()
        raise
    result.finished = time.perf_counter()
    return result


def _post(
    conn: http.client.HTTPConnection, req: Request, headers: dict[str, str]
) -> tuple[int | str, bytes, float]:
    """(status or exception name, answer body, seconds) for one request."""
    for attempt in range(RETRIES_AFTER_DROP + 1):
        started = time.perf_counter()
        try:
            conn.request("POST", req.path, req.body, headers)
            answer = conn.getresponse()
            body = answer.read()
            return answer.status, body, time.perf_counter() - started
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
            # A connection the server closed between two requests: reconnect and send again.
            conn.close()
            if attempt == RETRIES_AFTER_DROP:
                return type(exc).__name__, b"", time.perf_counter() - started
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            return type(exc).__name__, b"", time.perf_counter() - started
    raise AssertionError("unreachable")


def _accepted(req: Request, answer: bytes) -> int:
    if req.path != "/v1/batch":
        return req.calls
    try:
        return int(orjson.loads(answer)["accepted"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return 0
