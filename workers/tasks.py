"""The one Celery task, with its options at the definition: apply a queued message, and the messages
waiting behind it, in one transaction (workers/applier.py); then the process's housekeeping.

The task owns the transaction: apply-functions never commit. Delivery is at least once (late acks;
a lost worker's messages return to the queue); effects are exactly once because the dedupe records
commit with them.
"""

from __future__ import annotations

from typing import Any

from celery import Celery, Task

from shared.queues import APPLY_TASK
from shared.settings import Settings
from workers.applier import Applier
from workers.housekeeping import Housekeeping


def register(app: Celery, settings: Settings) -> Task:
    """Define the apply task on `app`."""
    applier = Applier(settings)
    housekeeping = Housekeeping(lambda: applier.engine, settings.dedupe_days)

    @app.task(
        name=APPLY_TASK,
        bind=True,
        acks_late=True,  # acknowledged once applied: a lost worker's message is delivered again
        reject_on_worker_lost=True,
        ignore_result=True,
        max_retries=None,  # retries happen inside the task (workers/failures.py), never by Celery
        time_limit=settings.task_time_limit,
        soft_time_limit=settings.task_soft_time_limit,
    )
    def apply_message(self: Task, envelope: Any) -> None:
        applier.apply(self, envelope)
        housekeeping.run()

    return apply_message
