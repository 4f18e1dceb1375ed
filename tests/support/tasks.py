"""Stand-ins for what an `Applier` is given: the Celery task it runs in, a group apply with
some call types replaced, a clock."""

from __future__ import annotations

from functools import partial
from types import SimpleNamespace

from shared.queues import INGEST
from workers.applier import GroupApply
from workers.apply.messages import APPLY, CallApplier, apply_messages


class FakeTask:
    """A task request with an id and the queue it came from (`queue=None`: no delivery info)."""

    def __init__(self, task_id: str = "task-1", queue: str | None = INGEST) -> None:
        delivery = {} if queue is None else {"routing_key": queue}
        self.request = SimpleNamespace(id=task_id, delivery_info=delivery)


def applying(**appliers: CallApplier) -> GroupApply:
    """The workers' group apply with some call types applied by stand-ins (a crash, say)."""
    return partial(apply_messages, appliers={**APPLY, **appliers})


class FakeClock:
    """A clock whose sleeps pass at once and are recorded; `now` moves only when told to (or by
    the sleeps, with `sleeps_advance`)."""

    def __init__(self, now: float = 1000.0, *, sleeps_advance: bool = False) -> None:
        self.now = now
        self.sleeps: list[float] = []
        self._advance = sleeps_advance

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if self._advance:
            self.now += seconds
