"""`python -m bench`: one run, from an empty database to `bench-results/latest.json`.

1. Generate the seeded workload; recreate the bench's database and flush its Redis database; create
   the app and key, and define some of the attributes the calls carry.
2. Start the receiver (gunicorn, 2 processes) and a worker (2 processes); warm them up with a few
   calls of a second app and wait until those are applied.
3. Send the single calls, then the batches, from a few client threads; wait until Postgres has
   applied every accepted call (`processed_messages`). The receiver's figures come from the two
   sending phases, the end-to-end figure from the first request to the last call applied.
4. Stop the stack, then measure in this process: LPUSH of the same message bytes into a scratch list,
   plain multi-row INSERTs of the same calls as rows, and the one-call-per-transaction baseline.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from types import FrameType
from typing import Any

import redis
from rich.console import Console
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from bench import bare, ceilings, cpu, drain, replicas, report
from bench.lag import paced_lag
from bench.load import PhaseResult, Request, batch_requests, send, single_requests
from bench.stack import (
    RECEIVER_PROCESSES,
    ROOT,
    WORKER_PROCESSES,
    BenchError,
    Stack,
    Target,
    flush_redis,
    recreate_database,
    target_from_env,
)
from bench.workload import DEFINED, MIX, UNDEFINED, generate
from ops.cli.attributes import define_attribute
from shared import dedupe
from shared.db import make_engine
from shared.queues import INGEST
from shared.settings import Settings
from shared.tenancy import create_key, new_app
from shared.timeparse import iso, utcnow

BATCH_SIZE = 100
WARMUP_CALLS = 60
LAG_LOAD = 0.5
"""The lag phase sends single calls at this share of the receiver's measured single-call rate."""
LAG_SECONDS = 10.0
WAIT_CALLS = 3000
"""Single calls sent in each half of the WAIT phase (without, then with REDIS_WAIT_REPLICAS=1)."""
"""How long the lag phase lasts (2 s with --quick)."""
DRAIN_CALLS = 20_000
"""Calls in each drain measurement (the first of the batch calls; all of them with --quick)."""
POLL_SECONDS = 0.05


@dataclass(frozen=True, slots=True)
class Options:
    users: int = 10_000
    single_calls: int = 20_000
    batch_events: int = 100_000
    baseline_calls: int = 2_000
    clients: int = 4
    seed: int = 20260105
    out: Path = ROOT / "bench-results" / "latest.json"
    max_seconds: float = 150.0
    """The most one sending phase may take; the wait for the workers may take twice that."""
    log_level: str = "INFO"
    quick: bool = False
    lag_rate: float | None = None
    """Calls per second of the lag phase; None: half the receiver's single-call rate."""


QUICK = {"single_calls": 100, "batch_events": 300, "baseline_calls": 50, "clients": 2}


