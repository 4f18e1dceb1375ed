"""The Makefile's targets parse and are listed by `make help`; `make run`'s script is sound."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TARGETS = ("help", "install", "run", "test", "test-fast", "lint", "migrate", "bench")
RUN_SH = ROOT / "scripts" / "run.sh"

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def make(*args: str) -> subprocess.CompletedProcess[str]:
    # A `make test` above us exports its flags; a nested make must not inherit them.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    return subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_every_target_parses_in_a_dry_run() -> None:
    result = make("-n", *TARGETS)
    assert result.returncode == 0, result.stderr
    assert "userdest db upgrade" in result.stdout
    assert "scripts/run.sh" in result.stdout
    assert "pytest" in result.stdout
    assert "python -m bench" in result.stdout


def test_help_lists_every_target_with_a_description() -> None:
    result = make("help")
    assert result.returncode == 0, result.stderr
    listed = {}
    for line in result.stdout.splitlines():
        match = re.match(r"\s*make (\S+)\s+(\S.*)", line)
        if match:
            listed[match.group(1)] = match.group(2)
    for target in TARGETS:
        assert listed.get(target), f"`make help` does not describe {target}"


def test_run_script_parses() -> None:
    result = subprocess.run(["bash", "-n", str(RUN_SH)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_run_script_refuses_a_busy_port_in_one_line() -> None:
    if not (ROOT / ".venv" / "bin" / "gunicorn").exists():
        pytest.skip("no .venv with gunicorn here")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            ["bash", str(RUN_SH)],
            cwd=ROOT,
            env={**os.environ, "PORT": str(port)},
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode != 0
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(port) in lines[0] and "busy" in lines[0]
