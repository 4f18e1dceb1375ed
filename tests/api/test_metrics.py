"""/metrics shows the receiver's counters, and sums processes in multiprocess mode."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text
from sqlalchemy.orm import Session

from shared.metrics import OTHER_APP, AppLabels
from shared.settings import Settings
from tests.support.db import SECRETS
from tests.support.envelopes import envelope
from tests.support.receiver import Tenant, basic, jdump

CALL = {"type": "track", "event": "Clicked", "userId": "u1"}


def scrape(client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_receiver_metrics_count_requests_calls_and_reasons(client, tenant: Tenant):
    before = scrape(client)
    headers = basic(tenant.api_key)
    client.post("/v1/track", data=jdump(CALL), headers=headers)
    client.post("/v1/track", data=jdump(CALL), headers=basic("ud_nope"))
    client.post(
        "/v1/batch", data=jdump({"batch": [CALL, CALL, {"type": "track"}]}), headers=headers
    )
    client.post("/v1/track", data=jdump({"type": "track", "userId": "u"}), headers=headers)
    after = scrape(client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("userdest_http_requests_total", endpoint="track", status="200") == 1
    assert delta("userdest_http_requests_total", endpoint="track", status="403") == 1
    assert delta("userdest_http_requests_total", endpoint="track", status="400") == 1
    assert delta("userdest_http_requests_total", endpoint="batch", status="200") == 1
    assert delta("userdest_calls_accepted_total", endpoint="track") == 1
    assert delta("userdest_calls_accepted_total", endpoint="batch") == 2
    assert delta("userdest_calls_rejected_total", reason="missing_user_id") == 1
    assert delta("userdest_calls_rejected_total", reason="missing_event") == 1
    assert delta("userdest_http_errors_total", code="invalid_api_key") == 1
    assert delta("userdest_http_request_duration_seconds_count", endpoint="track") == 3
    assert delta("userdest_http_request_body_bytes_count", endpoint="batch") == 1
    assert delta("userdest_http_request_body_bytes_sum", endpoint="batch") > 100


def test_worker_metrics_are_declared_in_the_same_module():
    from shared import metrics

    names = {
        metrics.CALLS_APPLIED._name,
        metrics.COERCIONS_IGNORED._name,
        metrics.NAMES_OVER_CAP._name,
        metrics.NAMES_OVER_BUDGET._name,
        metrics.DEAD_LETTERS._name,
        metrics.APPLY_LAG_SECONDS._name,
        metrics.APPLY_BATCH_SECONDS._name,
    }
    assert names == {
        "userdest_calls_applied",
        "userdest_coercions_ignored",
        "userdest_names_over_cap",
        "userdest_names_over_budget",
        "userdest_dead_letters",
        "userdest_apply_lag_seconds",
        "userdest_apply_batch_seconds",
    }


def test_metric_objects_are_made_only_in_shared_metrics():
    root = Path(__file__).resolve().parents[2]
    for path in [*root.joinpath("api").glob("*.py"), *root.joinpath("workers").rglob("*.py")]:
        text = path.read_text()
        for kind in ("Counter(", "Histogram(", "Gauge(", "Summary("):
            assert (
                f"= {kind}" not in text and f"prometheus_client import {kind[:-1]}" not in text
            ), (
                path,
                kind,
            )


SCRIPT = """
import sys
from shared import metrics
metrics.CALLS_APPLIED.labels("track").inc(int(sys.argv[1]))
metrics.HTTP_REQUESTS.labels("track", "200").inc()
"""

RENDER = """
from shared import metrics
payload, _ = metrics.render()
print(payload.decode())
"""


def test_multiprocess_mode_sums_every_process(tmp_path: Path):
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    cwd = Path(__file__).resolve().parents[2]
    for n in ("3", "4"):
        subprocess.run([sys.executable, "-c", SCRIPT, n], env=env, cwd=cwd, check=True)
    out = subprocess.run(
        [sys.executable, "-c", RENDER], env=env, cwd=cwd, check=True, capture_output=True, text=True
    ).stdout
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(out)
        for s in family.samples
    }
    assert samples[("userdest_calls_applied_total", (("type", "track"),))] == 7
    assert (
        samples[("userdest_http_requests_total", (("endpoint", "track"), ("status", "200")))] == 2
    )


# --- gauges read when scraped -----------------------------------------------------------


def _publish(redis_client, envelopes, queue: str) -> None:
    from shared.celery_app import make_celery
    from shared.publish import Publisher

    unused = Settings(redis_url="redis://127.0.0.1:1/0", **SECRETS)
    publisher = Publisher(make_celery(unused), redis_client, unused)
    publisher.publish_many([e.to_dict() for e in envelopes], queue)


def _deliver(redis_client, queue: str, seconds_ago: float) -> None:
    """One message as kombu leaves it when a worker took it and has not acknowledged it."""
    import time

    import orjson

    tag = f"tag-{seconds_ago}"
    message = {"body": "", "headers": {"task": "userdest.apply_message"}, "properties": {}}
    redis_client.hset("unacked", tag, orjson.dumps([message, queue, queue]))
    redis_client.zadd("unacked_index", {tag: time.time() - seconds_ago})


def test_queue_gauges_show_depth_lag_and_unacked_age(client, redis_client) -> None:
    from shared.timeparse import iso, utcnow

    received = iso(utcnow() - timedelta(seconds=90))
    _publish(redis_client, [envelope(1, [CALL], received_at=received)] * 3, "ingest")
    _publish(redis_client, [envelope(1, [CALL])], "replay")
    _deliver(redis_client, "ingest", seconds_ago=400)
    _deliver(redis_client, "ingest", seconds_ago=20)
    samples = scrape(client)
    assert value(samples, "userdest_queue_waiting_messages", queue="ingest") == 3
    assert value(samples, "userdest_queue_waiting_messages", queue="replay") == 1
    assert value(samples, "userdest_queue_unacked_messages", queue="ingest") == 2
    assert value(samples, "userdest_queue_unacked_messages", queue="replay") == 0
    assert 89 <= value(samples, "userdest_queue_lag_seconds", queue="ingest") < 150
    assert 399 <= value(samples, "userdest_queue_oldest_unacked_seconds", queue="ingest") < 460
    assert value(samples, "userdest_queue_oldest_unacked_seconds", queue="replay") == 0
    assert value(samples, "userdest_scrape_source_up", source="redis") == 1


def test_open_dead_letters_are_counted_by_reason(client, tenant: Tenant, clean_db) -> None:
    with clean_db.begin() as conn:
        for i, reason in enumerate(["missing_user_id", "missing_user_id", "retries_exhausted"]):
            conn.execute(
                text(
                    "INSERT INTO dead_letters (app_id, reason, error, call, dedupe_key, replayed_at)"
                    " VALUES (:app, :reason, 'e', '{}', :key, NULL)"
                ),
                {"app": tenant.app_id, "reason": reason, "key": f"k{i}"},
            )
        conn.execute(
            text(
                "INSERT INTO dead_letters (app_id, reason, error, call, dedupe_key, replayed_at)"
                " VALUES (:app, 'worker_error', 'e', '{}', 'replayed', now() + interval '1 hour')"
            ),
            {"app": tenant.app_id},
        )
    samples = scrape(client)
    assert value(samples, "userdest_dead_letters_open", reason="missing_user_id") == 2
    assert value(samples, "userdest_dead_letters_open", reason="retries_exhausted") == 1
    assert ("userdest_dead_letters_open", (("reason", "worker_error"),)) not in samples
    assert value(samples, "userdest_scrape_source_up", source="postgres") == 1


def test_redis_memory_is_reported_so_an_alert_can_fire_before_the_high_water_mark(
    client, redis_client
) -> None:
    info = redis_client.info("memory")
    samples = scrape(client)
    assert value(samples, "userdest_redis_used_memory_bytes") > 0
    assert value(samples, "userdest_redis_maxmemory_bytes") == int(info.get("maxmemory") or 0)
    assert value(samples, "userdest_scrape_source_up", source="redis_memory") == 1


def test_the_last_successful_maintenance_run_is_a_gauge(client, clean_db, settings) -> None:
    from ops import maintenance

    report = maintenance.run(clean_db, settings)
    assert report.ran
    with clean_db.connect() as conn:
        finished = conn.scalar(text("SELECT max(finished_at) FROM maintenance_runs"))
    samples = scrape(client)
    gauge = value(samples, "userdest_maintenance_last_success_timestamp_seconds")
    assert gauge == finished.timestamp()
    assert value(samples, "userdest_scrape_source_up", source="maintenance") == 1


def test_a_store_that_does_not_answer_leaves_its_gauges_out(make_receiver, redis_client) -> None:
    client = make_receiver(redis_url="redis://127.0.0.1:1/0", broker_timeout=0.2).test_client()
    samples = scrape(client)
    assert value(samples, "userdest_scrape_source_up", source="redis") == 0
    assert not any(name.startswith("userdest_queue_") for name, _ in samples)


def test_build_info_names_the_version(client) -> None:
    from importlib import metadata

    info = [labels for name, labels in scrape(client) if name == "userdest_build_info"]
    assert [dict(labels)["version"] for labels in info] == [metadata.version("userdest")]


def test_no_label_takes_a_value_the_sender_chose(
    client, tenant: Tenant, clean_db, settings
) -> None:
    """Attribute and event names, ids, paths and types a sender makes up never become labels."""
    from shared.models import AttributeDefinition
    from workers.applier import Applier

    marker = "zq7sender"
    with Session(clean_db) as session:
        session.add(
            AttributeDefinition(app_id=tenant.app_id, scope="user", name=f"{marker}_age",
                                type="integer", origin="operator")
        )  # fmt: skip
        session.commit()
    headers = basic(tenant.api_key)
    calls = [
        {"type": "identify", "userId": f"{marker}-u", "traits": {f"{marker}_age": "old",
                                                                 "x" * 70 + marker: 1}},
        {"type": "track", "userId": f"{marker}-u", "event": f"{marker} event",
         "properties": {f"{marker}_prop": 1}},
        {"type": f"{marker}type", "userId": "u"},
    ]  # fmt: skip
    client.post("/v1/batch", data=jdump({"batch": calls}), headers=headers)
    client.post(f"/v1/{marker}", data=jdump(calls[0]), headers=headers)
    client.post("/v1/track", data=jdump(calls[1]), headers={"Authorization": f"Bearer {marker}"})
    applier = Applier(settings)
    try:
        for env in queued_envelopes(client):
            applier.apply(_Task(), env)
    finally:
        applier.close()
    payload = client.get("/metrics").get_data(as_text=True)
    assert "userdest_coercions_ignored_total" in payload
    assert marker not in payload


class _Task:
    def __init__(self) -> None:
        from types import SimpleNamespace

        self.request = SimpleNamespace(retries=0, id="t", delivery_info={"routing_key": "ingest"})

    def retry(self, **_: object) -> Exception:
        raise AssertionError("no retry expected")


def queued_envelopes(client) -> list[dict]:
    receiver = client.application.extensions["userdest"]
    from tests.support.receiver import queued

    return queued(receiver.redis)


def test_calls_and_refusals_are_counted_per_app(client, tenant: Tenant):
    before = scrape(client)
    headers = basic(tenant.api_key)
    client.post("/v1/track", data=jdump(CALL), headers=headers)
    client.post("/v1/batch", data=jdump({"batch": [CALL, {"type": "track"}]}), headers=headers)
    client.post("/v1/track", data=jdump({"type": "track", "userId": "u"}), headers=headers)
    client.post("/v1/track", data=b"{not json", headers=headers)
    client.post("/v1/track", data=jdump(CALL), headers=basic("ud_nope"))  # no app: not counted
    after = scrape(client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    app = tenant.app_name
    assert delta("userdest_app_calls_total", app=app, outcome="accepted") == 2
    assert delta("userdest_app_calls_total", app=app, outcome="rejected") == 2
    assert delta("userdest_app_requests_refused_total", app=app) == 2
    refused = [k for k in after if k[0] == "userdest_app_requests_refused_total"]
    assert all(dict(labels)["app"] != "" for _name, labels in refused)


def test_app_labels_are_capped_and_the_rest_is_other():
    labels = AppLabels(cap=2)
    assert [labels("a"), labels("b"), labels("c"), labels("a"), labels("d")] == [
        "a",
        "b",
        OTHER_APP,
        "a",
        OTHER_APP,
    ]
