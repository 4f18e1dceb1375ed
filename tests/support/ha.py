"""Real processes for failover tests: a Redis master with replicas watched by three Sentinels, a
receiver and a sender that retries as Segment's libraries do (same messageId, after a wait).

Every server binds 127.0.0.1 on the ports the caller gives, lives in a temporary directory and is
stopped by its own PID; nothing here touches a server it did not start.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import redis
from sqlalchemy import Engine, text

from shared import dedupe, messages
from tests.support.stack import BIN, ROOT, answers, stop, wait_for

MASTER = "userdest"


def redis_missing() -> str | None:
    """Why these tests cannot run here, or None."""
    return None if shutil.which("redis-server") else "no redis-server binary to run Redis nodes"


class RedisGroup:
    """A master and its replicas (`ports`, the first the master) and Sentinels (`sentinel_ports`)
    that fail over within about two seconds of the master's death."""

    def __init__(self, ports: list[int], sentinel_ports: list[int], directory: Path) -> None:
        self.ports, self.sentinel_ports, self.dir = ports, sentinel_ports, directory
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        for i, port in enumerate(ports):
            replica = [] if i == 0 else ["--replicaof", "127.0.0.1", str(ports[0])]
            self._spawn(port, ["--save", "", "--appendonly", "no", *replica])
        for port in ports:
            wait_for(lambda p=port: self._pings(p), timeout=10, what=f"redis on {port}")
        wait_for(self._replicas_online, timeout=15, what="the replicas to sync")
        for port in sentinel_ports:
            conf = directory / f"sentinel-{port}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {directory}\n"
                f"sentinel monitor {MASTER} 127.0.0.1 {ports[0]} 2\n"
                f"sentinel down-after-milliseconds {MASTER} 1000\n"
                # A failover whose election fails (a split vote, a Sentinel slow to answer on a
                # loaded machine) is tried again after twice this: 4 s, not 10 s.
                f"sentinel failover-timeout {MASTER} 2000\n"
                f"sentinel parallel-syncs {MASTER} 2\n"
            )
            self._spawn(port, [], conf=conf)
        for port in sentinel_ports:
            wait_for(lambda p=port: self._pings(p), timeout=10, what=f"sentinel on {port}")

    def _spawn(self, port: int, args: list[str], conf: Path | None = None) -> None:
        head = ["redis-server", str(conf), "--sentinel"] if conf else ["redis-server"]
        self.procs[port] = subprocess.Popen(
            [*head, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(self.dir), *args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    @staticmethod
    def _pings(port: int) -> bool:
        try:
            return bool(redis.Redis(port=port, socket_timeout=1).ping())
        except redis.RedisError:
            return False

    def _replicas_online(self) -> bool:
        info = redis.Redis(port=self.master_port(), socket_timeout=1).info("replication")
        return int(info.get("connected_slaves", 0)) == len(self.ports) - 1

    @property
    def url(self) -> str:
        return ";".join(f"sentinel://127.0.0.1:{p}" for p in self.sentinel_ports) + "/0"

    def master_port(self) -> int:
        """The port of the master the Sentinels name now (the first port before any failover)."""
        for port in self.sentinel_ports:
            with contextlib.suppress(redis.RedisError):
                client = redis.Redis(port=port, socket_timeout=1)
                answer = client.execute_command("SENTINEL", "get-master-addr-by-name", MASTER)
                if answer:
                    return int(answer[1])
        return self.ports[0]

    def signal(self, port: int, sig: signal.Signals) -> None:
        os.kill(self.procs[port].pid, sig)

    def replicas(self) -> list[int]:
        master = self.master_port()
        return [p for p in self.ports if p != master and self.procs[p].poll() is None]

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGCONT)
                proc.kill()
            proc.wait(timeout=10)


@contextmanager
def redis_group(
    ports: list[int], sentinel_ports: list[int], directory: Path
) -> Iterator[RedisGroup]:
    group = RedisGroup(ports, sentinel_ports, directory)
    try:
        yield group
    finally:
        group.stop()


@contextmanager
def receiver_on(port: int, env: dict[str, str], log: Path) -> Iterator[str]:
    """gunicorn serving the receiver on 127.0.0.1:`port` (one process), until the block ends."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [str(BIN / "gunicorn"), "--config", "python:api.gunicorn_conf", "api:create_app()",
             "--bind", f"127.0.0.1:{port}", "--workers", "1"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: answers(url + "/healthz"), what="the receiver")
        yield url
    finally:
        stop(proc)


@dataclass
class Sender:
    """Sends one page call a request, each with its own messageId, and retries a call that was not
    answered 200 with the same messageId, as the Segment libraries do, until it is or until stopped."""

    url: str
    api_key: str
    pause: float = 0.02
    accepted: dict[str, float] = field(default_factory=dict)
    """messageId -> when its 200 came."""
    errors: list[float] = field(default_factory=list)
    """When each answer that was not 200 (or no answer) came."""
    sent: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Sender:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop sending new calls; a call in flight is retried until it is answered 200."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)

    def _run(self) -> None:
        auth = "Basic " + base64.b64encode(f"{self.api_key}:".encode()).decode()
        while not self._stop.is_set():
            message_id = f"m-{self.sent:06d}"
            self.sent += 1
            body = orjson.dumps(
                {"userId": f"u{self.sent % 7}", "messageId": message_id,
                 "properties": {"url": "https://shop.example/"}}
            )  # fmt: skip
            while not self._post(body, auth):
                self.errors.append(time.monotonic())
                time.sleep(0.2)
            self.accepted[message_id] = time.monotonic()
            time.sleep(self.pause)

    def _post(self, body: bytes, auth: str) -> bool:
        request = urllib.request.Request(  # noqa: S310 (a local URL we built)
            self.url + "/v1/page",
            data=body,
            headers={"Content-Type": "application/json", "Authorization": auth},
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310 (our URL)
                return bool(answer.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def error_window(self) -> float:
        """Seconds from the first answer that was not 200 to the last."""
        return self.errors[-1] - self.errors[0] if self.errors else 0.0


def applied_ids(engine: Engine) -> list[str]:
    """The messageId of every page view stored, duplicates included."""
    with engine.connect() as conn:
        return list(conn.scalars(text("SELECT message_id FROM page_views")))


def first_applied_after(engine: Engine, message_id: str, since: float, timeout: float) -> float:
    """Seconds from `since` (monotonic) until a call later than `message_id` is applied."""
    query = text("SELECT count(*) FROM page_views WHERE message_id > :m")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            if conn.scalar(query, {"m": message_id}):
                return time.monotonic() - since
        time.sleep(0.1)
    raise AssertionError(f"nothing after {message_id} applied within {timeout} s")


def postgres_bin() -> Path | None:
    """The directory of the newest installed Postgres server binaries, if any."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class PostgresPair:
    """A primary and a streaming standby made from it (pg_basebackup), as the `postgres` OS user
    in a temporary directory; the primary commits only once the standby has flushed
    (synchronous_standby_names, set on the primary alone so the promoted standby does not wait
    for a standby of its own)."""

    def __init__(self, bin_dir: Path, ports: tuple[int, int], directory: Path) -> None:
        self.bin, self.ports, self.dir = bin_dir, ports, directory
        self.dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        self.primary, self.standby = self.dir / "primary", self.dir / "standby"
        self._run("initdb", "-D", str(self.primary), "-U", "postgres", "--auth=trust")
        self._start(self.primary, ports[0])
        self._run("pg_basebackup", "-D", str(self.standby), "-R", "-X", "stream",
                  "-h", "127.0.0.1", "-p", str(ports[0]), "-U", "postgres")  # fmt: skip
        self._start(self.standby, ports[1])
        with self.admin(ports[0]) as conn:
            conn.execute("ALTER SYSTEM SET synchronous_standby_names = '*'")
            conn.execute("SELECT pg_reload_conf()")
            conn.execute("CREATE DATABASE userdest")

    def _run(self, tool: str, *args: str) -> None:
        cmd = [str(self.bin / tool), *args]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=60)

    def _start(self, data: Path, port: int) -> None:
        opts = f"-p {port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", str(data), "-l", str(self.dir / f"{data.name}.log"),
                  "-o", opts, "-w", "start")  # fmt: skip

    @staticmethod
    def admin(port: int) -> Any:
        import psycopg

        return psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres", autocommit=True)

    def url(self, *ports: int) -> str:
        hosts = ",".join(f"127.0.0.1:{p}" for p in ports)
        return f"postgresql://postgres@{hosts}/userdest?target_session_attrs=read-write"

    def kill_primary(self) -> None:
        """SIGKILL the primary's postmaster, as a host that dies."""
        pid = int((self.primary / "postmaster.pid").read_text().split()[0])
        os.kill(pid, signal.SIGKILL)

    def promote(self) -> None:
        self._run("pg_ctl", "-D", str(self.standby), "-w", "promote")

    def stop(self) -> None:
        for data in (self.primary, self.standby):
            pid_file = data / "postmaster.pid"
            if pid_file.exists():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)
        shutil.rmtree(self.dir, ignore_errors=True)


def whereabouts(
    client: redis.Redis, engine: Engine, app_id: int, ids: list[str], log: Path
) -> dict[str, object]:
    """Where calls that were never applied are, for the failure message: the new Redis master's
    queues and unacknowledged messages, dead letters, the dedupe records, the worker's last lines."""
    found: dict[str, object] = {}
    with engine.connect() as conn:
        for mid in ids:
            letters = conn.scalar(
                text("SELECT count(*) FROM dead_letters WHERE message_id = :m"), {"m": mid}
            )
            deduped = conn.scalar(
                text("SELECT count(*) FROM processed_messages WHERE key = :k"),
                {"k": dedupe.key(app_id, mid)},
            )
            found[mid] = {
                "redis": [p["where"] for p in messages.in_redis(client, app_id, mid)],
                "dead_letters": letters,
                "dedupe_record": deduped,
            }
    found["worker_log_tail"] = log.read_text()[-2000:] if log.exists() else None
    return found
