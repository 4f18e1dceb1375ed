"""What a worker process does between messages, after a task: forget old messageIds and move the
history of merged-away profiles, each now and then and in a bounded batch, in a transaction of its
own. Neither is needed for a message to be applied: a failure waits for the next round.

`userdest maintenance run` does the same work to the end (ops/maintenance.py); the workers' share
keeps both bounded where nobody schedules it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from sqlalchemy import Engine

from workers.apply import store

logger = logging.getLogger(__name__)

PRUNE_EVERY = 600.0
"""Seconds between two prunes of old dedupe records by one worker process."""
MOVE_EVERY = 1.0
"""Seconds between two background moves of merged profiles' history by one worker process, while
there is history to move (a merge leaves it behind, to keep a merge's cost bounded per request)."""


class Housekeeping:
    """The post-task step of one worker process."""

    def __init__(
        self,
        engine: Callable[[], Engine],
        dedupe_days: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._engine = engine
        self._dedupe_days = dedupe_days
        self._clock = clock
        self._next_prune = 0.0
        self._next_move = 0.0

    def run(self) -> None:
        """Whatever is due now."""
        self.prune()
        self.move_merged()

    def move_merged(self) -> None:
        """Move a bounded batch of a merged-away profile's history to the profile it was merged
        into (store.move_merged), at most every MOVE_EVERY seconds while there is some."""
        if self._clock() < self._next_move:
            return
        self._next_move = self._clock() + MOVE_EVERY
        try:
            with self._engine().begin() as conn:
                moved = store.move_merged(conn)
        except Exception as exc:  # the history waits for the next round; readers follow it
            logger.warning("could not move merged history", extra={"error": type(exc).__name__})
            return
        if moved:
            self._next_move = 0.0  # more may wait: the next message moves the next batch
            logger.info("moved merged history", extra={"moved": moved})

    def prune(self) -> None:
        """Forget messageIds older than DEDUPE_DAYS, a batch every PRUNE_EVERY seconds."""
        if self._clock() < self._next_prune:
            return
        self._next_prune = self._clock() + PRUNE_EVERY
        try:
            with self._engine().begin() as conn:
                pruned = store.prune_processed(conn, self._dedupe_days)
        except Exception as exc:  # a prune can wait for the next round; the message is applied
            logger.warning("could not prune dedupe records", extra={"error": type(exc).__name__})
            return
        if pruned:
            logger.info("pruned dedupe records", extra={"pruned": pruned})
