"""Several worker processes applying calls for the same new users at once."""

from __future__ import annotations

import multiprocessing
import time
import uuid

import pytest
from sqlalchemy import Engine, text

from shared.db import make_engine
from shared.envelope import Envelope
from shared.settings import Settings
from tests.support.apply import apply_envelope
from tests.support.db import SUPPRESSION
from tests.support.factories import make_app
from workers.apply.messages import apply_messages, prepare
from workers.failures import is_transient

PROCESSES = 4
ROUNDS = 15


def _page(**ids: str) -> dict[str, object]:
    return {"type": "page", "properties": {"url": "https://shop.example.com/"}, **ids}


def _worker(database_url: str, app_id: int, proc: int, grouped: bool) -> tuple[int, int]:
    """Apply ROUNDS messages as a worker would, retrying transient failures; (retries, failures).

    `grouped`: each round's calls come as one-call messages applied together in one transaction,
    as a worker applies the messages waiting in its queue (docs/batching.md)."""
    engine = make_engine(Settings(database_url=database_url), pool_size=1)
    retries = failures = 0
    for n in range(ROUNDS):
        anon = f"anon-{proc}-{n % 3}"
        calls = [
            _page(anonymousId=anon),
            {"type": "identify", "userId": "shared", "anonymousId": anon, "traits": {"n": n}},
            _page(userId="shared"),
            {
                "type": "track",
                "userId": f"user-{n % 2}",
                "event": f"Event {n % 4}",
                "properties": {f"p{proc}": 1},
            },
            _page(userId=f"user-{n % 2}"),
            {"type": "group", "userId": "shared", "groupId": f"g{n % 2}", "traits": {"name": "G"}},
        ]
        envs = [
            Envelope(
                app_id=app_id,
                received_at="2026-11-28T12:00:00.000Z",
                request_id=f"p{proc}-{n}-{i}",
                calls=part,
                message_ids=[str(uuid.uuid4()) for _ in part],
            )
            for i, part in enumerate([[c] for c in calls] if grouped else [calls])
        ]
        for attempt in range(20):
            try:
                with engine.begin() as conn:
                    if grouped:
                        outcome = apply_messages(
                            conn, [prepare(e) for e in envs], isolate=False, suppression=SUPPRESSION
                        )
                    else:
                        outcome = apply_envelope(conn, envs[0])
                if outcome.dead_letters:
                    failures += 1
                break
            except Exception as exc:
                if not is_transient(exc):
                    raise
                retries += 1
                time.sleep(0.01 * (attempt + 1))
        else:
            failures += 1
    engine.dispose()
    return retries, failures


@pytest.mark.parametrize("grouped", [False, True], ids=["one message", "grouped messages"])
def test_concurrent_workers_make_one_profile_with_exact_counters(
    grouped: bool, clean_db: Engine, settings: Settings
) -> None:
    with clean_db.begin() as conn:
        app_id = make_app(conn, "race")
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(PROCESSES) as pool:
        results = pool.starmap(
            _worker, [(settings.database_url, app_id, p, grouped) for p in range(PROCESSES)]
        )
    assert sum(f for _, f in results) == 0, results

    with clean_db.connect() as conn:

        def one(sql: str) -> int:
            return int(conn.scalar(text(sql)) or 0)

        assert one("SELECT count(*) FROM users WHERE user_id = 'shared'") == 1
        assert (
            one("SELECT count(*) FROM users") == 3
        )  # shared, user-0, user-1: every anonymous profile merged
        assert (
            one("SELECT page_views FROM users WHERE user_id = 'shared'") == 2 * PROCESSES * ROUNDS
        )
        assert one("SELECT sum(page_views) FROM users") == 3 * PROCESSES * ROUNDS
        assert one("SELECT count(*) FROM page_views") == 3 * PROCESSES * ROUNDS
        assert one("SELECT count(*) FROM events") == PROCESSES * ROUNDS
        assert one("SELECT count(*) FROM identities WHERE kind = 'anonymous'") == 3 * PROCESSES
        assert one("SELECT count(DISTINCT user_pk) FROM identities WHERE kind = 'anonymous'") == 1
        assert one("SELECT count(*) FROM event_definitions") == 4
        assert (
            one("SELECT count(*) FROM attribute_definitions WHERE scope = 'event'") == 4 * PROCESSES
        )
        assert one("SELECT count(*) FROM companies") == 2
        assert one("SELECT count(*) FROM memberships") == 2
        assert one("SELECT count(*) FROM processed_messages") == 6 * PROCESSES * ROUNDS


CAP = 10
DEFINING_ROUNDS = 12


def _definer(database_url: str, app_id: int, proc: int, start_at: float) -> int:
    """Apply messages that each bring three new user attribute names; returns retries."""
    engine = make_engine(Settings(database_url=database_url), pool_size=1)
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))  # connected before the start, so all begin together
    time.sleep(max(0.0, start_at - time.time()))
    retries = 0
    for n in range(DEFINING_ROUNDS):
        traits = {f"p{proc}_{n}_{k}": "x" for k in range(3)}
        env = Envelope(
            app_id=app_id,
            received_at="2026-11-28T12:00:00.000Z",
            request_id=f"d{proc}-{n}",
            calls=[{"type": "identify", "userId": f"user-{proc}", "traits": traits}],
            message_ids=[str(uuid.uuid4())],
        )
        for attempt in range(20):
            try:
                with engine.begin() as conn:
                    apply_envelope(conn, env)
                break
            except Exception as exc:
                if not is_transient(exc):
                    raise
                retries += 1
                time.sleep(0.01 * (attempt + 1))
    engine.dispose()
    return retries


def test_concurrent_workers_never_pass_an_apps_cap_together(
    clean_db: Engine, settings: Settings
) -> None:
    app_id = make_app(clean_db, "capped", max_user_attributes=CAP)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(PROCESSES) as pool:
        start_at = time.time() + 3  # after every spawned process has imported and connected
        pool.starmap(
            _definer, [(settings.database_url, app_id, p, start_at) for p in range(PROCESSES)]
        )
    with clean_db.connect() as conn:
        defined = set(
            conn.scalars(text("SELECT name FROM attribute_definitions WHERE scope = 'user'"))
        )
        ignored = conn.scalar(
            text("SELECT sum(count) FROM ignored_values WHERE reason = 'over_cap'")
        )
        stored: set[str] = set()
        for attrs in conn.scalars(text("SELECT attributes FROM users")):
            stored |= set(attrs)
    assert len(defined) == CAP
    assert ignored == PROCESSES * DEFINING_ROUNDS * 3 - CAP
    assert stored == defined
