"""The processes as operators start them: each log line once, worker metrics however the worker
starts, and a worker that refuses a bad setting in one line instead of starting on the wrong queue."""

from __future__ import annotations

import socket
import subprocess
import urllib.request
from pathlib import Path

import orjson
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine

from shared.celery_app import make_celery
from shared.publish import Publisher
from shared.settings import Settings
from tests.support.envelopes import envelope
from tests.support.receiver import make_tenant
from tests.support.stack import BIN, ROOT, answers, free_port, stack_env, stop, wait_for

pytestmark = pytest.mark.e2e

WORKER = [str(BIN / "celery"), "-A", "workers", "worker", "--without-gossip", "--without-mingle",
          "--without-heartbeat"]  # fmt: skip


def test_the_receiver_writes_each_log_line_once(
    settings: Settings, clean_db: Engine, tmp_path: Path
) -> None:
    port = free_port()
    log = tmp_path / "receiver.log"
    with log.open("wb") as out:
        receiver = subprocess.Popen(
            [str(BIN / "gunicorn"), "-c", "python:api.gunicorn_conf", "-b", f"127.0.0.1:{port}",
             "-w", "1", "api:create_app()"],
            cwd=ROOT, env=stack_env(settings), stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_for(lambda: answers(f"http://127.0.0.1:{port}/healthz"), what="the receiver")
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/track",
            data=b'{"userId": ',
            headers={"Content-Type": "application/json", "X-Request-Id": "once-1234567890"},
        )
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(request, timeout=5)  # noqa: S310
    finally:
        stop(receiver)
    lines = log.read_text().splitlines()
    refused = [line for line in lines if "once-1234567890" in line]
    assert len(refused) == 1, refused
    booted = [line for line in lines if "Booting worker" in line]
    assert len(booted) == 1, booted
    assert all(orjson.loads(line) for line in refused + booted)


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_worker_metrics_count_without_a_multiprocess_directory(
    settings: Settings, clean_db: Engine, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """WORKER_METRICS_PORT alone: the prefork children's counts reach the parent's endpoint."""
    tenant = make_tenant(clean_db)
    port = free_port()
    private = tmp_path / "tmp"
    private.mkdir()
    env = {**stack_env(settings), "WORKER_METRICS_PORT": str(port), "TMPDIR": str(private)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    publisher = Publisher(make_celery(settings), redis_client, settings)
    calls = [{"type": "track", "userId": f"u{i}", "event": "Paid"} for i in range(3)]
    publisher.publish_many([envelope(tenant.app_id, [call]).to_dict() for call in calls], "ingest")
    with (tmp_path / "worker.log").open("wb") as out:
        worker = subprocess.Popen(
            [*WORKER, "-Q", "ingest", "-c", "2"], cwd=ROOT, env=env, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    key = ("userdest_calls_applied_total", (("type", "track"),))
    try:
        wait_for(lambda: answers(f"http://127.0.0.1:{port}/metrics"), what="worker metrics")
        wait_for(lambda: _scrape(port).get(key) == 3, timeout=60, what="3 calls in the metrics")
        samples = _scrape(port)
        assert samples[("userdest_apply_lag_seconds_count", (("queue", "ingest"),))] == 3
        assert ("userdest_task_retries_total", (("queue", "ingest"),)) in samples
        assert any(name == "userdest_build_info" for name, _ in samples)
    finally:
        stop(worker)
    # The worker's private directory went with it.
    assert [p.name for p in private.iterdir() if p.name.startswith("userdest-")] == []


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("WORKER_QUEUES", "ingset", "WORKER_QUEUES='ingset'"),
        ("PROMETHEUS_MULTIPROC_DIR", "/nonexistent/metrics", "PROMETHEUS_MULTIPROC_DIR"),
        ("-Q", "ingest,ingset", "'ingset' is not a queue"),
    ],
)
def test_the_worker_refuses_a_bad_setting_in_one_line(
    settings: Settings, variable: str, value: str, named: str
) -> None:
    if variable == "-Q":
        result = subprocess.run(
            [*WORKER, "-Q", value], cwd=ROOT, env=stack_env(settings), capture_output=True,
            text=True, timeout=60,
        )  # fmt: skip
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.returncode != 0
        assert lines[-1].startswith("userdest worker: ") and named in lines[-1], lines
        assert "Traceback" not in result.stderr
        return
    env = {**stack_env(settings), variable: value, "WORKER_METRICS_PORT": str(free_port())}
    result = subprocess.run(
        WORKER, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode != 0
    assert len(lines) == 1, lines
    assert lines[0].startswith("userdest worker: ") and named in lines[0]


def test_the_worker_refuses_a_metrics_port_it_cannot_serve(settings: Settings) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**stack_env(settings), "WORKER_METRICS_PORT": str(port)}
        result = subprocess.run(
            [*WORKER, "-Q", "ingest", "-c", "1"], cwd=ROOT, env=env, capture_output=True,
            text=True, timeout=60,
        )  # fmt: skip
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"userdest worker: cannot serve metrics on WORKER_METRICS_PORT={port}")
    assert "Traceback" not in result.stderr
