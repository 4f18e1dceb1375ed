"""A stand-in for the Celery task an `Applier` runs in: what it reads of Celery's request."""

from __future__ import annotations

from types import SimpleNamespace

from shared.queues import INGEST


class FakeTask:
    """A task request with an id and the queue it came from (`queue=None`: no delivery info)."""

    def __init__(self, task_id: str = "task-1", queue: str | None = INGEST) -> None:
        delivery = {} if queue is None else {"routing_key": queue}
        self.request = SimpleNamespace(id=task_id, delivery_info=delivery)
