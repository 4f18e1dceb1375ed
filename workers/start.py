"""Building the worker's Celery app for `celery -A workers`: settings checked first, one line on a
bad one, and a place for the metrics of prefork children before any metric exists.

This module imports neither Celery nor prometheus_client at import time: prometheus_client picks
its multiprocess mode once, when it is first imported, from PROMETHEUS_MULTIPROC_DIR.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import MutableMapping
from typing import TYPE_CHECKING

from shared.settings import Settings, SettingsError

if TYPE_CHECKING:
    from celery import Celery

MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"


class WorkerRefused(SystemExit):
    """The worker cannot start as configured; the message is one line for the operator."""

    def __init__(self, message: str) -> None:
        super().__init__(f"userdest worker: {message}")


def provide_metrics_dir(settings: Settings, environ: MutableMapping[str, str]) -> str | None:
    """Where a worker that serves metrics keeps those of its processes.

    Prefork children count in files under PROMETHEUS_MULTIPROC_DIR and the parent serves their sum;
    without that directory each child counts in its own memory and the parent serves zeros. A
    worker given WORKER_METRICS_PORT and no directory gets a private, empty one (removed when it
    exits). A directory that was given must exist and be writable.
    """
    if not settings.worker_metrics_port:
        return environ.get(MULTIPROC_DIR) or None
    given = environ.get(MULTIPROC_DIR)
    if given:
        if not (os.path.isdir(given) and os.access(given, os.W_OK)):
            raise WorkerRefused(f"{MULTIPROC_DIR}={given!r} is not a writable directory")
        return given
    path = tempfile.mkdtemp(prefix="userdest-worker-metrics-")
    environ[MULTIPROC_DIR] = path
    owner = os.getpid()

    def remove() -> None:
        if os.getpid() == owner:  # prefork children leave it to the parent
            shutil.rmtree(path, ignore_errors=True)

    atexit.register(remove)
    return path


def worker_app() -> Celery:
    """The worker's Celery app from the environment, or a refusal in one line."""
    try:
        settings = Settings.from_env().verify()
    except SettingsError as exc:
        raise WorkerRefused(str(exc)) from None
    provide_metrics_dir(settings, os.environ)
    from shared import metrics
    from workers.celery_app import create_worker_app

    if settings.worker_metrics_port and not metrics.multiprocess():
        raise WorkerRefused(
            f"WORKER_METRICS_PORT is set but prometheus_client was loaded before {MULTIPROC_DIR} "
            "was: start the worker with `celery -A workers worker`, or set the directory yourself"
        )
    return create_worker_app(settings)
