"""The bench's own database, Redis database number and processes: made fresh, always stopped.

The database (`BENCH_DATABASE`, default `userdest_bench`) lives on the Postgres server of
`DATABASE_URL` and is dropped and recreated at each run; the Redis database (`BENCH_REDIS_DB`,
default 8, never 0, which `make run` uses) lives on the Redis of `REDIS_URL` and is flushed at each
run. The receiver (gunicorn, 2 processes) and a Celery worker (2 processes) are started in their own
process groups, so a Ctrl-C reaches only the bench, which then stops them in order.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit, urlunsplit

import psycopg
import redis

from shared.erasure import Suppression
from shared.settings import Settings, SettingsError

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]
RECEIVER_PROCESSES = 2
WORKER_PROCESSES = 2
_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def bench_suppression() -> Suppression:
    """The keyed hashes of erased ids for the bench's in-process applies (its SUPPRESSION_SECRET)."""
    return Suppression(Settings.from_env().suppression_secret)


class BenchError(RuntimeError):
    """The bench cannot run or finish; the message is one line for the person running it."""


@dataclass(frozen=True, slots=True)
class Target:
    """Where the bench's data goes."""

    database: str
    database_url: str
    admin_url: str
    """The same Postgres server's `postgres` database, to drop and create the bench's."""
    redis_db: int
    redis_url: str

    def settings(self) -> Settings:
        return replace(
            Settings.from_env(), database_url=self.database_url, redis_url=self.redis_url
        ).verify()


def _with_path(url: str, path: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def target_from_env(environ: Mapping[str, str]) -> Target:
    """BENCH_DATABASE and BENCH_REDIS_DB on the servers of DATABASE_URL and REDIS_URL."""
    try:
        base = Settings.from_env(environ).verify()
    except SettingsError as exc:
        raise BenchError(str(exc)) from None
    database = environ.get("BENCH_DATABASE") or "userdest_bench"
    if not _NAME.fullmatch(database) or "bench" not in database:
        # The bench drops this database: refuse anything that could be someone's real data.
        raise BenchError(
            f"BENCH_DATABASE={database!r}: use a lower-case name containing 'bench', "
            "such as userdest_bench"
        )
    if database == urlsplit(base.database_url).path.strip("/"):
        raise BenchError(f"BENCH_DATABASE={database!r} is DATABASE_URL's database; pick another")
    raw_db = environ.get("BENCH_REDIS_DB") or "8"
    if not raw_db.isdigit() or int(raw_db) == 0:
        raise BenchError(
            f"BENCH_REDIS_DB={raw_db!r}: use a Redis database number other than 0 "
            "(`make run` uses 0 and the bench flushes its own)"
        )
    return Target(
        database=database,
        database_url=_with_path(base.database_url, f"/{database}"),
        admin_url=_with_path(base.database_url, "/postgres"),
        redis_db=int(raw_db),
        redis_url=_with_path(base.redis_url, f"/{raw_db}"),
    )


def recreate_database(target: Target) -> None:
    """Drop the bench's database, create it empty and migrate it to the newest schema."""
    from shared.migrate import upgrade

    try:
        with psycopg.connect(target.admin_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{target.database}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{target.database}"')
    except psycopg.OperationalError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BenchError(f"cannot reach Postgres at {_redact(target.admin_url)}: {first}") from None
    upgrade(target.settings())


def flush_redis(target: Target) -> redis.Redis:
    """The bench's Redis database, emptied; raises BenchError if Redis does not answer."""
    client = redis.Redis.from_url(target.redis_url, socket_timeout=10, socket_connect_timeout=5)
    try:
        client.flushdb()
    except redis.RedisError as exc:
        client.close()
        raise BenchError(f"cannot reach Redis at {target.redis_url}: {exc}") from None
    return client


def _redact(url: str) -> str:
    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", url)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Stack:
    """gunicorn serving the receiver (or `app`) and a Celery worker on `ingest` (unless not
    `worker`), against the bench's target.

    Use as a context manager: leaving it, by any exception or KeyboardInterrupt included, stops both.
    """

    def __init__(
        self,
        target: Target,
        logs: Path,
        log_level: str = "INFO",
        env: dict[str, str] | None = None,
        app: str = "api:create_app()",
        worker: bool = True,
    ) -> None:
        self.app = app
        self.worker = worker
        self.target = target
        self.env = env or {}
        self.logs = logs
        self.log_level = log_level
        self.port = 0
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._metrics_dir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Stack:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        # As compose and `make run` do: each process writes its metrics to a shared directory.
        self._metrics_dir = tempfile.TemporaryDirectory(prefix="userdest-bench-metrics-")
        env = {
            **os.environ,
            "DATABASE_URL": self.target.database_url,
            "REDIS_URL": self.target.redis_url,
            "LOG_LEVEL": self.log_level,
            "PROMETHEUS_MULTIPROC_DIR": self._metrics_dir.name,
            **self.env,
        }
        env.pop("WEB_CONCURRENCY", None)  # -w below is the bench's parameter
        commands = {
            "receiver": [
                str(BIN / "gunicorn"), "--config", "python:api.gunicorn_conf", self.app,
                "--bind", f"127.0.0.1:{self.port}", "--workers", str(RECEIVER_PROCESSES),
            ],
            "worker": [
                str(BIN / "celery"), "-A", "workers", "worker", "-Q", "ingest",
                "-c", str(WORKER_PROCESSES), "--without-gossip", "--without-mingle",
                "--without-heartbeat",
            ],
        }  # fmt: skip
        if not self.worker:
            del commands["worker"]
        for name, command in commands.items():
            with (self.logs / f"{name}.log").open("wb") as log:
                self._procs[name] = subprocess.Popen(  # noqa: S603 (our own venv's programs)
                    command,
                    cwd=ROOT,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        self._wait_for_receiver()

    def _wait_for_receiver(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1) as answer:  # noqa: S310 (loopback URL we built)
                    if answer.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise BenchError(f"the receiver did not answer within {timeout:.0f} s; see {self.logs}")

    def process_groups(self) -> dict[str, int]:
        """The process group id of each part (each was started as its group's leader)."""
        return {name: proc.pid for name, proc in self._procs.items()}

    def check_alive(self) -> None:
        for name, proc in self._procs.items():
            if proc.poll() is not None:
                raise BenchError(
                    f"the {name} stopped (exit {proc.returncode}); see {self.logs / name}.log"
                )

    def stop(self, timeout: float = 20.0) -> None:
        """TERM each process group, wait, then KILL what is left. Safe to call twice."""
        running = {name: p for name, p in self._procs.items() if p.poll() is None}
        for name, proc in self._procs.items():
            if name not in running:
                # It died on its own: its children (prefork or gunicorn workers) may outlive it.
                _signal_group(proc, signal.SIGKILL)
        for proc in running.values():
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in running.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                # The whole group: gunicorn's workers or Celery's prefork children with it.
                _signal_group(proc, signal.SIGKILL)
                proc.wait(timeout=5)
        self._procs.clear()
        if self._metrics_dir is not None:
            self._metrics_dir.cleanup()
            self._metrics_dir = None


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    """Signal the process group this bench started for `proc` (its id is the child's pid)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)
