"""The one Celery task: apply a queued message, and the messages waiting behind it, in one
transaction; then acknowledge them.

The task owns the transaction (STYLE 6): apply-functions never commit. Delivery is at least once
(late acks; a lost worker's messages return to the queue); effects are exactly once because the
dedupe records commit with them. A message Celery delivers leads a group: the task takes up to
WORKER_BATCH_MESSAGES - 1 more from its queue (workers/drain.py), applies them together and
acknowledges them only after the commit (SPEC 5.9; docs/batching.md says why this design).
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any

import redis
from celery import Celery, Task
from celery.exceptions import Reject, SoftTimeLimitExceeded
from sqlalchemy import Engine, text

from shared import metrics
from shared.db import make_engine
from shared.envelope import VERSION, Envelope, EnvelopeError
from shared.publish import make_redis
from shared.queues import APPLY_TASK, INGEST
from shared.settings import Settings
from shared.timeparse import parse_iso, utcnow
from workers.apply import store
from workers.apply.batch import (
    CallFailed,
    Outcome,
    Prepared,
    apply_envelope,
    apply_messages,
    describe,
    is_transient,
    is_unreachable,
    message_letters,
    prepare,
)
from workers.apply.deadletters import LetterToKeep
from workers.apply.deadletters import store as store_dead_letters
from workers.broker import SET_ASIDE
from workers.drain import Drainer, Full, NotOurs, Taken, task_message

logger = logging.getLogger(__name__)

MAX_BACKOFF = 30.0
"""The longest wait, in seconds, between two attempts while Postgres is unreachable."""
RETRY_PAUSE = 0.05
"""The first wait, in seconds, after a deadlock or another transient conflict; it doubles."""
PRUNE_EVERY = 600.0
"""Seconds between two prunes of old dedupe records by one worker process."""
MOVE_EVERY = 1.0
"""Seconds between two background moves of merged profiles' history by one worker process, while
there is history to move (a merge leaves it behind: SPEC 5.7 at a cost bounded per request)."""
LOCK_TIMEOUT_MS = 10_000
"""A worker's statement waits at most this long for a lock, then its group is retried."""
STATEMENT_TIMEOUT_MS = 120_000
"""A worker's statement runs at most this long, then its group is retried (TASK_TIME_LIMIT is 300)."""


