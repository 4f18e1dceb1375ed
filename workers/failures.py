"""What a worker does about an exception: the one decision, written as a table.

| what went wrong                                           | action      |
| --------------------------------------------------------- | ----------- |
| the task's soft time limit                                | DEAD_LETTER |
| Postgres cannot be reached (down, restarting, network)    | PAUSE       |
| a node that takes no writes until a failover: a Postgres  | PAUSE       |
|   standby or demoted primary (25006), a Redis replica     |             |
|   (READONLY), a Redis master short of replicas            |             |
|   (NOREPLICAS)                                            |             |
| a conflict that may pass: deadlock, serialization, lock   | RETRY       |
|   or statement timeout, a unique or foreign key another   |             |
|   transaction changed first, a profile merged meanwhile   |             |
| anything else (a bug, a value Postgres refuses)           | ISOLATE     |

PAUSE waits for Postgres without end (the message goes back to the queue past half the time limit);
RETRY tries the whole group again after a short jittered wait, TASK_MAX_RETRIES times, then keeps it
as dead letters; ISOLATE applies the group again in narrower steps (each message, then each call, in
a savepoint of its own) so that only what fails becomes a dead letter; DEAD_LETTER keeps the
message's calls as dead letters at once.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

import redis
from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy.exc import DBAPIError, OperationalError

from workers.apply.store import ProfileVanished


class Action(enum.Enum):
    DEAD_LETTER = "dead_letter"
    PAUSE = "pause"
    RETRY = "retry"
    ISOLATE = "isolate"


CONFLICT_STATES = frozenset({"40001", "40P01", "55P03", "57014", "23505", "23503"})
"""Postgres SQLSTATEs worth another try: serialization failure, deadlock, lock timeout, a statement
cancelled by its timeout, and a unique or foreign key that another transaction changed first (a
race to retry, not to hide). Anything else fails the same way every time."""

UNREACHABLE_STATES = frozenset({"57P01", "57P02", "57P03"})
"""The server is shutting down, crashed, or not accepting connections yet (57P03 is also a node
still in recovery)."""

READ_ONLY_STATE = "25006"
"""A write on a read-only node: a hot standby, or a primary demoted during a failover."""

NO_REPLICAS = "NOREPLICAS"
"""Redis's answer to a write on a master with fewer good replicas than min-replicas-to-write
(redis-py has no class of its own for it; a write to a replica, READONLY, is ReadOnlyError)."""


def sqlstate(exc: BaseException) -> str | None:
    """The Postgres SQLSTATE behind a SQLAlchemy error, if the server sent one."""
    return getattr(getattr(exc, "orig", None), "sqlstate", None)


def is_unreachable(exc: BaseException) -> bool:
    """Postgres cannot be reached at all (down, restarting, network): worth waiting for."""
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    state = sqlstate(exc)
    if state in UNREACHABLE_STATES or (state or "").startswith("08"):
        return True
    # No SQLSTATE on an OperationalError: the client never got an answer. (A client-side
    # DataError has none either, and is not a reason to wait.)
    return state is None and isinstance(exc, OperationalError)


def is_not_primary(exc: BaseException) -> bool:
    """The node answers but takes no writes until a failover gives it (or another) the primary's
    role: worth waiting for as for an outage, never a dead letter."""
    if sqlstate(exc) == READ_ONLY_STATE:
        return True
    if isinstance(exc, redis.ReadOnlyError):
        return True
    return isinstance(exc, redis.ResponseError) and str(exc).startswith(NO_REPLICAS)


def is_conflict(exc: BaseException) -> bool:
    """A conflict with another transaction that may not happen again."""
    return isinstance(exc, ProfileVanished) or sqlstate(exc) in CONFLICT_STATES


RULES: tuple[tuple[Callable[[BaseException], bool], Action], ...] = (
    (lambda exc: isinstance(exc, SoftTimeLimitExceeded), Action.DEAD_LETTER),
    (is_unreachable, Action.PAUSE),
    (is_not_primary, Action.PAUSE),
    (is_conflict, Action.RETRY),
)
"""The table above, first match wins; what matches no rule is ISOLATE."""


def classify(exc: BaseException) -> Action:
    """What to do about `exc` (the table at the top of this module)."""
    for matches, action in RULES:
        if matches(exc):
            return action
    return Action.ISOLATE


def is_transient(exc: BaseException) -> bool:
    """Whether trying the same work again later may succeed (PAUSE or RETRY): such an error
    escapes any isolation, so the whole group is tried again."""
    return classify(exc) in (Action.PAUSE, Action.RETRY)


def describe(exc: BaseException) -> str:
    """An error's kind and SQLSTATE, for logs: never its message, which may quote values."""
    state = sqlstate(exc)
    return f"{type(exc).__name__} (SQLSTATE {state})" if state else type(exc).__name__


def raised_at(exc: BaseException) -> str:
    """file:line of the innermost frame an exception came from: enough to find a bug, no values."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}" if tb is not None else "?"