def parse_args(argv: list[str] | None) -> Options:
    defaults = Options()
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Run the seeded bench workload against the real stack and write bench-results/"
        "latest.json. Uses BENCH_DATABASE (default userdest_bench, dropped and recreated) on "
        "DATABASE_URL's server and BENCH_REDIS_DB (default 8, flushed) on REDIS_URL's.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"a tiny run: {QUICK['single_calls']} single calls, {QUICK['batch_events']} in "
        f"batches, {QUICK['baseline_calls']} baseline calls",
    )
    parser.add_argument(
        "--calls",
        type=int,
        metavar="N",
        help="N calls in all: a sixth as single calls, the rest in batches of 100 "
        f"(default {defaults.single_calls + defaults.batch_events:,})",
    )
    parser.add_argument("--users", type=int, default=defaults.users, help="%(default)s users")
    parser.add_argument("--clients", type=int, help="HTTP client threads (default 4; 2 --quick)")
    parser.add_argument("--baseline-calls", type=int, metavar="N", help="calls in the baseline")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="default %(default)s")
    parser.add_argument(
        "--out", type=Path, default=defaults.out, help="where the JSON goes (default %(default)s)"
    )
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=defaults.max_seconds,
        help="the most seconds a sending phase may take, twice that the wait for the workers "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--log-level", default=defaults.log_level, help="the stack's LOG_LEVEL (default INFO)"
    )
    parser.add_argument(
        "--lag-rate",
        type=float,
        help="single calls a second in the lag phase (default: half the receiver's measured "
        "rate); a fixed rate compares two versions whose receivers differ",
    )
    args = parser.parse_args(argv)
    values: dict[str, Any] = dict(QUICK) if args.quick else {}
    if args.calls is not None:
        if args.calls < 2:
            parser.error("--calls must be at least 2")
        values["single_calls"] = max(1, round(args.calls / 6))
        values["batch_events"] = args.calls - values["single_calls"]
        values.setdefault("baseline_calls", max(1, min(defaults.baseline_calls, args.calls // 6)))
    if args.clients is not None:
        values["clients"] = args.clients
    if args.baseline_calls is not None:
        values["baseline_calls"] = args.baseline_calls
    opts = Options(
        users=args.users,
        seed=args.seed,
        out=args.out,
        max_seconds=args.max_seconds,
        log_level=args.log_level.upper(),
        quick=args.quick,
        lag_rate=args.lag_rate,
        **values,
    )
    for name in ("users", "clients", "baseline_calls", "max_seconds"):
        if getattr(opts, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    return opts


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    console = Console()

    def terminate(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt  # unwinds through Stack, which stops the processes

    signal.signal(signal.SIGTERM, terminate)
    try:
        result = run(opts, console)
    except BenchError as exc:
        console.print(f"[red]bench failed:[/] {exc}", highlight=False)
        return 1
    except KeyboardInterrupt:
        console.print("[yellow]bench interrupted[/]; its receiver and worker are stopped")
        return 130
    report.print_summary(result, console)
    console.print(f"results: {opts.out}", highlight=False)
    if result["problems"]:
        for problem in result["problems"]:
            console.print(f"[red]problem:[/] {problem}", highlight=False)
        return 1
    return 0


def run(opts: Options, console: Console) -> dict[str, Any]:
    started_at, started = iso(utcnow()), time.perf_counter()
    target = target_from_env(os.environ)
    settings = target.settings()
    total = opts.single_calls + opts.batch_events + opts.baseline_calls
    say = console.print
    say(
        f"bench: database {target.database}, Redis database {target.redis_db}; "
        f"{total:,} calls over {opts.users:,} users, seed {opts.seed}",
        highlight=False,
    )
    calls = generate(opts.seed, opts.users, total)
    single_calls = calls[: opts.single_calls]
    batch_calls = calls[opts.single_calls : opts.single_calls + opts.batch_events]
    baseline_calls = calls[opts.single_calls + opts.batch_events :]
    singles, batches = single_requests(single_calls), batch_requests(batch_calls, BATCH_SIZE)
    warm_calls = generate(opts.seed + 1, 50, WARMUP_CALLS)
    warmup = single_requests(warm_calls[:20]) + batch_requests(warm_calls[20:], 20)

    recreate_database(target)
    client = flush_redis(target)
    engine = make_engine(settings, pool_size=1)
    try:
        (app_id, key_id, api_key), (warm_app, _, warm_key) = _tenancy(engine)
        logs = opts.out.parent / "logs"
        say(f"starting the receiver and a worker (logs in {logs})", highlight=False)
        with Stack(target, logs, opts.log_level) as stack:
            warm = send(stack.url, warm_key, warmup, opts.clients, opts.max_seconds)
            warmed = _wait_applied(engine, client, stack, warm_app, warm.calls, opts.max_seconds)
            groups = stack.process_groups()
            say(f"sending {len(singles):,} single calls from {opts.clients} clients")
            marks = [cpu.sample(groups, target.database)]
            single = send(stack.url, api_key, singles, opts.clients, opts.max_seconds)
            marks.append(cpu.sample(groups, target.database))
            stack.check_alive()
            say(f"sending {len(batches):,} batches")
            batch = send(stack.url, api_key, batches, opts.clients, opts.max_seconds)
            marks.append(cpu.sample(groups, target.database))
            backlog = int(client.llen(INGEST))
            say(f"waiting for the workers ({backlog:,} messages still queued)")
            # The queue is first in, first out: once the last single call is applied, the workers
            # are on the batches. That splits the end-to-end time between the two kinds.
            done = _wait_applied(
                engine,
                client,
                stack,
                app_id,
                single.calls + batch.calls,
                2 * opts.max_seconds,
                marker=single_calls[-1]["messageId"] if single_calls else None,
                already=warmed.applied,
                sampler=lambda: cpu.sample(groups, target.database),
            )
            marks.append(cpu.sample(groups, target.database))
            rate = LAG_LOAD * single.calls / single.seconds if single.seconds > 0 else 1.0
            rate = opts.lag_rate or rate
            lag_n = min(len(singles), max(1, round(rate * (2.0 if opts.quick else LAG_SECONDS))))
            say(f"sending {lag_n:,} single calls at {rate:,.0f}/s to measure the apply lag")
            lag_app, lag_key = _lag_app(engine)
            lag = paced_lag(stack.url, engine, lag_key, lag_app, singles[:lag_n],
                            [c["messageId"] for c in single_calls[:lag_n]], rate, opts.clients,
                            opts.max_seconds)  # fmt: skip
        e2e_seconds = done.at - single.started

        say("measuring Redis, Postgres and the baseline")
        redis_figures = _redis_ceilings(settings, client, app_id, key_id, singles, batches)
        rows = ceilings.event_rows(app_id, single_calls + batch_calls)
        pg = ceilings.postgres_inserts(target.database_url, rows)
        base = ceilings.baseline(settings, app_id, key_id, baseline_calls)
        drained = batch_calls[:DRAIN_CALLS]
        say(f"draining {len(drained):,} calls as one-call messages, then as batches of 100")
        drains = {
            "single": drain.drain(target, engine, client, single_requests(drained), "single", logs),
            "batch": drain.drain(
                target, engine, client, batch_requests(drained, BATCH_SIZE), "batch", logs
            ),
        }
        wait_n = min(len(singles), WAIT_CALLS)
        say(f"sending {wait_n:,} single calls without WAIT, then with REDIS_WAIT_REPLICAS=1")
        waits = replicas.wait_cost(
            target, api_key, singles[:wait_n], opts.clients, opts.max_seconds, logs
        )
        say(f"sending {wait_n:,} single calls to the receiver and to a bare Flask app")
        lean = bare.receiver_to_bare(
            target, api_key, singles[:wait_n], opts.clients, opts.max_seconds, logs
        )
        machine = report.machine(target.database_url, client)
    finally:
        engine.dispose()
        client.close()

    receiver = {"single": single.summary("calls"), "batch": batch.summary("events")}
    end_to_end: dict[str, Any] = {
        "events": done.applied,
        "seconds": round(e2e_seconds, 3),
        "events_per_s": round(done.applied / e2e_seconds, 1),
        "dead_letters": done.dead_letters,
        "backlog_messages_after_send": backlog,
        "from": "the first single call sent",
        "to": "processed_messages holds every accepted call (polled every "
        f"{POLL_SECONDS * 1000:.0f} ms once the queue is empty)",
    }
    if done.marker_at is not None:
        # Approximate: a few single calls may still be in flight with the last one.
        singles_s, batches_s = done.marker_at - single.started, done.at - done.marker_at
        end_to_end["split"] = {
            "single_calls_applied_s": round(singles_s, 3),
            "single_calls_per_s": round(single.calls / singles_s, 1),
            "then_batch_calls_applied_s": round(batches_s, 3),
            "batch_calls_per_s": round(batch.calls / batches_s, 1) if batches_s > 0 else None,
            "note": "the queue is FIFO: the last single call applied marks the switch to batches",
        }
    figures = _figures(
        receiver, end_to_end, redis_figures, pg, base, len(batch_calls) / max(1, len(batches))
    ) | _worker_figures(drains, pg, lag)
    figures["receiver_wait_to_no_wait"] = waits["ratio"]
    figures["receiver_to_bare_flask"] = lean["ratio"]
    result = {
        "bench": "userdest",
        "format": 1,
        "started_at": started_at,
        "duration_s": round(time.perf_counter() - started, 1),
        "seed": opts.seed,
        "parameters": _parameters(opts, target, len(batches)),
        "machine": machine,
        "figures": figures,
        "figure_meanings": report.FIGURES,
        "receiver": receiver,
        "end_to_end": end_to_end,
        "ceilings": {"redis": redis_figures, "postgres": pg},
        "cpu": {
            "single_phase": cpu.between(marks[0], marks[1]),
            "batch_phase": cpu.between(marks[1], marks[2]),
            "drain": cpu.between(marks[2], marks[3]),
            "end_to_end": cpu.between(marks[0], marks[3]),
            "until_single_calls_applied": cpu.between(marks[0], done.marker_cpu),
            "then_batches_applied": cpu.between(done.marker_cpu, marks[3]),
        },
        "baseline": base,
        "drains": drains,
        "apply_lag": lag,
        "replica_wait": waits,
        "receiver_to_bare": lean,
        "problems": _problems(single, batch, end_to_end, base, len(singles), len(batches))
        + (
            [f"the lag phase applied {lag['applied']} of {lag['calls']} calls"]
            if lag["applied"] < lag["calls"]
            else []
        ),
    }
    report.write(result, opts.out)
    return result


def _figures(
    receiver: dict[str, Any],
    end_to_end: dict[str, Any],
    redis_figures: dict[str, Any],
    pg: dict[str, Any],
    base: dict[str, Any],
    calls_per_batch: float,
) -> dict[str, float]:
    """The headline figures of report.FIGURES, flat, and their ratios."""
    single, batch = receiver["single"], receiver["batch"]
    f = {
        "receiver_single_calls_per_s": single["calls_per_s"],
        "receiver_single_p50_ms": single["p50_ms"],
        "receiver_single_p99_ms": single["p99_ms"],
        "receiver_batch_events_per_s": batch["events_per_s"],
        "receiver_batch_p50_ms": batch["p50_ms"],
        "receiver_batch_p99_ms": batch["p99_ms"],
        "end_to_end_events_per_s": end_to_end["events_per_s"],
        "redis_single_pushes_per_s": redis_figures["single"]["pushes_per_s"],
        "redis_batch_pushes_per_s": redis_figures["batch"]["pushes_per_s"],
        "redis_batch_events_per_s": round(
            redis_figures["batch"]["pushes_per_s"] * calls_per_batch, 1
        ),
        "postgres_rows_per_s": pg["rows_per_s"],
        "baseline_calls_per_s": base["calls_per_s"],
    }
    ratio = report.ratio
    return f | {
        "receiver_single_to_redis": ratio(
            f["receiver_single_calls_per_s"], f["redis_single_pushes_per_s"]
        ),
        "receiver_batch_to_redis": ratio(
            f["receiver_batch_events_per_s"], f["redis_batch_events_per_s"]
        ),
        "end_to_end_to_postgres": ratio(f["end_to_end_events_per_s"], f["postgres_rows_per_s"]),
        "end_to_end_to_baseline": ratio(f["end_to_end_events_per_s"], f["baseline_calls_per_s"]),
    }


def _worker_figures(
    drains: dict[str, Any], pg: dict[str, Any], lag: dict[str, Any]
) -> dict[str, float]:
    """The batching figures: what a call costs the workers alone or in a batch, and the lag."""
    one, hundred = drains["single"]["calls_per_s"], drains["batch"]["calls_per_s"]
    return {
        "drain_single_calls_per_s": one,
        "drain_batch_calls_per_s": hundred,
        "drain_single_to_batch": report.ratio(one, hundred),
        "drain_batch_to_postgres": report.ratio(hundred, pg["rows_per_s"]),
        "apply_lag_p99_ms": lag["p99_ms"],
    }


def _lag_app(engine: Engine) -> tuple[int, str]:
    """An app of its own for the lag phase (its calls are new to it) and its key's secret."""
    with Session(engine) as session:
        app = new_app(session, "bench-lag")
        key = create_key(session, app)
        session.commit()
        return app.id, key.api_key


def _tenancy(engine: Engine) -> tuple[tuple[int, str, str], tuple[int, str, str]]:
    """The measured app with its definitions, and a warm-up app, each with a key."""
    with Session(engine) as session:
        app = new_app(session, "bench")
        key = create_key(session, app)
        for a in DEFINED:
            choices = list(a.choices) if a.choices else None
            define_attribute(session, app, a.scope, a.event, a.name, a.type, choices, False)
        warm = new_app(session, "bench-warmup")
        warm_key = create_key(session, warm)
        session.commit()
        return (app.id, key.key_id, key.api_key), (warm.id, warm_key.key_id, warm_key.api_key)


@dataclass(frozen=True, slots=True)
class Applied:
    at: float
    applied: int
    dead_letters: int
    marker_at: float | None
    """When the marker call was first seen applied, if it was not already at the first look."""
    marker_cpu: cpu.Sample | None = None


def _wait_applied(
    engine: Engine,
    client: redis.Redis,
    stack: Stack,
    app_id: int,
    expected: int,
    timeout: float,
    marker: str | None = None,
    sampler: Callable[[], cpu.Sample | None] | None = None,
    already: int = 0,
) -> Applied:
    """Wait until the app's applied calls and dead letters reach `expected`.

    Counting 100,000 rows twenty times a second would take a good part of a core from the workers,
    so the count waits until the queue is empty (a cheap LLEN until then). Whether the `marker`
    messageId is applied yet is one primary-key lookup, so it is asked at every poll.
    """
    deadline = time.perf_counter() + timeout
    # Dedupe records are keyed by a hash of app and messageId (shared/dedupe.py): the app's are
    # all of them less the `already` applied for the warm-up app.
    count = text(
        "SELECT (SELECT count(*) FROM processed_messages) - :already, "
        "(SELECT count(*) FROM dead_letters WHERE app_id = :app)"
    )
    seen = text("SELECT 1 FROM processed_messages WHERE key = :key")
    applied = dead = 0
    marker_at: float | None = None
    marker_cpu = None
    first = True
    while True:
        with engine.connect() as conn:
            if marker is not None and conn.scalar(seen, {"key": dedupe.key(app_id, marker)}):
                if not first:
                    marker_at = time.perf_counter()
                    marker_cpu = sampler() if sampler else None
                marker = None
            if client.llen(INGEST) == 0:
                applied, dead = conn.execute(count, {"app": app_id, "already": already}).one()
                if applied + dead >= expected:
                    now = time.perf_counter()
                    return Applied(now, int(applied), int(dead), marker_at, marker_cpu)
        first = False
        if time.perf_counter() > deadline:
            raise BenchError(
                f"{applied:,} of {expected:,} calls applied after {timeout:.0f} s; "
                f"see {stack.logs / 'worker.log'}"
            )
        stack.check_alive()
        time.sleep(POLL_SECONDS)


def _redis_ceilings(
    settings: Settings,
    client: redis.Redis,
    app_id: int,
    key_id: str,
    singles: list[Request],
    batches: list[Request],
) -> dict[str, Any]:
    single_messages = ceilings.queue_messages(settings, client, app_id, key_id, singles)
    batch_messages = ceilings.queue_messages(settings, client, app_id, key_id, batches)
    return {
        "single": ceilings.redis_pushes(client, single_messages, pipeline=1),
        "batch": ceilings.redis_pushes(client, batch_messages, pipeline=1),
        "single_pipelined": ceilings.redis_pushes(
            client, single_messages, pipeline=ceilings.PIPELINE
        ),
        "batch_pipelined": ceilings.redis_pushes(
            client, batch_messages, pipeline=ceilings.PIPELINE
        ),
        "messages": "made by the receiver's Publisher.message from the bodies sent",
    }


def _parameters(opts: Options, target: Target, batches: int) -> dict[str, Any]:
    params = asdict(opts)
    params["out"] = str(opts.out)
    return params | {
        "batch_size": BATCH_SIZE,
        "batches": batches,
        "warmup_calls": WARMUP_CALLS,
        "mix_percent": MIX,
        "defined_attributes": [a.label() for a in DEFINED],
        "undefined_attributes": list(UNDEFINED),
        "receiver_processes": RECEIVER_PROCESSES,
        "worker_processes": WORKER_PROCESSES,
        "environment": _stack_environment(),
        "database": target.database,
        "redis_db": target.redis_db,
        "argv": sys.argv[1:],
    }


def _stack_environment() -> dict[str, str]:
    """The settings the stack takes from the bench's environment (the URLs and LOG_LEVEL are the
    bench's own)."""
    own = {"DATABASE_URL", "REDIS_URL", "LOG_LEVEL"}
    names = {f.name.upper() for f in fields(Settings)} - own
    return {name: os.environ[name] for name in sorted(names) if os.environ.get(name)}


def _problems(
    single: PhaseResult,
    batch: PhaseResult,
    end_to_end: dict[str, Any],
    base: dict[str, Any],
    single_requests: int,
    batch_requests: int,
) -> list[str]:
    """What makes this run's figures doubtful; the bench exits 1 when there is any."""
    problems = []
    for name, phase, planned in (
        ("single", single, single_requests),
        ("batch", batch, batch_requests),
    ):
        if phase.truncated or phase.requests < planned:
            problems.append(f"{name} phase sent {phase.requests} of {planned} requests in time")
        if phase.errors:
            problems.append(f"{name} phase had failed requests: {phase.errors}")
    if end_to_end["dead_letters"]:
        problems.append(f"{end_to_end['dead_letters']} calls became dead letters")
    if base["dead_letters"] or base["applied"] != base["calls"]:
        problems.append(f"baseline applied {base['applied']} of {base['calls']} calls")
    return problems
