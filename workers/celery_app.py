"""The worker's Celery app: the shared app plus the apply task, logging and metrics."""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from celery.signals import celeryd_init, setup_logging, worker_init
from prometheus_client import start_http_server

from shared import metrics
from shared.celery_app import make_celery
from shared.logs import configure_logging
from shared.queues import QUEUES
from shared.settings import Settings
from workers import broker
from workers.start import WorkerRefused
from workers.tasks import register

logger = logging.getLogger(__name__)


def create_worker_app(settings: Settings | None = None) -> Celery:
    settings = (settings or Settings.from_env()).verify()
    app = make_celery(settings)
    # Without -Q a worker consumes every declared queue; WORKER_QUEUES narrows that. -Q still wins.
    app.conf.task_queues = [q for q in app.conf.task_queues if q.name in settings.queues]
    register(app, settings)
    broker.install(app, settings)
    metrics.prime_worker_series()

    @celeryd_init.connect(weak=False)
    def _queues(options: dict[str, Any] | None = None, **_: Any) -> None:
        # -Q with a name that is not a queue: one line, not Celery's traceback.
        given = (options or {}).get("queues") or []
        names = given.split(",") if isinstance(given, str) else list(given)
        unknown = [q.strip() for q in names if q.strip() and q.strip() not in QUEUES]
        if unknown:
            raise WorkerRefused(
                f"-Q {','.join(names)}: {unknown[0]!r} is not a queue (the queues are "
                f"{', '.join(QUEUES)})"
            )

    @setup_logging.connect(weak=False)
    def _logging(**_: Any) -> None:
        configure_logging(settings.log_level)

    @worker_init.connect(weak=False)
    def _metrics(**_: Any) -> None:
        # Prefork children count into PROMETHEUS_MULTIPROC_DIR; the parent serves them all.
        if not settings.worker_metrics_port:
            return
        try:
            start_http_server(settings.worker_metrics_port, registry=metrics.registry())
        except OSError as exc:
            # A worker whose metrics nobody can read must not pass for a monitored one.
            raise WorkerRefused(
                f"cannot serve metrics on WORKER_METRICS_PORT={settings.worker_metrics_port}: "
                f"{exc.strerror or exc}"
            ) from None
        logger.info("serving metrics", extra={"port": settings.worker_metrics_port})

    return app
