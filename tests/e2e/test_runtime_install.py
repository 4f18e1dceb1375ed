"""A runtime-only install runs: `pip install .` into a fresh virtual environment, without the test
extras, then a real worker and receiver started from it apply a call.

The test extras bring packages (`packaging`, say) that a runtime dependency may need without
declaring them; kombu 5.7's Redis transport did, and a worker installed with `pip install .` (as the
Dockerfile does) could not start while every test passed. The environment is made once per
pyproject.toml (`.venv-runtime`, beside `.venv`) and the project is reinstalled into it without its
dependencies at each run, so the dependencies are always exactly what pyproject.toml declares and a
run after the first costs seconds. Processes run outside the source tree, so they import the
installed packages, not the checkout.
"""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from shared import dedupe
from shared.settings import Settings
from tests.support.receiver import make_tenant
from tests.support.stack import ROOT, answers, free_port, stack_env, stop, wait_for

pytestmark = pytest.mark.e2e

RUNTIME = ROOT / ".venv-runtime"
PIP_TIMEOUT = 600
PACKAGES = ("api", "workers", "shared", "ops")


def _pip(*args: str) -> None:
    subprocess.run(
        [str(RUNTIME / "bin" / "python"), "-m", "pip", "install", "--quiet", *args],
        cwd=ROOT, check=True, timeout=PIP_TIMEOUT, capture_output=True,
    )  # fmt: skip


@pytest.fixture(scope="session")
def runtime_bin() -> Path:
    """The bin directory of a virtual environment holding `pip install .` and nothing else."""
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()[:16]
    stamp = RUNTIME / f".deps-{digest}"
    # `make test` runs tests in several processes: one builds, the others wait for it.
    with (ROOT / ".venv-runtime.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _build(stamp)


def _code_digest() -> str:
    digest = hashlib.sha256()
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                digest.update(str(path.relative_to(ROOT)).encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def _build(stamp: Path) -> Path:
    code = RUNTIME / f".code-{_code_digest()}"
    if not stamp.exists():
        shutil.rmtree(RUNTIME, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(RUNTIME)], check=True, timeout=120)
        _pip(".")
        stamp.touch()
    elif not code.exists():
        # Same dependencies as last time: put this checkout's code in, touching nothing else.
        _pip("--no-deps", "--force-reinstall", ".")
    for old in RUNTIME.glob(".code-*"):
        old.unlink()
    code.touch()
    return RUNTIME / "bin"


@pytest.fixture
def runtime_stack(
    runtime_bin: Path, clean_db: Engine, settings: Settings, redis_client: object, tmp_path: Path
) -> Iterator[str]:
    env = {k: v for k, v in stack_env(settings).items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    port = free_port()
    with (tmp_path / "stack.log").open("wb") as log:
        procs = [
            subprocess.Popen(
                [str(runtime_bin / "celery"), "-A", "workers", "worker", "-Q", "ingest", "-c", "1",
                 "--without-gossip", "--without-mingle", "--without-heartbeat"],
                cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            ),
            subprocess.Popen(
                [str(runtime_bin / "gunicorn"), "-c", "python:api.gunicorn_conf",
                 "-b", f"127.0.0.1:{port}", "-w", "1", "api:create_app()"],
                cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
            ),
        ]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: answers(url + "/healthz"), what="the installed receiver")
        yield url
    finally:
        stop(*procs)


def test_the_installed_packages_are_imported(runtime_bin: Path, tmp_path: Path) -> None:
    found = subprocess.run(
        [str(runtime_bin / "python"), "-c",
         "import api, workers, shared, ops, kombu.transport.redis; print(api.__file__)"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert found.returncode == 0, found.stderr.strip().splitlines()[-1:]
    assert found.stdout.startswith(str(RUNTIME)), found.stdout


def test_a_runtime_only_install_runs_a_worker_and_a_receiver(
    runtime_stack: str, runtime_bin: Path, clean_db: Engine, settings: Settings, tmp_path: Path
) -> None:
    tenant = make_tenant(clean_db, "runtime")
    request = urllib.request.Request(  # noqa: S310 (a local URL we built)
        runtime_stack + "/v1/track",
        data=b'{"userId": "installed", "event": "Installed", "messageId": "rt-1"}',
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {tenant.api_key}"},
    )
    with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
        assert answer.status == 200

    def applied() -> bool:
        with clean_db.connect() as conn:
            found = conn.scalar(
                text("SELECT count(*) FROM processed_messages WHERE key = :k"),
                {"k": dedupe.key(tenant.app_id, "rt-1")},
            )
            return bool(found)

    try:
        wait_for(applied, timeout=60, what="the installed worker to apply the call")
    except AssertionError:
        log = (tmp_path / "stack.log").read_text(errors="replace")
        raise AssertionError(f"not applied; the installed stack said:\n{log[-3000:]}") from None
    cli = subprocess.run(
        [str(runtime_bin / "userdest"), "users", "show", "--app", "runtime", "installed", "--json"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
        env=stack_env(settings),
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
