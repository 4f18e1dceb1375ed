"""The worker's Celery app: the shared app plus the apply task and logging."""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import setup_logging

from shared.celery_app import make_celery
from shared.settings import Settings
from workers.tasks import register


def create_worker_app(settings: Settings | None = None) -> Celery:
    settings = (settings or Settings.from_env()).verify()
    app = make_celery(settings)
    # Without -Q a worker consumes every declared queue; WORKER_QUEUES narrows that. -Q still wins.
    app.conf.task_queues = [q for q in app.conf.task_queues if q.name in settings.queues]
    register(app, settings)

    @setup_logging.connect(weak=False)
    def _logging(**_: Any) -> None:
        from shared.logs import configure_logging

        configure_logging(settings.log_level)

    return app
