"""The one Celery task: apply every call of one queued message, then acknowledge it.

The task owns the transaction (STYLE 6): apply-functions never commit. Delivery is at least once
(late acks; a lost worker's message returns to the queue); effects are exactly once because the
dedupe records commit with them.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import Celery, Task
from sqlalchemy import Engine

from shared import metrics
from shared.db import make_engine
from shared.envelope import Envelope, EnvelopeError
from shared.queues import APPLY_TASK
from shared.settings import Settings
from shared.timeparse import parse_iso, utcnow
from workers.apply import store
from workers.apply.batch import (
    CallFailed,
    Outcome,
    Retriable,
    apply_envelope,
    describe,
    is_transient,
    is_unreachable,
)
from workers.apply.deadletters import LetterToKeep
from workers.apply.deadletters import store as store_dead_letters

logger = logging.getLogger(__name__)

MAX_BACKOFF = 60
PRUNE_EVERY = 600.0
"""Seconds between two prunes of old dedupe records by one worker process."""
MOVE_EVERY = 1.0
"""Seconds between two background moves of merged profiles' history by one worker process, while
there is history to move (a merge leaves it behind: SPEC 5.7 at a cost bounded per request)."""


class Applier:
    """Per-process state of a worker: settings and an engine made after the fork, on first use."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._engine: Engine | None = None
        self._next_prune = 0.0
        self._next_move = 0.0

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = make_engine(self.settings, pool_size=2, max_overflow=2)
        return self._engine

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def apply(self, task: Task, payload: Any) -> None:
        started = time.perf_counter()
        try:
            env = Envelope.from_dict(payload)
        except EnvelopeError as exc:
            self._dead_letter_all(task, None, payload, "bad_envelope", str(exc))
            return
        try:
            with self.engine.begin() as conn:
                outcome = apply_envelope(conn, env, task.request.id)
        except store.UnknownApp as exc:
            self._dead_letter_all(task, None, payload, "unknown_app", str(exc))
            return
        except CallFailed as failed:
            logger.warning("call failed", extra={"request_id": env.request_id})
            self._keep(task, env.app_id, [failed.letter])
            return
        except Exception as exc:
            if is_transient(exc):
                self._retry(task, env, exc)
            else:
                # A bug outside the per-call isolation: keep the calls rather than ack them away.
                logger.error(
                    "message failed",
                    extra={"request_id": env.request_id, "error": describe(exc), "at": where(exc)},
                )
                self._dead_letter_all(
                    task, env.app_id, payload, "worker_error", f"{type(exc).__name__}: {exc}"
                )
            return
        self.prune()
        self.move_merged()
        try:
            _record_metrics(outcome, env, queue_of(task), time.perf_counter() - started)
        except Exception:  # metrics must never undo or fail applied work
            logger.error("could not record metrics", extra={"request_id": env.request_id})
        logger.info(
            "message applied",
            extra={
                "request_id": env.request_id,
                "applied": sum(outcome.applied.values()),
                "duplicates": outcome.duplicates,
                "routed_away": sum(outcome.routed_away.values()),
                "dead_letters": sum(outcome.dead_letters.values()),
            },
        )

    def prune(self) -> None:
        """Now and then, forget messageIds older than DEDUPE_DAYS so the table stays bounded."""
        if time.monotonic() < self._next_prune:
            return
        self._next_prune = time.monotonic() + PRUNE_EVERY
        try:
            with self.engine.begin() as conn:
                pruned = store.prune_processed(conn, self.settings.dedupe_days)
        except Exception as exc:  # a prune can wait for the next round; the message is applied
            logger.warning("could not prune dedupe records", extra={"error": type(exc).__name__})
            return
        if pruned:
            logger.info("pruned dedupe records", extra={"pruned": pruned})

    def move_merged(self) -> None:
        """Now and then, move a bounded batch of a merged-away profile's history to the profile
        it was merged into, in a transaction of its own (store.move_merged)."""
        if time.monotonic() < self._next_move:
            return
        self._next_move = time.monotonic() + MOVE_EVERY
        try:
            with self.engine.begin() as conn:
                moved = store.move_merged(conn)
        except Exception as exc:  # the history waits for the next round; readers follow it
            logger.warning("could not move merged history", extra={"error": type(exc).__name__})
            return
        if moved:
            self._next_move = 0.0  # more may wait: the next message moves the next batch
            logger.info("moved merged history", extra={"moved": moved})

    def _retry(self, task: Task, env: Envelope, exc: Exception) -> None:
        retries = task.request.retries
        if is_unreachable(exc) or retries < self.settings.task_max_retries:
            # Postgres being down is not the message's fault: it waits in Redis, however long.
            logger.warning(
                "transient failure, retrying",
                extra={
                    "request_id": env.request_id,
                    "error": type(exc).__name__,
                    "retries": retries,
                },
            )
            metrics.RETRIES.labels(queue_of(task)).inc()
            raise _retry_later(task, exc)
        self._dead_letter_all(
            task, env.app_id, env.to_dict(), "retries_exhausted", f"{type(exc).__name__}: {exc}"
        )

    def _keep(self, task: Task, app_id: int | None, letters: list[LetterToKeep]) -> None:
        """Store dead letters in a transaction of their own, or retry the message if Postgres is
        down: a message is never acknowledged with its calls nowhere."""
        try:
            with self.engine.begin() as conn:
                store_dead_letters(conn, app_id, letters)
        except Exception as exc:
            if not is_transient(exc):
                raise
            logger.warning("cannot store dead letters yet", extra={"error": type(exc).__name__})
            metrics.RETRIES.labels(queue_of(task)).inc()
            raise _retry_later(task, exc) from exc
        for letter in letters:
            metrics.DEAD_LETTERS.labels(reason=letter.reason).inc()

    def _dead_letter_all(
        self, task: Task, app_id: int | None, payload: Any, reason: str, error: str
    ) -> None:
        """Keep every call of a message that cannot be applied at all."""
        calls = payload.get("calls") if isinstance(payload, dict) else None
        ids = payload.get("message_ids") if isinstance(payload, dict) else None
        if not isinstance(calls, list):
            calls = [payload]
        if not isinstance(ids, list) or len(ids) != len(calls):
            ids = [None] * len(calls)
        request_id = payload.get("request_id") if isinstance(payload, dict) else None
        kept = ("request_id", "received_at", "defaults", "sent_at")
        meta = {k: payload.get(k) for k in kept} if isinstance(payload, dict) else {}
        letters = [
            LetterToKeep(
                dedupe_key=f"{reason}:{app_id}:{task.request.id or request_id}:{i}:{mid}",
                reason=reason,
                error=error,
                call=call,
                message_id=mid,
                meta=meta,
            )
            for i, (call, mid) in enumerate(zip(calls, ids, strict=True))
        ]
        self._keep(task, app_id if reason != "unknown_app" else None, letters)
        logger.error("message dead-lettered", extra={"request_id": request_id, "reason": reason})


