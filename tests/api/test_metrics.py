"""/metrics shows the receiver's counters, and sums processes in multiprocess mode."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

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
        metrics.DEAD_LETTERS._name,
        metrics.APPLY_LAG_SECONDS._name,
        metrics.APPLY_BATCH_SECONDS._name,
    }
    assert names == {
        "userdest_calls_applied",
        "userdest_coercions_ignored",
        "userdest_names_over_cap",
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
