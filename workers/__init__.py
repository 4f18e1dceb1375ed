"""Celery workers that apply queued Segment calls to Postgres (`celery -A workers worker`)."""

from typing import Any


def __getattr__(name: str) -> Any:
    # `celery -A workers` looks up `workers.app`; building it lazily keeps settings out of import time
    # for everything else that imports this package (tests, the CLI).
    if name in ("app", "celery"):
        from workers.start import worker_app

        app = worker_app()
        globals()["app"] = globals()["celery"] = app
        return app
    raise AttributeError(name)
