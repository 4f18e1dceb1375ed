"""The least a receiver can do, for `make bench` to measure the real one against: a Flask app that
reads a call's JSON body, pushes it onto a Redis list and answers `{"success": true}`, with
nothing else (no key, no checks, no envelope, no metrics), served by gunicorn exactly as the
receiver is (`api/gunicorn_conf.py`). Its list (`bench:bare`) is no queue a worker reads."""

from __future__ import annotations

import os
from typing import Any

import orjson
import redis
from flask import Flask, Response, request

LIST = "bench:bare"


def create_app() -> Flask:
    app = Flask(__name__)
    client = redis.Redis.from_url(os.environ["REDIS_URL"])

    @app.post("/v1/<kind>")
    def call(kind: str) -> Response:
        body = orjson.loads(request.get_data())
        client.lpush(LIST, orjson.dumps(body))
        return Response(b'{"success":true}', 200, mimetype="application/json")

    @app.get("/healthz")
    def healthz() -> Response:
        return Response(b'{"status":"ok"}', 200, mimetype="application/json")

    return app


ORDER = ("receiver", "bare", "bare", "receiver")
"""The phases, ABBA, each with half the calls, so a changing load weighs on both alike."""


def receiver_to_bare(
    target: Any, api_key: str, requests: list[Any], clients: int, max_seconds: float, logs: Any
) -> dict[str, Any]:
    """Single calls per second of the receiver and of the bare app above, both under gunicorn
    with the shipped settings and without a worker running, and their ratio. What the receiver
    enqueued is then removed from `ingest` (never applied), the bare app's list deleted."""
    from bench.load import send
    from bench.stack import BenchError, Stack
    from shared.queues import INGEST

    totals = {"receiver": [0, 0.0], "bare": [0, 0.0]}
    halves = (requests[: len(requests) // 2], requests[len(requests) // 2 :])
    client = redis.Redis.from_url(target.redis_url)
    try:
        for i, name in enumerate(ORDER):
            app = "bench.bare:create_app()" if name == "bare" else "api:create_app()"
            part = halves[i % 2]
            with Stack(target, logs / f"lean-{name}-{i}", app=app, worker=False) as stack:
                phase = send(stack.url, api_key, part, clients, max_seconds)
                stack.check_alive()
            if phase.calls < len(part):
                raise BenchError(f"{len(part) - phase.calls} calls refused by the {name} app")
            totals[name][0] += phase.calls
            totals[name][1] += phase.seconds
            client.delete(INGEST, LIST)
    finally:
        client.close()
    rates = {k: (n / s if s > 0 else 0.0) for k, (n, s) in totals.items()}
    return {
        "calls": len(requests),
        "receiver_calls_per_s": round(rates["receiver"], 1),
        "bare_calls_per_s": round(rates["bare"], 1),
        "ratio": round(rates["receiver"] / rates["bare"], 3) if rates["bare"] else 0.0,
    }