class Applier:
    """Per-process state of a worker: settings, an engine and a Redis client made after the fork."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._engine: Engine | None = None
        self._drainer: Drainer | None = None
        self._next_prune = 0.0
        self._next_move = 0.0

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            timeouts = (
                f"-c lock_timeout={LOCK_TIMEOUT_MS} -c statement_timeout={STATEMENT_TIMEOUT_MS}"
            )
            self._engine = make_engine(
                self.settings, pool_size=2, max_overflow=2, connect_args={"options": timeouts}
            )
        return self._engine

    @property
    def drainer(self) -> Drainer:
        if self._drainer is None:
            self._drainer = Drainer(make_redis(self.settings), self.settings.visibility_timeout)
        return self._drainer

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def apply(self, task: Task, payload: Any) -> None:
        """Apply the message `payload` and those waiting behind it; return once they are applied
        or kept as dead letters, or raise Reject to put the message back (a long outage)."""
        started = time.monotonic()
        leader = str(task.request.id)
        queue = (getattr(task.request, "delivery_info", None) or {}).get("routing_key") or INGEST
        group = self.settings.worker_batch_messages > 1
        attempt = 0
        while True:
            taken = self._take(queue, leader) if group else []
            try:
                outcome, prepared = self._apply_group(leader, payload, taken)
            except Exception as exc:
                if taken:
                    self._put_back(queue, leader)
                if isinstance(exc, SoftTimeLimitExceeded):
                    # Celery kills the task TASK_TIME_LIMIT seconds in and acknowledges its message
                    # all the same: no second try in what is left, the leader's calls are kept now
                    # (the taken messages are back on the queue for another task).
                    logger.error("message past its time limit", extra=_ids(payload))
                    self._keep_whole(payload, leader, "time_limit", "the task's soft time limit")
                    return
                if not is_transient(exc):
                    if taken:
                        # Isolate: the leader alone; the others are each taken again soon.
                        logger.warning("group failed, applying its first message alone",
                                       extra=_ids(payload) | {"error": describe(exc)})  # fmt: skip
                        group = False
                        continue
                    logger.error("message failed",
                                 extra=_ids(payload) | {"error": describe(exc), "at": where(exc)})  # fmt: skip
                    self._keep_whole(
                        payload, leader, "worker_error", f"{type(exc).__name__}: {exc}"
                    )
                    return
                if is_unreachable(exc):
                    self._pause(exc, started)
                    continue
                attempt += 1
                if attempt > self.settings.task_max_retries:
                    self._keep_whole(payload, leader, "retries_exhausted", describe(exc))
                    return
                metrics.RETRIES.labels(queue_of(task)).inc()
                logger.warning(
                    "transient failure, retrying",
                    extra=_ids(payload) | {"error": describe(exc), "retries": attempt},
                )
                time.sleep(random.uniform(0, RETRY_PAUSE * 2**attempt))  # noqa: S311 (jitter)
                continue
            if taken:
                self._ack(leader, taken)
            break
        self.prune()
        self.move_merged()
        try:
            _record_metrics(outcome, prepared, queue_of(task), time.monotonic() - started)
        except Exception:  # metrics must never undo or fail applied work
            logger.error("could not record metrics", extra={"leader": leader})
        for p in prepared:
            if p.env.app_id in outcome.unknown_apps:
                fields = _log_fields(p, len(prepared)) | {"reason": "unknown_app"}
                logger.error("message dead-lettered", extra=fields)
            else:
                logger.info("message applied", extra=_log_fields(p, len(prepared)))

    def _apply_group(
        self, leader: str, payload: Any, taken: list[Taken]
    ) -> tuple[Outcome, list[Prepared]]:
        """One transaction for the leader and the messages taken behind it; messages that are
        not ours or not envelopes become dead letters in it, alone."""
        prepared: list[Prepared] = []
        letters: list[LetterToKeep] = []
        first = _set_aside(leader, payload)
        for delivery_id, body, raw in [first] + [_decode(t) for t in taken]:
            if isinstance(body, NotOurs):
                letters.append(
                    LetterToKeep(f"{body.code}:{delivery_id}", body.code, str(body), raw)
                )
                continue
            try:
                prepared.append(prepare(Envelope.from_dict(body), delivery_id))
            except EnvelopeError as exc:
                reason = _envelope_reason(body)
                logger.error(
                    "message set aside", extra={"reason": reason, "delivery_id": delivery_id}
                )
                letters.extend(message_letters(body, delivery_id, reason, str(exc)))
        if len(prepared) == 1 and not letters:
            return self._apply_one(prepared[0]), prepared
        with self.engine.begin() as conn:
            outcome = apply_messages(conn, prepared)
            store_dead_letters(conn, None, letters)
        for letter in letters:
            outcome.dead_letters[letter.reason] += 1
        return outcome, prepared

    def _apply_one(self, prepared: Prepared) -> Outcome:
        """A message alone: a lone call that fails for good is kept in a fresh transaction."""
        env = prepared.env
        try:
            with self.engine.begin() as conn:
                return apply_envelope(conn, env, prepared.delivery_id)
        except store.UnknownApp as exc:
            reason, letters = (
                "unknown_app",
                message_letters(env.to_dict(), prepared.delivery_id, "unknown_app", str(exc)),
            )
            app_id = None
        except CallFailed as failed:
            logger.warning("call failed", extra={"app_id": env.app_id, "request_id": env.request_id,
                                                 "message_ids": [failed.letter.message_id]})  # fmt: skip
            reason, letters, app_id = failed.letter.reason, [failed.letter], env.app_id
        with self.engine.begin() as conn:
            store_dead_letters(conn, app_id, letters)
        outcome = Outcome()
        outcome.dead_letters[reason] += len(letters)
        if app_id is None:
            outcome.unknown_apps.add(env.app_id)
        return outcome

    def _keep_whole(self, payload: Any, leader: str, reason: str, error: str) -> None:
        """Keep every call of the leader as a dead letter (Postgres answers, but never for it);
        if even that fails, the message goes back to the queue rather than away."""
        app_id = payload.get("app_id") if isinstance(payload, dict) else None
        letters = message_letters(payload, leader, reason, error)
        try:
            with self.engine.begin() as conn:
                exists = isinstance(app_id, int) and conn.scalar(
                    text("SELECT 1 FROM apps WHERE id = :a"), {"a": app_id}
                )
                store_dead_letters(conn, app_id if exists else None, letters)
        except Exception as exc:
            logger.error("cannot keep dead letters, requeueing",
                         extra={"leader": leader, "error": describe(exc)})  # fmt: skip
            raise Reject("cannot keep dead letters", requeue=True) from None
        metrics.DEAD_LETTERS.labels(reason=reason).inc(len(letters))
        logger.error("message dead-lettered", extra=_ids(payload) | {"reason": reason})

    def _take(self, queue: str, leader: str) -> list[Taken]:
        """The messages waiting behind the leader; none if Redis cannot give them now."""
        try:
            return self.drainer.take(
                queue,
                leader,
                self.settings.worker_batch_messages - 1,
                self.settings.worker_batch_bytes,
            )
        except Full:
            logger.warning(
                "redis is full, applying one message at a time", extra={"leader": leader}
            )
        except redis.RedisError as exc:
            logger.warning(
                "cannot take more messages", extra={"leader": leader, "error": type(exc).__name__}
            )
        return []

    def _put_back(self, queue: str, leader: str) -> None:
        try:
            self.drainer.restore(queue, leader)
        except redis.RedisError as exc:  # kombu restores them after VISIBILITY_TIMEOUT
            logger.warning(
                "cannot put a group back", extra={"leader": leader, "error": type(exc).__name__}
            )

    def _ack(self, leader: str, taken: list[Taken]) -> None:
        try:
            self.drainer.ack(leader, taken)
        except redis.RedisError as exc:  # applied: a redelivery is a duplicate, skipped
            logger.warning(
                "cannot acknowledge a group", extra={"leader": leader, "error": type(exc).__name__}
            )

    def _pause(self, exc: Exception, since: float) -> None:
        """Postgres cannot be reached: consume nothing until it answers, with jittered waits so
        that workers do not all come back at once. Past half TASK_TIME_LIMIT the message goes back
        to the queue (Reject) and this process starts over with the next one."""
        logger.warning("database unreachable, pausing", extra={"error": describe(exc)})
        metrics.WORKER_PAUSES.inc()
        delay = 1.0
        while True:
            if time.monotonic() - since > self.settings.task_time_limit / 2:
                raise Reject("database unreachable", requeue=True)
            time.sleep(random.uniform(delay / 2, delay))  # noqa: S311 (jitter, not a secret)
            delay = min(delay * 2, MAX_BACKOFF)
            try:
                with self.engine.connect() as conn:
                    conn.execute(text("SELECT 1"))
            except Exception as probe:
                if not is_unreachable(probe):
                    return
                continue
            logger.info("database reachable, resuming")
            return

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


def _set_aside(leader: str, payload: Any) -> tuple[str, Any, Any]:
    """The leader as `_decode` gives a taken message: workers/broker.py delivers a message that
    is not ours as an envelope `{"set_aside": reason, "raw": text}`."""
    if isinstance(payload, dict) and isinstance(payload.get(SET_ASIDE), str):
        reason = payload[SET_ASIDE]
        return leader, NotOurs(reason, f"set aside by the worker: {reason}"), payload.get("raw")
    return leader, payload, None


def _decode(taken: Taken) -> tuple[str | None, Any, Any]:
    """(task id, envelope, None), or (tag, NotOurs, the message as text) for one to set aside."""
    try:
        task_id, body = task_message(taken.raw, APPLY_TASK)
    except NotOurs as exc:  # never its body in a log: it may be anything
        logger.error("message set aside", extra={"reason": exc.code, "tag": taken.tag})
        return taken.tag, exc, taken.raw.decode("utf-8", "replace")
    return task_id, body, None


def _envelope_reason(body: Any) -> str:
    """`envelope_version` for an envelope of another version, `bad_envelope` otherwise."""
    if isinstance(body, dict) and "v" in body and body["v"] != VERSION:
        return "envelope_version"
    return "bad_envelope"


def _ids(payload: Any) -> dict[str, Any]:
    """What names a (possibly malformed) message on a log line: app, request and messageIds."""
    if not isinstance(payload, dict):
        return {}
    ids = payload.get("message_ids")
    return {
        "app_id": payload.get("app_id"),
        "request_id": payload.get("request_id"),
        "message_ids": ids[:MESSAGE_IDS_LOGGED] if isinstance(ids, list) else None,
    }


MESSAGE_IDS_LOGGED = 20
"""At most this many messageIds on one log line; `calls` says how many the message had."""


def _log_fields(p: Prepared, group: int) -> dict[str, Any]:
    env = p.env
    return {
        "app_id": env.app_id,
        "request_id": env.request_id,
        "delivery_id": p.delivery_id,
        "message_ids": env.message_ids[:MESSAGE_IDS_LOGGED],
        "call_count": len(env.calls),
        "group": group,
    }


def where(exc: BaseException) -> str:
    """file:line of the innermost frame an exception came from: enough to find a bug, no values."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}" if tb is not None else "?"


def queue_of(task: Task) -> str:
    """The queue a message came from, as a metric label (never a value a sender chose)."""
    delivery = getattr(task.request, "delivery_info", None) or {}
    return metrics.queue_label(delivery.get("routing_key"))


def _record_metrics(outcome: Outcome, prepared: list[Prepared], queue: str, seconds: float) -> None:
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
    now = utcnow()
    for p in prepared:
        received = parse_iso(p.env.received_at)
        if received is not None:
            lag = max(0.0, (now - received).total_seconds())
            metrics.APPLY_LAG_SECONDS.labels(queue).observe(lag)
    metrics.APPLY_BATCH_SECONDS.observe(seconds)
    metrics.GROUP_MESSAGES.observe(len(prepared))


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
        soft_time_limit=settings.task_soft_time_limit,
    )
    def apply_message(self: Task, envelope: Any) -> None:
        applier.apply(self, envelope)

    return apply_message
