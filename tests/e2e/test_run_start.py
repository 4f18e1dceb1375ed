"""`make run`'s start, as a fresh clone runs it: after the banner, the receiver's and the worker's
logs are JSON lines and nothing else (a log shipper parses every line)."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import orjson
import pytest

from shared.settings import Settings
from tests.support.stack import ROOT, answers, free_port, stack_env, wait_for

ROOT_ONLY_WARNING = "SecurityWarning: You're running the worker with superuser privileges"
"""Celery warns before any logging exists when it runs as root (this machine's tests, never a
person's `make run`); that warning's lines are the one exception."""


def _plain_lines(log: Path) -> list[str]:
    text = log.read_text()
    if os.geteuid() == 0 and ROOT_ONLY_WARNING in text:
        # The warning, its wrapped text and the source line Python prints under it.
        text = text[text.index("\n{") + 1 :] if "\n{" in text else ""
    lines = []
    for line in text.splitlines():
        try:
            parsed = orjson.loads(line)
        except orjson.JSONDecodeError:
            lines.append(line)
            continue
        if not isinstance(parsed, dict):
            lines.append(line)
    return lines


def _ready(logs: Path) -> bool:
    worker = logs / "worker.log"
    return worker.exists() and "ready." in worker.read_text()


def test_make_run_prints_only_json_lines_after_its_banner(
    settings: Settings, tmp_path: Path
) -> None:
    # A copy of the script beside the project's .venv: its logs (.run/) stay out of the checkout.
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "run.sh").write_bytes((ROOT / "scripts" / "run.sh").read_bytes())
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    if not (ROOT / ".venv" / "bin" / "gunicorn").exists():
        pytest.skip("no .venv with gunicorn here")
    port = free_port()
    env = {**stack_env(settings), "PORT": str(port)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    printed = tmp_path / "printed.txt"
    with printed.open("wb") as out_file:
        run = subprocess.Popen(
            ["bash", "scripts/run.sh"],
            cwd=tmp_path,
            env=env,
            stdout=out_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    logs = tmp_path / ".run"
    try:
        wait_for(lambda: _ready(logs), timeout=60, what="the worker's ready line")
        # A receiver process warns (if it does) as it boots, before it serves a request.
        wait_for(lambda: answers(f"http://127.0.0.1:{port}/healthz"), what="the receiver")
        # The script prints its banner once both answer: on a loaded machine, after the above.
        wait_for(lambda: b"userdest is running" in printed.read_bytes(), timeout=60,
                 what="the banner")  # fmt: skip
        receiver_plain = _plain_lines(logs / "receiver.log")
        worker_plain = _plain_lines(logs / "worker.log")
    finally:
        os.killpg(run.pid, signal.SIGTERM)
        run.wait(timeout=60)
    assert b"userdest is running" in printed.read_bytes()
    assert receiver_plain == [], receiver_plain
    assert worker_plain == [], worker_plain
