"""Real processes for end-to-end and fault tests: a worker, the stack's environment, waiting."""

from __future__ import annotations

import contextlib
import os
import socket
import socketserver
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import redis

from shared.settings import Settings

BIN = Path(sys.executable).parent


ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_ports(count: int) -> list[int]:
    """`count` different ports the system says are free now, for servers a test starts: two test
    runs on one machine (a developer's and a helper's) must never share a Redis or a Postgres."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


def stack_env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "AUTH_CACHE_TTL": "0.5",
        "LOG_LEVEL": "INFO",
    }


WORKER_ARGS = ("-c", "1", "--without-gossip", "--without-mingle", "--without-heartbeat")


def start_worker(env: dict[str, str], log: Path, queues: str = "ingest") -> subprocess.Popen[bytes]:
    """A real `celery -A workers worker` in its own process group, its output appended to `log`."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [str(BIN / "celery"), "-A", "workers", "worker", "-Q", queues, *WORKER_ARGS],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip


def wait_for(predicate: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as r:  # noqa: S310 (a local URL we built)
            return bool(r.status == 200)
    except OSError:
        return False


@contextmanager
def serving(server: socketserver.BaseServer) -> Iterator[str]:
    """Serve `server` (bound to 127.0.0.1) from a thread; yield its URL, and stop it afterwards."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()


@contextmanager
def receiver(env: dict[str, str], log: Path, *args: str) -> Iterator[str]:
    """gunicorn serving the receiver as the image and `make run` start it (its config file, its
    worker class), plus `args`; yields its URL once /healthz answers, and stops it after."""
    port = free_port()
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [str(BIN / "gunicorn"), "--config", "python:api.gunicorn_conf", "api:create_app()",
             "--bind", f"127.0.0.1:{port}", *args],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: answers(url + "/healthz"), what="the receiver")
        yield url
    finally:
        stop(proc)


def stop(*procs: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """TERM each process, wait for it, and kill one that does not stop in time."""
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def log_records(log: Path) -> list[dict[str, Any]]:
    """A process's JSON log records (Celery's banner and other plain lines left out)."""
    found = []
    for line in log.read_bytes().splitlines():
        with contextlib.suppress(orjson.JSONDecodeError):
            record = orjson.loads(line)
            if isinstance(record, dict):
                found.append(record)
    return found


class PrivateRedis:
    """A redis-server of the test's own, on a port the system says is free, checked to be ours
    before anything is written to it."""

    def __init__(self, port: int, directory: Path, appendonly: bool = False) -> None:
        self.port = port
        self.directory = directory
        self.url = f"redis://127.0.0.1:{port}/0"
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes" if appendonly else "no",
             # An append-only file in plain commands only, which a test can search.
             "--aof-use-rdb-preamble", "no",
             "--maxmemory-policy", "noeviction", "--dir", str(directory)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.client = redis.Redis.from_url(self.url)
        wait_for(self._answers, timeout=10, what="the private redis-server")
        assert self.proc.poll() is None, "the private redis-server did not start"
        assert self.client.config_get("dir")["dir"] == str(directory.resolve()), "not our Redis"

    def _answers(self) -> bool:
        try:
            return bool(self.client.ping())
        except redis.ConnectionError:
            return False

    def fill_to_the_limit(self) -> None:
        """maxmemory just above what Redis uses now: nothing more can be written."""
        used = int(self.client.info("memory")["used_memory"])
        self.client.config_set("maxmemory", used + 4096)
        with contextlib.suppress(redis.ResponseError):
            for i in range(10_000):
                self.client.set(f"ballast:{i}", b"x" * 512)

    def stop(self) -> None:
        self.client.close()
        self.proc.terminate()
        self.proc.wait(timeout=10)