def where(exc: BaseException) -> str:
    """file:line of the innermost frame an exception came from: enough to find a bug, no values."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}" if tb is not None else "?"


def _retry_later(task: Task, exc: BaseException) -> Exception:
    """Celery's Retry for this task, with exponential backoff capped at MAX_BACKOFF seconds."""
    countdown = min(2**task.request.retries, MAX_BACKOFF)
    return task.retry(exc=Retriable(describe(exc)), countdown=countdown, max_retries=None)


def queue_of(task: Task) -> str:
    """The queue a message came from, as a metric label (never a value a sender chose)."""
    delivery = getattr(task.request, "delivery_info", None) or {}
    return metrics.queue_label(delivery.get("routing_key"))


def _record_metrics(outcome: Outcome, env: Envelope, queue: str, seconds: float) -> None:
    for kind, n in outcome.applied.items():
        metrics.CALLS_APPLIED.labels(type=kind).inc(n)
    for reason, n in outcome.dead_letters.items():
        metrics.DEAD_LETTERS.labels(reason=reason).inc(n)
    for kind, n in outcome.routed_away.items():
        metrics.CALLS_ROUTED_AWAY.labels(type=kind).inc(n)
    for (scope, _event, _name, reason), n in outcome.ignored.items():
        # The attribute's name is the sender's: it goes to `ignored_values`, never to a label.
        if reason == "over_cap":
            metrics.NAMES_OVER_CAP.labels(scope=scope).inc(n)
        else:
            metrics.COERCIONS_IGNORED.labels(scope=scope, reason=reason).inc(n)
    if outcome.duplicates:
        metrics.DUPLICATES_SKIPPED.labels(queue).inc(outcome.duplicates)
    received = parse_iso(env.received_at)
    if received is not None:
        lag = max(0.0, (utcnow() - received).total_seconds())
        metrics.APPLY_LAG_SECONDS.labels(queue).observe(lag)
    metrics.APPLY_BATCH_SECONDS.observe(seconds)


def register(app: Celery, settings: Settings) -> Task:
    """Define the apply task on `app`, with its options at the definition (STYLE 7)."""
    applier = Applier(settings)

    @app.task(
        name=APPLY_TASK,
        bind=True,
        acks_late=True,
        reject_on_worker_lost=True,
        ignore_result=True,
        max_retries=None,
        time_limit=settings.task_time_limit,
        soft_time_limit=max(1, settings.task_time_limit - 30),
    )
    def apply_message(self: Task, envelope: Any) -> None:
        applier.apply(self, envelope)

    return apply_message
