"""CPU per single call of the receiver against the bare Flask app (bench/bare.py): what
`receiver_to_bare_flask` measures, read as CPU seconds instead of wall-clock throughput, which
other work on the machine does not move.

Each phase starts gunicorn with one worker process (`api/gunicorn_conf.py`, gevent, and a
PROMETHEUS_MULTIPROC_DIR as the bench's stack has), sends warm-up calls, reads the worker's
utime + stime from /proc, sends `--calls` single calls of the bench's workload from `--clients`
threads, and reads it again. Phases alternate receiver, bare, bare, receiver (`--rounds` times);
the figures are the median microseconds of CPU per call of each app and `bare / receiver`.

    BENCH_DATABASE=recv_bench BENCH_REDIS_DB=5 python -m bench.receivercpu --port 18310

The database named by BENCH_DATABASE is dropped and recreated, the Redis database flushed, as
`make bench` does with its own (bench/stack.py).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from bench.bare import LIST
from bench.load import Request, send, single_requests
from bench.stack import BIN, ROOT, flush_redis, recreate_database, target_from_env
from bench.workload import generate
from shared.db import make_engine
from shared.queues import INGEST
from shared.tenancy import create_key, new_app

APPS = {"receiver": "api:create_app()", "bare": "bench.bare:create_app()"}
_TICK = os.sysconf("SC_CLK_TCK")


def _cpu(pid: int) -> float:
    """utime + stime of process `pid`, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def _worker_pid(master: int, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
        if children:
            return int(children[0])
        time.sleep(0.1)
    raise RuntimeError("gunicorn started no worker")


def phase(
    app: str, port: int, env: dict[str, str], key: str, warm: list[Request], calls: list[Request],
    clients: int, logs: Path, config: str = "python:api.gunicorn_conf",
) -> float:  # fmt: skip
    """Microseconds of the worker's CPU per call of `calls`."""
    with (
        tempfile.TemporaryDirectory(prefix="recvcpu-metrics-") as metrics_dir,
        (logs / f"{app.split(':')[0]}-{port}.log").open("wb") as log,
    ):
        proc = subprocess.Popen(  # noqa: S603 (our own venv's gunicorn)
            [
                str(BIN / "gunicorn"), "-c", config, "-w", "1",
                "-b", f"127.0.0.1:{port}", app,
            ],
            cwd=ROOT,
            env={**env, "PROMETHEUS_MULTIPROC_DIR": metrics_dir},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while True:
                try:
                    with urllib.request.urlopen(url + "/healthz", timeout=1):  # noqa: S310
                        break
                except OSError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise RuntimeError(f"{app} did not start; see {log.name}") from None
                    time.sleep(0.2)
            worker = _worker_pid(proc.pid)
            send(url, key, warm, clients, 60)
            before = _cpu(worker)
            result = send(url, key, calls, clients, 300)
            used = _cpu(worker) - before
            if result.calls != len(calls):
                raise RuntimeError(f"{app}: {result.errors}")
            return used / len(calls) * 1e6
        finally:
            proc.terminate()
            proc.wait(20)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=5000, help="measured calls per phase")
    parser.add_argument("--warm", type=int, default=500, help="unmeasured calls first")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=1, help="ABBA rounds")
    parser.add_argument("--port", type=int, default=18310)
    parser.add_argument("--logs", type=Path, default=Path(tempfile.gettempdir()) / "recvcpu")
    opts = parser.parse_args(argv)
    opts.logs.mkdir(parents=True, exist_ok=True)

    target = target_from_env(os.environ)
    recreate_database(target)
    client = flush_redis(target)
    settings = target.settings()
    engine = make_engine(settings, pool_size=1)
    with Session(engine) as session:
        app = new_app(session, "bench-cpu")
        key = create_key(session, app).api_key
        session.commit()
    engine.dispose()
    requests = single_requests(generate(20260105, 10_000, opts.warm + opts.calls))
    warm, calls = requests[: opts.warm], requests[opts.warm :]
    env = {
        **os.environ,
        "DATABASE_URL": target.database_url,
        "REDIS_URL": target.redis_url,
        "LOG_LEVEL": "INFO",
    }
    env.pop("WEB_CONCURRENCY", None)
    figures: dict[str, list[float]] = {"receiver": [], "bare": []}
    for _ in range(opts.rounds):
        for name in ("receiver", "bare", "bare", "receiver"):
            us = phase(APPS[name], opts.port, env, key, warm, calls, opts.clients, opts.logs)
            figures[name].append(us)
            client.delete(INGEST, LIST)
            print(f"{name:9} {us:7.1f} us CPU per call", flush=True)
    med: dict[str, Any] = {k: statistics.median(v) for k, v in figures.items()}
    print(
        f"median: receiver {med['receiver']:.1f} us, bare {med['bare']:.1f} us, "
        f"bare/receiver {med['bare'] / med['receiver']:.3f}"
    )
    client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
