"""A worker process's applier: the message Celery delivered, and those waiting behind it, applied in
one transaction and acknowledged after it commits.

A message Celery delivers leads a group: the applier takes up to WORKER_BATCH_MESSAGES - 1 more from
its queue (workers/drain.py), applies them together (workers/apply/messages.py: a lone message is a
group of one) and acknowledges them only after the commit; docs/batching.md says why this design.
When that fails, workers/failures.py decides what to do, and the applier narrows down step by step:

    together (no savepoint) -> isolated (a savepoint per message, then per call)
    -> the leader alone, isolated -> the leader's calls kept whole as dead letters

A step is taken on ISOLATE; RETRY repeats the step after a short wait, PAUSE waits for Postgres.

Everything it works with comes in through its constructor (the engine, the drainer, the function
that applies a group, the dead-letter sink, the clock), so tests hand it fakes instead of patching.
"""

from __future__ import annotations

import enum
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

import redis
from celery import Task
from celery.exceptions import Reject
from sqlalchemy import Connection, Engine, text

from shared import metrics, wire
from shared.db import make_engine
from shared.envelope import VERSION, Envelope, EnvelopeError, EnvelopeKeys, SignatureError
from shared.erasure import Suppression
from shared.queues import INGEST
from shared.redisconn import make_redis
from shared.settings import Settings
from shared.timeparse import utcnow
from workers.apply import deadletters
from workers.apply.deadletters import LetterToKeep, letter_key
from workers.apply.messages import Outcome, Prepared, apply_messages, message_letters, prepare
from workers.broker import SET_ASIDE, SET_ASIDE_TOKEN
from workers.drain import Drainer, RedisFull, Taken
from workers.failures import (
    Action,
    classify,
    describe,
    is_not_primary,
    is_unreachable,
    raised_at,
)

logger = logging.getLogger(__name__)

MAX_BACKOFF = 30.0
"""The longest wait, in seconds, between two attempts while Postgres is unreachable."""
RETRY_PAUSE = 0.05
"""The first wait, in seconds, after a deadlock or another transient conflict; it doubles."""
LOCK_TIMEOUT_MS = 10_000
"""A worker's statement waits at most this long for a lock, then its group is retried."""
STATEMENT_TIMEOUT_MS = 120_000
"""A worker's statement runs at most this long, then its group is retried (TASK_TIME_LIMIT is 300)."""
UNANSWERED_KEPT = 100
"""Takes that never answered a process remembers, to put back what they took once Redis answers."""
MESSAGE_IDS_LOGGED = 20
"""At most this many messageIds on one log line; `calls` says how many the message had."""


