"""What a run writes: `bench-results/latest.json` and a summary printed with rich."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

import orjson
import psycopg
import redis
from rich.console import Console
from rich.table import Table

PACKAGES = ("flask", "gunicorn", "celery", "kombu", "redis", "sqlalchemy", "psycopg", "orjson")

FIGURES: dict[str, str] = {
    "receiver_single_calls_per_s": "single calls accepted per second (HTTP 200)",
    "receiver_single_p50_ms": "single call latency, median",
    "receiver_single_p99_ms": "single call latency, 99th percentile",
    "receiver_batch_events_per_s": "calls accepted per second in batches of 100",
    "receiver_batch_p50_ms": "batch request latency, median",
    "receiver_batch_p99_ms": "batch request latency, 99th percentile",
    "end_to_end_events_per_s": "calls per second, first request to last call applied",
    "redis_single_pushes_per_s": "LPUSH/s of the single-call messages, unpipelined",
    "redis_batch_pushes_per_s": "LPUSH/s of the batch messages, unpipelined",
    "redis_batch_events_per_s": "calls/s those batch pushes carry",
    "postgres_rows_per_s": "rows/s, plain 100-row INSERTs of the run's calls",
    "baseline_calls_per_s": "calls/s, apply_messages, one call per transaction",
    "receiver_single_to_redis": "receiver single calls/s ÷ Redis single pushes/s",
    "receiver_batch_to_redis": "receiver batch calls/s ÷ Redis batch calls/s",
    "end_to_end_to_postgres": "end to end calls/s ÷ Postgres rows/s",
    "end_to_end_to_baseline": "end to end calls/s ÷ baseline calls/s",
    "drain_single_calls_per_s": "calls/s a worker drains from a backlog of one-call messages",
    "drain_batch_calls_per_s": "calls/s a worker drains from a backlog of the same calls in 100s",
    "drain_single_to_batch": "one-call drain ÷ batch drain (target >= 0.5)",
    "receiver_wait_to_no_wait": "single calls/s with REDIS_WAIT_REPLICAS=1 ÷ without, same run (target >= 0.85)",
    "receiver_to_bare_flask": "single calls/s of the receiver ÷ a bare Flask JSON→LPUSH app, same gunicorn settings, same run (target >= 0.9)",
    "drain_batch_to_postgres": "batch drain ÷ Postgres rows/s (target >= 0.09)",
    "apply_lag_p99_ms": "sent to committed, 99th percentile, single calls at half the receiver's "
    "rate (target <= 1000)",
}
"""Every headline figure, flat under `figures` in the JSON, with what it is."""


def machine(database_url: str, client: redis.Redis) -> dict[str, Any]:
    """Where the run happened: cores, memory, Python, the servers' and packages' versions."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    info = client.info("server")
    return {
        "nproc": os.cpu_count(),
        "cpu": _cpu_model(),
        "memory_gib": _memory_gib(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "postgres": row[0] if row else None,
        "redis": info.get("redis_version"),
        "packages": {name: _version(name) for name in PACKAGES},
    }


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def ratio(part: float, whole: float) -> float:
    return round(part / whole, 3) if whole > 0 else 0.0


def write(report: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")
    tmp.replace(path)


def print_summary(report: dict[str, Any], console: Console) -> None:
    p, f = report["parameters"], report["figures"]
    rcv, e2e, ceil, base = (
        report["receiver"],
        report["end_to_end"],
        report["ceilings"],
        report["baseline"],
    )
    table = Table(
        title=(
            f"userdest bench, {report['started_at'][:19]}Z, seed {report['seed']}: "
            f"{p['users']:,} users, {p['single_calls']:,} single calls, "
            f"{p['batch_events']:,} calls in batches of {p['batch_size']}"
        ),
        title_justify="left",
    )
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("what")

    def row(name: str, value: str, what: str) -> None:
        table.add_row(name, value, what)

    single, batch = rcv["single"], rcv["batch"]
    row("receiver, single", f"{f['receiver_single_calls_per_s']:,.0f} calls/s",
        f"p50 {single['p50_ms']:.1f} ms, p99 {single['p99_ms']:.1f} ms, "
        f"{p['clients']} clients, {single['seconds']:.1f} s")  # fmt: skip
    row("receiver, batches", f"{f['receiver_batch_events_per_s']:,.0f} calls/s",
        f"p50 {batch['p50_ms']:.1f} ms, p99 {batch['p99_ms']:.1f} ms per batch, "
        f"{batch['seconds']:.1f} s")  # fmt: skip
    row("end to end", f"{f['end_to_end_events_per_s']:,.0f} calls/s",
        f"{e2e['events']:,} calls applied in {e2e['seconds']:.1f} s; "
        f"{e2e['backlog_messages_after_send']:,} messages queued when sending ended")  # fmt: skip
    split = e2e.get("split")
    if split:
        row("  of which", f"{split['single_calls_per_s']:,.0f} calls/s",
            f"single calls, applied {split['single_calls_applied_s']:.1f} s after the first "
            f"request; then batches at {split['batch_calls_per_s'] or 0:,.0f} calls/s for "
            f"{split['then_batch_calls_applied_s']:.1f} s")  # fmt: skip
    redis_ = ceil["redis"]
    row("Redis ceiling, single", f"{f['redis_single_pushes_per_s']:,.0f} pushes/s",
        f"unpipelined; pipelined {redis_['single_pipelined']['pushes_per_s']:,.0f}/s; "
        f"{redis_['single']['mean_message_bytes']:,} B each")  # fmt: skip
    row("Redis ceiling, batches", f"{f['redis_batch_events_per_s']:,.0f} calls/s",
        f"{f['redis_batch_pushes_per_s']:,.0f} pushes/s unpipelined; "
        f"{redis_['batch']['mean_message_bytes']:,} B each")  # fmt: skip
    row("Postgres ceiling", f"{f['postgres_rows_per_s']:,.0f} rows/s",
        ceil["postgres"]["mode"])  # fmt: skip
    row("baseline", f"{f['baseline_calls_per_s']:,.0f} calls/s",
        f"{base['calls']:,} calls, one per transaction, in one process")  # fmt: skip
    row("receiver single ÷ Redis", f"{f['receiver_single_to_redis']:.3f}", "share of the ceiling")
    row("receiver batch ÷ Redis", f"{f['receiver_batch_to_redis']:.3f}", "share of the ceiling")
    row("end to end ÷ Postgres", f"{f['end_to_end_to_postgres']:.3f}", "share of the ceiling")
    row(
        "end to end ÷ baseline", f"{f['end_to_end_to_baseline']:.2f}x", "speed-up over the baseline"
    )
    drains, lag = report["drains"], report["apply_lag"]
    row("drain, one-call messages", f"{f['drain_single_calls_per_s']:,.0f} calls/s",
        f"{drains['single']['calls']:,} calls, worker {drains['single']['worker']}")  # fmt: skip
    row("drain, batches of 100", f"{f['drain_batch_calls_per_s']:,.0f} calls/s",
        "the same calls")  # fmt: skip
    row("one-call ÷ batch drain", f"{f['drain_single_to_batch']:.3f}", "target >= 0.5, aim 0.8")
    row("batch drain ÷ Postgres", f"{f['drain_batch_to_postgres']:.3f}", "target >= 0.09")
    waits = report["replica_wait"]
    row("with WAIT 1 ÷ without", f"{f['receiver_wait_to_no_wait']:.3f}",
        f"{waits['with_calls_per_s']:,.0f} ÷ {waits['without_calls_per_s']:,.0f} single calls/s, "
        "a local replica; target >= 0.85")  # fmt: skip
    lean = report["receiver_to_bare"]
    row("receiver ÷ bare Flask", f"{f['receiver_to_bare_flask']:.3f}",
        f"{lean['receiver_calls_per_s']:,.0f} ÷ {lean['bare_calls_per_s']:,.0f} single calls/s, "
        "no worker running; target >= 0.9")  # fmt: skip
    row("apply lag p99", f"{f['apply_lag_p99_ms']:,.0f} ms",
        f"p50 {lag['p50_ms']:,.0f} ms; {lag['calls']:,} single calls at {lag['rate_per_s']:,.0f}/s "
        "(half the receiver's rate); target <= 1000 ms")  # fmt: skip
    for phase, label in (("single_phase", "sending single calls"),
                         ("batch_phase", "sending batches"), ("drain", "after sending"),
                         ("end_to_end", "end to end"),
                         ("until_single_calls_applied", "until single calls applied"),
                         ("then_batches_applied", "then batches applied")):  # fmt: skip
        used = report["cpu"][phase]
        if used.get("available"):
            parts = ", ".join(f"{k} {v:.1f}" for k, v in used["cpu_seconds"].items())
            row(f"CPU, {label}", f"{used['machine_busy_percent']:.0f}% busy",
                f"CPU seconds: {parts}")  # fmt: skip
    console.print(table)
    m = report["machine"]
    console.print(
        f"{m['nproc']} cores ({m['cpu']}), {m['memory_gib']} GiB, Python {m['python']}, "
        f"Postgres {m['postgres']}, Redis {m['redis']}; receiver and workers "
        f"{p['receiver_processes']} + {p['worker_processes']} processes; "
        f"run took {report['duration_s']:.0f} s"
    )
