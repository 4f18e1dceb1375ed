"""Taking more queued messages for a running task, with kombu's own acknowledgement bookkeeping.

A worker process that has started one message (the group's leader, delivered by Celery) takes up to
WORKER_BATCH_MESSAGES - 1 more from the same queue, applies them all in one transaction and only
then acknowledges them. What it takes must survive its death as Celery's own deliveries do, so one
Lua script, atomic in Redis, moves each message from the queue into kombu's `unacked` hash and
index exactly as kombu writes them, and names them in a group record kept under the leader's task
id (the scripts and the layout are in shared/wire.py):

- the transaction commits: the taken messages are acknowledged (removed from `unacked`), then
  Celery acknowledges the leader;
- a transient failure: they go back to the head of their queue at once, visible again;
- the worker process dies: Celery puts the leader back (`reject_on_worker_lost`); when it runs
  again, the same script first puts its group back, so the whole group returns together;
- the whole worker dies: kombu restores everything in `unacked` after VISIBILITY_TIMEOUT, the
  group included, exactly as it restores the leader.

A full Redis (maxmemory, noeviction) refuses the take script before it runs: nothing is taken, the
leader is applied alone. A take never blocks: an empty queue gives an empty group, so a lone
message is applied at once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis

from shared import wire


class RedisFull(Exception):
    """Redis is at its memory limit: nothing was taken."""


@dataclass(frozen=True, slots=True)
class Taken:
    """One message taken from a queue: its tag in `unacked` and its bytes as queued."""

    tag: str
    raw: bytes


class Drainer:
    """Takes, acknowledges and puts back the messages of one worker process's groups."""

    def __init__(self, client: redis.Redis, visibility_timeout: int) -> None:
        self._ttl = visibility_timeout * 2
        self._take = client.register_script(wire.with_helpers(wire.TAKE_SCRIPT))
        self._ack = client.register_script(wire.ACK_SCRIPT)
        self._restore = client.register_script(wire.with_helpers(wire.RESTORE_SCRIPT))

    def take(
        self, queue: str, leader: str, most: int, most_bytes: int, most_calls: int | None = None
    ) -> list[Taken]:
        """Up to `most` messages (and about `most_bytes` and `most_calls`, all unbounded if None)
        waiting in `queue`, oldest first; first puts back whatever an earlier run of this leader
        took and never acknowledged."""
        try:
            reply = self._take(
                keys=wire.group_keys(queue, leader),
                args=[
                    most,
                    most_bytes,
                    time.time(),
                    leader,
                    self._ttl,
                    wire.unacked_suffix(queue),
                    wire.GROUP_PREFIX,
                    *([] if most_calls is None else [most_calls]),
                ],
            )
        except redis.exceptions.OutOfMemoryError as exc:
            # Redis is full: take nothing, but do put an earlier run's group back.
            self.restore(queue, leader)
            raise RedisFull(str(exc)) from None
        return [Taken(_text(reply[i]), reply[i + 1]) for i in range(0, len(reply), 2)]

    def ack(self, queue: str, leader: str, taken: list[Taken]) -> None:
        """Forget the group's messages: their effects are committed."""
        keys = wire.group_keys(queue, leader)[1:]
        self._ack(keys=keys, args=[t.tag for t in taken])

    def restore(self, queue: str, leader: str) -> int:
        """Put the group's messages back at the head of `queue`; how many went back."""
        keys = wire.group_keys(queue, leader)
        return int(self._restore(keys=keys, args=[wire.unacked_suffix(queue)]))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
