"""Every metric the Grafana dashboard and the alert rules name exists in the /metrics of a running
receiver and worker (a renamed metric would leave a panel blank and an alert silent for ever)."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest
import redis
import yaml
from sqlalchemy import Engine

from shared.settings import Settings
from tests.support.receiver import make_tenant
from tests.support.stack import BIN, ROOT, answers, free_port, stack_env, stop, wait_for

pytestmark = pytest.mark.e2e

DEPLOY = ROOT / "deploy"
NAME = re.compile(r"\buserdest_[a-z0-9_]+")


def named_in_deploy() -> dict[str, set[str]]:
    """Metric names by the file that uses them."""
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "userdest.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yaml").read_text())["groups"]
    alerts = [r["expr"] for g in rules for r in g["rules"]]
    return {
        "dashboard": {n for e in exprs for n in NAME.findall(e)},
        "alerts": {n for e in alerts for n in NAME.findall(e)},
    }


def exposition(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as answer:  # noqa: S310 (a local URL we built)
        return str(answer.read().decode())


def exposed(url: str) -> set[str]:
    """Names in a Prometheus text exposition: samples, and HELP/TYPE lines of unobserved series."""
    return set(NAME.findall(exposition(url)))


def _post(url: str, body: bytes, key: str) -> None:
    request = urllib.request.Request(  # noqa: S310 (a local URL we built)
        url,
        data=body,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
    )
    with contextlib.suppress(urllib.error.HTTPError):  # refusals are part of what is measured
        urllib.request.urlopen(request, timeout=10).close()  # noqa: S310


def test_dashboard_and_alert_metrics_exist_on_a_running_stack(
    settings: Settings, clean_db: Engine, redis_client: redis.Redis, tmp_path: Path
) -> None:
    tenant = make_tenant(clean_db)
    port, metrics_port = free_port(), free_port()
    env = {**stack_env(settings), "WORKER_METRICS_PORT": str(metrics_port)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    with (tmp_path / "stack.log").open("wb") as log:
        procs = [
            subprocess.Popen(
                [str(BIN / "gunicorn"), "-c", "python:api.gunicorn_conf", "-b", f"127.0.0.1:{port}",
                 "-w", "1", "api:create_app()"],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            ),
            subprocess.Popen(
                [str(BIN / "celery"), "-A", "workers", "worker", "-Q", "ingest,replay", "-c", "1",
                 "--without-gossip", "--without-mingle", "--without-heartbeat"],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            ),
        ]  # fmt: skip
    receiver = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: answers(receiver + "/healthz"), what="the receiver")
        wait_for(lambda: answers(f"http://127.0.0.1:{metrics_port}/metrics"), what="the worker")
        good = b'{"userId": "u1", "event": "Paid", "messageId": "deploy-1"}'
        _post(receiver + "/v1/track", good, tenant.api_key)
        _post(receiver + "/v1/track", good, tenant.api_key)  # a duplicate
        _post(receiver + "/v1/batch", b'{"batch": [{"type": "track"}]}', tenant.api_key)
        _post(receiver + "/v1/track", good, "ud_unknown")
        names: set[str] = set()

        def everything_applied() -> bool:
            names.clear()
            names.update(exposed(receiver + "/metrics"))
            names.update(exposed(f"http://127.0.0.1:{metrics_port}/metrics"))
            return (
                "userdest_dead_letters_total" in names and "userdest_calls_applied_total" in names
            )

        wait_for(everything_applied, timeout=60, what="the worker's metrics")
        if shutil.which("promtool"):  # Prometheus's own linter, where it is installed
            for url in (receiver + "/metrics", f"http://127.0.0.1:{metrics_port}/metrics"):
                lint = subprocess.run(
                    ["promtool", "check", "metrics"], input=exposition(url), capture_output=True,
                    text=True, timeout=30,
                )  # fmt: skip
                assert lint.returncode == 0, (url, lint.stdout + lint.stderr)
    finally:
        stop(*procs)
    for where, wanted in named_in_deploy().items():
        assert wanted, where
        assert wanted - names == set(), f"the {where} names metrics nothing exposes"
