"""What a worker counts, and by which labels: queue names and reason codes, never a sender's words."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from tests.support.envelopes import envelope, sealed
from tests.support.factories import make_app
from tests.support.faults import PgError, failing
from tests.support.tasks import FakeTask
from workers.applier import Applier
from workers.apply.messages import apply_messages


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def app_id(clean_db: Engine) -> int:
    return make_app(clean_db, "m")


def test_duplicates_and_lag_are_counted_by_queue(applier: Applier, app_id: int) -> None:
    env = envelope(app_id, [{"type": "page", "userId": "u1"}, {"type": "page", "userId": "u2"}])
    before = (
        sample("userdest_duplicates_skipped_total", queue="replay"),
        sample("userdest_apply_lag_seconds_count", queue="replay"),
    )
    applier.apply(FakeTask(queue="replay"), sealed(env))
    applier.apply(FakeTask(queue="replay"), sealed(env))
    assert sample("userdest_duplicates_skipped_total", queue="replay") - before[0] == 2
    assert sample("userdest_apply_lag_seconds_count", queue="replay") - before[1] == 2


def test_a_retry_is_counted_by_queue(make_applier: Callable[..., Applier], app_id: int) -> None:
    deadlock = OperationalError("SELECT", {}, PgError("40P01"))
    applier = make_applier(apply_group=failing(2, deadlock, apply_messages))
    before = sample("userdest_task_retries_total", queue="ingest")
    applier.apply(
        FakeTask(queue="ingest"), sealed(envelope(app_id, [{"type": "page", "userId": "u"}]))
    )
    assert sample("userdest_task_retries_total", queue="ingest") - before == 2


def test_an_unknown_queue_is_labelled_other(applier: Applier, app_id: int) -> None:
    before = sample("userdest_apply_lag_seconds_count", queue="other")
    applier.apply(
        FakeTask(queue="made-up"), sealed(envelope(app_id, [{"type": "page", "userId": "u"}]))
    )
    applier.apply(FakeTask(queue=None), sealed(envelope(app_id, [{"type": "page", "userId": "v"}])))
    assert sample("userdest_apply_lag_seconds_count", queue="other") - before == 2
    assert sample("userdest_apply_lag_seconds_count", queue="made-up") == 0


def test_ignored_values_are_counted_by_scope_and_reason_not_by_name(
    applier: Applier, app_id: int, clean_db: Engine
) -> None:
    with clean_db.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO attribute_definitions (app_id, scope, event, name, type, origin)"
                " VALUES (:app, 'user', '', 'age', 'integer', 'operator')"
            ),
            {"app": app_id},
        )
    before = sample("userdest_coercions_ignored_total", scope="user", reason="uncoercible")
    call = {"type": "identify", "userId": "u", "traits": {"age": "ancient"}}
    applier.apply(FakeTask(queue="ingest"), sealed(envelope(app_id, [call])))
    assert (
        sample("userdest_coercions_ignored_total", scope="user", reason="uncoercible") == before + 1
    )
    names = {
        s.labels.get("attribute")
        for family in REGISTRY.collect()
        for s in family.samples
        if s.name.startswith("userdest_coercions_ignored")
    }
    assert names == {None}


def test_a_string_stored_cut_is_counted_as_truncated(
    applier: Applier, app_id: int, clean_db: Engine
) -> None:
    before = sample("userdest_coercions_ignored_total", scope="event", reason="truncated")
    call = {"type": "track", "userId": "u", "event": "Note Left", "properties": {"note": "n" * 400}}
    applier.apply(FakeTask(queue="ingest"), sealed(envelope(app_id, [call])))
    assert (
        sample("userdest_coercions_ignored_total", scope="event", reason="truncated") == before + 1
    )
