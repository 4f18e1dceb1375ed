"""Apply lag under a steady single-call load: from a call leaving the client to its effects
committed (a lone message is applied within a fraction of a second).

The calls are sent at a fixed rate (open loop), and a poller looks every POLL_SECONDS for the app's
newly committed messageIds; a call's lag is the time it was first seen committed minus the time it
was sent. So a figure includes the receiver's answer time and up to one poll interval: it is an
upper bound of receivedAt to commit.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from sqlalchemy import Engine, text

from bench.load import Request, percentile, send
from shared import dedupe

POLL_SECONDS = 0.05
WINDOW_SECONDS = 2.0
"""How far back each poll looks (processed_at is a transaction's start, not its commit)."""
GRACE_SECONDS = 30.0
"""How long after the last call is sent the poller waits for the accepted calls to be applied."""


def paced_lag(
    url: str,
    engine: Engine,
    api_key: str,
    app_id: int,
    requests: list[Request],
    message_ids: list[str],
    rate: float,
    clients: int,
    max_seconds: float,
) -> dict[str, Any]:
    """Send `requests` (one call each, with `message_ids`) at `rate` a second; the lag figures."""
    seen: dict[str, float] = {}
    sending = threading.Event()
    sending.set()
    # Dedupe records are keyed by a hash of app and messageId (shared/dedupe.py).
    by_key = {dedupe.key(app_id, mid): mid for mid in message_ids}
    query = text("SELECT key FROM processed_messages WHERE processed_at > to_timestamp(:since)")
    expected = {"n": len(requests), "until": float("inf")}

    def poll() -> None:
        since = time.time() - WINDOW_SECONDS
        while sending.is_set() or (len(seen) < expected["n"] and time.time() < expected["until"]):
            now = time.time()
            with engine.connect() as conn:
                for (key,) in conn.execute(query, {"since": since}):
                    if key in by_key:
                        seen.setdefault(by_key[key], now)
            since = now - WINDOW_SECONDS
            time.sleep(POLL_SECONDS)

    poller = threading.Thread(target=poll, name="bench-lag-poller", daemon=True)
    poller.start()
    try:
        phase = send(url, api_key, requests, clients, max_seconds, rate=rate)
    finally:
        # Wait for the calls the receiver accepted, GRACE_SECONDS at most.
        expected.update(n=phase.calls if "phase" in locals() else 0,
                        until=time.time() + GRACE_SECONDS)  # fmt: skip
        sending.clear()
    poller.join(timeout=GRACE_SECONDS + 5)
    lags = [
        seen[mid] - phase.sent_at[i]
        for i, mid in enumerate(message_ids)
        if mid in seen and i in phase.sent_at
    ]
    return {
        "calls": len(requests),
        "rate_per_s": round(rate, 1),
        "sent_per_s": round(phase.requests / phase.seconds, 1) if phase.seconds > 0 else 0.0,
        "applied": len(lags),
        "p50_ms": round(percentile(lags, 0.50) * 1000, 1),
        "p99_ms": round(percentile(lags, 0.99) * 1000, 1),
        "max_ms": round(max(lags, default=0.0) * 1000, 1),
        "errors": dict(phase.errors),
        "mode": f"sent at a fixed rate; lag = first seen committed (polled every "
        f"{POLL_SECONDS * 1000:.0f} ms) minus sent",
    }
