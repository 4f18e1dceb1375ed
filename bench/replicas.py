"""What REDIS_WAIT_REPLICAS=1 costs the receiver: the same single calls sent to a receiver without
WAIT and to one that waits for a replica after each push, against a replica of the bench's Redis
started here on a free port (loopback), in the same run.

The phases run in the order without, with, with, without (ABBA), so a load that grows or falls
during the run (this machine is shared) weighs on both sides alike; each side's rate is its calls
over its seconds, summed over its two phases."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import redis

from bench.load import Request, send
from bench.stack import BenchError, Stack, Target, free_port
from shared.queues import INGEST
from shared.wire import UNACKED

ORDER = ("without", "with", "with", "without")
"""The phases, ABBA; each sends half the calls (the halves alternate, so each side sends both)."""


def _replica(
    server: str, target: Target, directory: str
) -> tuple[subprocess.Popen[bytes], redis.Redis]:
    """A redis-server (the binary `server`) replicating the bench's Redis, once its link is up."""
    master = urlsplit(target.redis_url)
    port = free_port()
    args = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen(  # noqa: S603 (the installed redis-server, our arguments)
        [server, *args, "--dir", directory,
         "--replicaof", master.hostname or "127.0.0.1", str(master.port or 6379)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    if master.password:
        proc.kill()
        raise BenchError("the WAIT phase needs a Redis without a password")
    client = redis.Redis(port=port, socket_timeout=2)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if client.info("replication").get("master_link_status") == "up":
                return proc, client
        except redis.RedisError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise BenchError("the bench's replica did not sync within 30 s")


def _drained(target: Target, max_seconds: float) -> None:
    """Wait until the stack's worker has taken and acknowledged everything the phase queued, so
    the bench leaves no message behind (the calls are applied, or skipped as duplicates)."""
    client = redis.Redis.from_url(target.redis_url, socket_timeout=10)
    try:
        deadline = time.monotonic() + max_seconds
        while client.llen(INGEST) or client.hlen(UNACKED):
            if time.monotonic() > deadline:
                raise BenchError("the WAIT phase's calls were not applied in time")
            time.sleep(0.1)
    finally:
        client.close()


def wait_cost(
    target: Target, api_key: str, requests: list[Request], clients: int, max_seconds: float,
    logs: Path,
) -> dict[str, Any]:  # fmt: skip
    """Single calls per second without WAIT and with REDIS_WAIT_REPLICAS=1, and their ratio."""
    server = shutil.which("redis-server")
    if server is None:
        raise BenchError("the WAIT phase needs redis-server to start a replica")
    with tempfile.TemporaryDirectory(prefix="userdest-bench-replica-") as directory:
        proc, client = _replica(server, target, directory)
        try:
            totals = {"without": [0, 0.0], "with": [0, 0.0]}
            halves = (requests[: len(requests) // 2], requests[len(requests) // 2 :])
            for i, name in enumerate(ORDER):
                env = {"REDIS_WAIT_REPLICAS": "1"} if name == "with" else {}
                part = halves[i % 2]
                with Stack(target, logs / f"wait-{name}-{i}", env=env) as stack:
                    phase = send(stack.url, api_key, part, clients, max_seconds)
                    stack.check_alive()
                    _drained(target, max_seconds)
                if phase.calls < len(part):
                    raise BenchError(f"{len(part) - phase.calls} calls refused {name} WAIT")
                totals[name][0] += phase.calls
                totals[name][1] += phase.seconds
            rates = {k: (n / s if s > 0 else 0.0) for k, (n, s) in totals.items()}
        finally:
            client.close()
            proc.kill()
            proc.wait(timeout=10)
    return {
        "calls": len(requests),
        "without_calls_per_s": round(rates["without"], 1),
        "with_calls_per_s": round(rates["with"], 1),
        "ratio": round(rates["with"] / rates["without"], 3) if rates["without"] else 0.0,
        "replicas": 1,
        "wait_timeout_ms": target.settings().redis_wait_timeout_ms,
    }