class Clock(Protocol):
    def monotonic(self) -> float: ...
    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock."""

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


GroupApply = Callable[..., Outcome]
"""`apply_messages(conn, prepared, *, suppression, definition_budget, isolate)`, or a stand-in."""
LetterSink = Callable[[Connection, int | None, list[LetterToKeep]], None]
"""`deadletters.keep(conn, app_id, letters)`, or a stand-in for it."""


class Step(enum.Enum):
    """How narrowly the applier is applying, from the cheapest to the most careful."""

    TOGETHER = 1
    ISOLATED = 2
    ALONE = 3


def worker_engine(settings: Settings) -> Engine:
    """The engine of a worker process: small pool, bounded lock waits and statements."""
    timeouts = f"-c lock_timeout={LOCK_TIMEOUT_MS} -c statement_timeout={STATEMENT_TIMEOUT_MS}"
    return make_engine(settings, pool_size=2, max_overflow=2, connect_args={"options": timeouts})


class Applier:
    """Per-process state of a worker; the engine and the Redis client are made after the fork."""

    def __init__(
        self,
        settings: Settings,
        *,
        engine: Engine | None = None,
        drainer: Drainer | None = None,
        apply_group: GroupApply = apply_messages,
        keep_letters: LetterSink = deadletters.keep,
        clock: Clock | None = None,
    ) -> None:
        self.settings = settings
        self._suppression = Suppression(settings.suppression_secret)
        self._engine = engine
        self._drainer = drainer
        self._group_apply = apply_group
        self._keep_letters = keep_letters
        self._clock = clock or SystemClock()
        self._keys = EnvelopeKeys.of(settings)
        self._unanswered: deque[tuple[str, str]] = deque(maxlen=UNANSWERED_KEPT)
        """(queue, leader) of takes whose answer never came: they may have taken messages."""

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = worker_engine(self.settings)
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
        started = self._clock.monotonic()
        leader = str(task.request.id)
        routing_key = (getattr(task.request, "delivery_info", None) or {}).get("routing_key")
        queue = routing_key or INGEST
        label = metrics.queue_label(routing_key)  # never a value a sender chose
        step = Step.TOGETHER
        attempt = 0
        while True:
            grouped = step is not Step.ALONE and self.settings.worker_batch_messages > 1
            taken = self._take(queue, leader, _calls(payload)) if grouped else []
            try:
                outcome, prepared = self._apply_group(leader, payload, taken, step)
            except Exception as exc:
                if taken:
                    self._put_back(queue, leader)
                action = classify(exc)
                if action is Action.DEAD_LETTER:
                    # Celery kills the task TASK_TIME_LIMIT seconds in and acknowledges its message
                    # all the same: no second try in what is left, the leader's calls are kept now
                    # (the taken messages are back on the queue for another task).
                    logger.error("message past its time limit", extra=_ids(payload))
                    self._keep_whole(payload, leader, "time_limit", "the task's soft time limit")
                    return
                if action is Action.PAUSE:
                    self._pause(exc, started)
                    continue
                if action is Action.RETRY:
                    attempt += 1
                    if attempt > self.settings.task_max_retries:
                        self._keep_whole(payload, leader, "retries_exhausted", describe(exc))
                        return
                    metrics.RETRIES.labels(label).inc()
                    logger.warning(
                        "transient failure, retrying",
                        extra=_ids(payload) | {"error": describe(exc), "retries": attempt},
                    )
                    self._clock.sleep(random.uniform(0, RETRY_PAUSE * 2**attempt))  # noqa: S311 (jitter)
                    continue
                narrower = _narrower(step, grouped=bool(taken))
                if narrower is not None:
                    logger.warning(
                        "group failed, applying it more narrowly",
                        extra=_ids(payload) | {"error": describe(exc), "step": narrower.name},
                    )
                    step = narrower
                    continue
                logger.error("message failed",
                             extra=_ids(payload) | {"error": describe(exc), "at": raised_at(exc)})  # fmt: skip
                self._keep_whole(payload, leader, "worker_error", f"{type(exc).__name__}: {exc}")
                return
            if taken:
                self._ack(queue, leader, taken)
            break
        self._report(outcome, prepared, label, self._clock.monotonic() - started)

    def _apply_group(
        self, leader: str, payload: Any, taken: list[Taken], step: Step
    ) -> tuple[Outcome, list[Prepared]]:
        """One transaction for the leader and the messages taken behind it; messages that are
        not ours, not envelopes or not signed with ENVELOPE_SECRET become dead letters in it,
        alone. An envelope is verified before anything of it is read, and what is applied is the
        very object verified."""
        prepared: list[Prepared] = []
        letters: list[LetterToKeep] = []
        refused: list[tuple[Any, list[LetterToKeep]]] = []
        for delivery_id, body, raw in [_leader(leader, payload)] + [_decode(t) for t in taken]:
            if isinstance(body, wire.ForeignMessage):
                letters.append(
                    LetterToKeep(letter_key(body.code, delivery_id), body.code, str(body), raw)
                )
                continue
            try:
                self._keys.verify(body)
                prepared.append(prepare(Envelope.from_dict(body), delivery_id))
            except SignatureError as exc:
                _log_refused(body, delivery_id, exc)
                refused.append(
                    (body.get("app_id"), message_letters(body, delivery_id, exc.code, str(exc)))
                )
            except EnvelopeError as exc:
                reason = _envelope_reason(body)
                logger.error(
                    "message set aside", extra={"reason": reason, "delivery_id": delivery_id}
                )
                letters.extend(message_letters(body, delivery_id, reason, str(exc)))
        with self.engine.begin() as conn:
            outcome = self._group_apply(
                conn,
                prepared,
                suppression=self._suppression,
                definition_budget=self.settings.definition_budget,
                isolate=step is not Step.TOGETHER,
            )
            self._keep_letters(conn, None, letters)
            for app_id, kept in refused:
                self._keep_letters(conn, _known_app(conn, app_id), kept)
                letters.extend(kept)
        for letter in letters:
            outcome.dead_letters[letter.reason] += 1
        return outcome, prepared

    def _keep_whole(self, payload: Any, leader: str, reason: str, error: str) -> None:
        """Keep every call of the leader as a dead letter (Postgres answers, but never for it);
        if even that fails, the message goes back to the queue rather than away. A leader no
        ENVELOPE_SECRET signed keeps its signature's reason, so that it is never replayed as one
        that merely failed."""
        app_id = payload.get("app_id") if isinstance(payload, dict) else None
        if isinstance(payload, dict) and not _set_aside(payload):
            try:
                self._keys.verify(payload)
            except SignatureError as exc:
                _log_refused(payload, leader, exc)
                reason, error = exc.code, str(exc)
        letters = message_letters(payload, leader, reason, error)
        try:
            with self.engine.begin() as conn:
                self._keep_letters(conn, _known_app(conn, app_id), letters)
        except Exception as exc:
            logger.error("cannot keep dead letters, requeueing",
                         extra={"leader": leader, "error": describe(exc)})  # fmt: skip
            raise Reject("cannot keep dead letters", requeue=True) from None
        metrics.DEAD_LETTERS.labels(reason=reason).inc(len(letters))
        logger.error("message dead-lettered", extra=_ids(payload) | {"reason": reason})

    def _take(self, queue: str, leader: str, leader_calls: int) -> list[Taken]:
        """The messages waiting behind the leader, up to the group's limits; none if Redis cannot
        give them now."""
        self._give_back_unanswered()
        most_calls = self.settings.worker_batch_calls - leader_calls
        if most_calls <= 0:
            return []
        try:
            return self.drainer.take(
                queue,
                leader,
                self.settings.worker_batch_messages - 1,
                self.settings.worker_batch_bytes,
                most_calls,
            )
        except RedisFull:
            logger.warning(
                "redis is full, applying one message at a time", extra={"leader": leader}
            )
        except redis.RedisError as exc:
            logger.warning(
                "cannot take more messages", extra={"leader": leader, "error": type(exc).__name__}
            )
            if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
                # The script may have run and its answer been lost with the connection (a master
                # killed, a failover): the messages it took wait in `unacked` under this leader's
                # group record. They are put back as soon as Redis answers again, not after
                # VISIBILITY_TIMEOUT.
                self._unanswered.append((queue, leader))
        return []

    def _give_back_unanswered(self) -> None:
        """Put back what takes that never answered may have taken (nothing, if they took none)."""
        while self._unanswered:
            queue, leader = self._unanswered[0]
            try:
                restored = self.drainer.restore(queue, leader)
            except redis.RedisError:
                return  # still unreachable: next time
            self._unanswered.popleft()
            if restored:
                logger.warning(
                    "messages of an unanswered take put back",
                    extra={"leader": leader, "messages": restored},
                )

    def _put_back(self, queue: str, leader: str) -> None:
        try:
            self.drainer.restore(queue, leader)
        except redis.RedisError as exc:  # kombu restores them after VISIBILITY_TIMEOUT
            logger.warning(
                "cannot put a group back", extra={"leader": leader, "error": type(exc).__name__}
            )

    def _ack(self, queue: str, leader: str, taken: list[Taken]) -> None:
        try:
            self.drainer.ack(queue, leader, taken)
        except redis.RedisError as exc:  # applied: a redelivery is a duplicate, skipped
            logger.warning(
                "cannot acknowledge a group", extra={"leader": leader, "error": type(exc).__name__}
            )

    def _pause(self, exc: Exception, since: float) -> None:
        """Postgres cannot be reached, or takes no writes: consume nothing until a writable node
        answers, with jittered waits so that workers do not all come back at once. Past half TASK_TIME_LIMIT the message goes back
        to the queue (Reject) and this process starts over with the next one."""
        logger.warning("database unreachable, pausing", extra={"error": describe(exc)})
        metrics.WORKER_PAUSES.inc()
        if is_not_primary(exc):
            self.engine.dispose()
        delay = 1.0
        while True:
            if self._clock.monotonic() - since > self.settings.task_time_limit / 2:
                raise Reject("database unreachable", requeue=True)
            self._clock.sleep(random.uniform(delay / 2, delay))  # noqa: S311 (jitter, not a secret)
            delay = min(delay * 2, MAX_BACKOFF)
            try:
                with self.engine.connect() as conn:
                    read_only = conn.scalar(text("SHOW transaction_read_only")) == "on"
            except Exception as probe:
                if not is_unreachable(probe):
                    return
                continue
            if read_only:
                # Pooled connections stay on the node that refused: new ones go through
                # DATABASE_URL's hosts again (target_session_attrs=read-write) to find the primary.
                self.engine.dispose()
                continue
            logger.info("database reachable, resuming")
            return

    def _report(
        self, outcome: Outcome, prepared: list[Prepared], label: str, seconds: float
    ) -> None:
        """Metrics (`label`: the queue's) and one log line a message, once the group commits."""
        try:
            _record_metrics(outcome, prepared, label, seconds)
        except Exception:  # metrics must never undo or fail applied work
            logger.error("could not record metrics")
        info = logger.isEnabledFor(logging.INFO)  # the lines' fields cost as much as a call
        for p in prepared:
            if p.env.app_id in outcome.unknown_apps:
                fields = _log_fields(p, len(prepared)) | {"reason": "unknown_app"}
                logger.error("message dead-lettered", extra=fields)
            elif info:
                logger.info("message applied", extra=_log_fields(p, len(prepared)))


def _narrower(step: Step, *, grouped: bool) -> Step | None:
    """The next, more careful step after one that failed for good; None when none is left."""
    if step is Step.TOGETHER:
        return Step.ISOLATED
    if step is Step.ISOLATED and grouped:
        return Step.ALONE  # the leader alone: the others are each taken again soon
    return None


def _set_aside(payload: Any) -> bool:
    """Whether `payload` is a set-aside envelope this worker's decoder made (workers/broker.py)."""
    return (
        isinstance(payload, dict)
        and isinstance(payload.get(SET_ASIDE), str)
        and payload.get("token") == SET_ASIDE_TOKEN
    )


def _leader(leader: str, payload: Any) -> tuple[str, Any, Any]:
    """The leader as `_decode` gives a taken message: workers/broker.py delivers a message that
    is not ours as an envelope `{"set_aside": reason, "raw": text}`."""
    if _set_aside(payload):
        reason = payload[SET_ASIDE]
        foreign = wire.ForeignMessage(reason, f"set aside by the worker: {reason}")
        return leader, foreign, payload.get("raw")
    return leader, payload, None


def _decode(taken: Taken) -> tuple[str | None, Any, Any]:
    """(task id, envelope, None), or (tag, ForeignMessage, the message as text) for one to set
    aside."""
    try:
        task_id, body = wire.parse_task_message(taken.raw)
    except wire.ForeignMessage as exc:  # never its body in a log: it may be anything
        logger.error("message set aside", extra={"reason": exc.code, "tag": taken.tag})
        return taken.tag, exc, taken.raw.decode("utf-8", "replace")
    return task_id, body, None


def _known_app(conn: Connection, app_id: Any) -> int | None:
    """`app_id` where it names an app that exists, else None (the letters' app). It may be any
    value a forged message holds: one Postgres's bigint cannot take is no app either."""
    if type(app_id) is not int or not -(2**63) <= app_id < 2**63:
        return None
    if not conn.scalar(text("SELECT 1 FROM apps WHERE id = :a"), {"a": app_id}):
        return None
    return app_id


def _log_refused(body: dict[str, Any], delivery_id: str | None, exc: SignatureError) -> None:
    """The log line of a message refused for its signature: the app it claims, never more of
    what it holds."""
    claimed = body.get("app_id")
    logger.error(
        "message refused: not signed with ENVELOPE_SECRET",
        extra={
            "reason": exc.code,
            "delivery_id": delivery_id,
            "app_id": claimed if type(claimed) is int else None,
        },
    )


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


def _record_metrics(outcome: Outcome, prepared: list[Prepared], queue: str, seconds: float) -> None:
    for kind, n in outcome.applied.items():
        metrics.CALLS_APPLIED.labels(type=kind).inc(n)
    for reason, n in outcome.dead_letters.items():
        metrics.DEAD_LETTERS.labels(reason=reason).inc(n)
    for kind, n in outcome.routed_away.items():
        metrics.CALLS_ROUTED_AWAY.labels(type=kind).inc(n)
    for kind, n in outcome.suppressed.items():
        metrics.CALLS_SUPPRESSED.labels(type=kind).inc(n)
    for (scope, _event, _name, reason), n in outcome.ignored.items():
        # The attribute's name is the sender's: it goes to `ignored_values`, never to a label.
        if reason == "over_cap":
            metrics.NAMES_OVER_CAP.labels(scope=scope).inc(n)
        elif reason == "over_budget":
            metrics.NAMES_OVER_BUDGET.labels(scope=scope).inc(n)
        else:
            metrics.COERCIONS_IGNORED.labels(scope=scope, reason=reason).inc(n)
    if outcome.duplicates:
        metrics.DUPLICATES_SKIPPED.labels(queue).inc(outcome.duplicates)
    now = utcnow()
    lag = metrics.APPLY_LAG_SECONDS.labels(queue)
    for p in prepared:
        if p.received_at is not None:
            lag.observe(max(0.0, (now - p.received_at).total_seconds()))
    metrics.APPLY_BATCH_SECONDS.observe(seconds)
    metrics.GROUP_MESSAGES.observe(len(prepared))


def _calls(payload: Any) -> int:
    """How many calls the leader carries, for the group's WORKER_BATCH_CALLS."""
    calls = payload.get("calls") if isinstance(payload, dict) else None
    return len(calls) if isinstance(calls, list) else 1
