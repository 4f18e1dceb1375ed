"""The Celery app both sides build: the receiver to publish, the workers to consume."""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu import Exchange, Queue

from shared.queues import APPLY_TASK, INGEST, QUEUES
from shared.redisconn import is_sentinel, sentinel_kwargs
from shared.settings import Settings


def make_celery(settings: Settings) -> Celery:
    """A Celery app for REDIS_URL: JSON only, the two queues declared. The apply task's own options
    (late acks, time limits, no result) are set where it is defined, in workers/tasks.py."""
    app = Celery("userdest", broker=settings.redis_url, set_as_current=False)
    # The visibility timeout must exceed the longest task, or Redis hands a running message to a
    # second worker; Celery reads it from the transport options of the broker (and of a result
    # backend, which userdest does not use), so it is set in both.
    transport: dict[str, Any] = {
        "visibility_timeout": settings.visibility_timeout,
        "socket_timeout": settings.broker_timeout,
        "socket_connect_timeout": settings.broker_timeout,
        "max_retries": 0,
    }
    if is_sentinel(settings.redis_url):
        # kombu's sentinel:// transport asks these Sentinels for the master on every connection.
        transport["master_name"] = settings.redis_sentinel_master
        transport["sentinel_kwargs"] = sentinel_kwargs(settings)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_store_errors_even_if_ignored=False,
        task_default_queue=INGEST,
        task_queues=[Queue(q, Exchange(q), routing_key=q) for q in QUEUES],
        task_routes={APPLY_TASK: {"queue": INGEST}},
        task_create_missing_queues=False,
        broker_transport_options=transport,
        result_backend_transport_options=transport,
        broker_connection_retry_on_startup=True,
        # A failover or a restart of Redis is waited out, however long: the worker stays up
        # (Celery's default gives up after 100 tries and the process exits).
        broker_connection_max_retries=None,
        broker_pool_limit=10,
        worker_prefetch_multiplier=settings.worker_prefetch,
        worker_concurrency=settings.worker_concurrency,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        enable_utc=True,
    )
    return app
