"""`python -m bench --quick`: the whole bench, end to end, on a database and Redis of this run's own.

The bench drops and recreates its database and flushes its Redis database, so this test gives it
names no concurrent `make bench` uses: a database named after this process and the test run's own
Redis database number. It checks that every figure is there and positive, never how fast anything is.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import redis

from shared.settings import Settings
from tests.support.db import ADMIN_URL

ROOT = Path(__file__).resolve().parents[2]
FIGURES = (
    "receiver_single_calls_per_s",
    "receiver_single_p50_ms",
    "receiver_single_p99_ms",
    "receiver_batch_events_per_s",
    "receiver_batch_p50_ms",
    "receiver_batch_p99_ms",
    "end_to_end_events_per_s",
    "redis_single_pushes_per_s",
    "redis_batch_pushes_per_s",
    "redis_batch_events_per_s",
    "postgres_rows_per_s",
    "baseline_calls_per_s",
    "receiver_single_to_redis",
    "receiver_batch_to_redis",
    "end_to_end_to_postgres",
    "end_to_end_to_baseline",
    "drain_single_calls_per_s",
    "drain_batch_calls_per_s",
    "drain_single_to_batch",
    "drain_batch_to_postgres",
    "receiver_wait_to_no_wait",
    "receiver_to_bare_flask",
    "apply_lag_p99_ms",
)


def run_bench(
    args: list[str], env: dict[str, str], timeout: float
) -> subprocess.CompletedProcess[str]:
    """`python -m bench ARGS`; past `timeout` it gets SIGTERM, which it answers by stopping the
    receiver and worker it started (a SIGKILL would leave them running, draining other tests'
    queues), and only then, if need be, SIGKILL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench", *args],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            stdout, stderr = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
        raise AssertionError(f"the bench took over {timeout} s:\n{stdout}{stderr}") from None
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def test_quick_bench_writes_every_figure(
    settings: Settings, redis_client: redis.Redis, tmp_path: Path
) -> None:
    database = f"userdest_bench_smoke_{os.getpid()}"
    out = tmp_path / "latest.json"
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "BENCH_DATABASE": database,
        "BENCH_REDIS_DB": urlsplit(settings.redis_url).path.strip("/"),
    }
    try:
        result = run_bench(["--quick", "--out", str(out)], env, timeout=180)
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    assert result.returncode == 0, result.stdout + result.stderr
    assert "end to end" in result.stdout  # the summary was printed

    report = json.loads(out.read_text())
    assert report["problems"] == []
    for name in FIGURES:
        value = report["figures"].get(name)
        assert isinstance(value, int | float) and value > 0, f"{name} = {value!r}"
    assert set(report["figure_meanings"]) == set(report["figures"])

    params = report["parameters"]
    assert params["quick"] is True and params["database"] == database
    assert report["seed"] == params["seed"]
    assert report["end_to_end"]["events"] == params["single_calls"] + params["batch_events"]
    assert report["end_to_end"]["dead_letters"] == 0
    assert report["baseline"]["applied"] == params["baseline_calls"]
    machine = report["machine"]
    assert machine["nproc"] >= 1 and machine["python"] and machine["postgres"] and machine["redis"]
    assert all(machine["packages"].values())
    assert (tmp_path / "logs" / "worker.log").exists()

    # The queue was drained and the scratch list removed.
    assert redis_client.llen("ingest") == 0 and not redis_client.exists("bench:scratch")
