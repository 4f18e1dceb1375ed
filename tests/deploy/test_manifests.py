"""deploy/ parses, and says what the code does: the Kubernetes manifests run the same entry points
as compose.yaml, their settings are settings (with the defaults of shared/settings.py unless a
comment says why not) and verify, KEDA scales each pool on its own queue of the Redis of REDIS_URL,
the probes name routes the receiver has, and every alert has a runbook in docs/operations.md.

That the dashboard's and the alerts' metric names exist in a live /metrics is tests/e2e's
test_deploy_metrics.py.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from shared.queues import QUEUES
from shared.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text())
SETTINGS_VARS = {f.name.upper() for f in dataclasses.fields(Settings)}
DEFAULTS = {f.name.upper(): f.default for f in dataclasses.fields(Settings)}
# Read by the tools around userdest (README, second configuration table).
TOOL_VARS = {"WEB_CONCURRENCY", "PROMETHEUS_MULTIPROC_DIR", "REDIS_PASSWORD"}
# ConfigMap values that differ from the defaults, each explained beside it in config.yaml.
OVERRIDES = {"TRUSTED_PROXIES", "WORKER_METRICS_PORT"}


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def k8s_objects() -> list[dict[str, Any]]:
    paths = sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
    return [doc for path in paths for doc in documents(path)]


def find(kind: str, name: str) -> dict[str, Any]:
    [found] = [o for o in k8s_objects() if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    [only] = deployment["spec"]["template"]["spec"]["containers"]
    return only


def env_of(item: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: str(e["value"]) for e in item.get("env", [])}


def config() -> dict[str, str]:
    return {k: str(v) for k, v in find("ConfigMap", "userdest-config")["data"].items()}


def secret() -> dict[str, str]:
    return find("Secret", "userdest-secrets")["stringData"]


def compose_command(service: str) -> list[str]:
    cmd = COMPOSE["services"][service]["command"]
    return shlex.split(cmd) if isinstance(cmd, str) else [str(p) for p in cmd]


# --- they parse -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml", ".json"))
)
def test_every_file_parses(path: Path) -> None:
    if path.suffix == ".json":
        assert json.loads(path.read_text())
    else:
        assert documents(path)


def test_kustomization_lists_every_manifest() -> None:
    listed = set(documents(K8S / "kustomization.yaml")[0]["resources"])
    assert listed == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}


def test_every_object_has_a_kind_a_name_and_an_api_version() -> None:
    for obj in k8s_objects():
        assert obj["apiVersion"] and obj["kind"] and obj["metadata"]["name"].startswith("userdest")


# --- commands and settings ----------------------------------------------------------------------


def test_the_receiver_runs_what_compose_runs_with_probes_the_app_has(settings: Settings) -> None:
    from api import create_app

    deployment = find("Deployment", "userdest-receiver")
    receiver = container(deployment)
    assert receiver["command"] == compose_command("receiver")
    routes = {rule.rule for rule in create_app(settings).url_map.iter_rules()}
    assert {"/healthz", "/readyz", "/metrics"} <= routes
    ports = {p["name"]: p["containerPort"] for p in receiver["ports"]}
    assert receiver["command"][receiver["command"].index("--bind") + 1].endswith(
        f":{ports['http']}"
    )
    # Liveness on the public port; readiness and metrics on the private one, which no Service has.
    assert receiver["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert receiver["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert env_of(receiver)["ADMIN_PORT"] == str(ports["admin"]) != str(ports["http"])
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(ports["admin"])
    # gunicorn's graceful timeout and the preStop pause fit in the grace period.
    graceful = int(receiver["command"][receiver["command"].index("--graceful-timeout") + 1])
    pause = int(receiver["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert (
        deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > graceful + pause
    )
    service = find("Service", "userdest-receiver")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"], (
        "only ingestion is public"
    )


@pytest.mark.parametrize("queue", QUEUES)
def test_each_worker_pool_consumes_its_queue_and_serves_metrics(queue: str) -> None:
    deployment = find("Deployment", f"userdest-worker-{queue}")
    worker = container(deployment)
    service = "worker" if queue == "ingest" else f"worker-{queue}"
    assert worker["command"] == compose_command(service)
    command = worker["command"]
    assert command[command.index("-Q") + 1] == queue
    env = {**config(), **secret(), **env_of(worker)}
    settings = Settings.from_env(env).verify()
    assert settings.queues == [queue], "WORKER_QUEUES must not contradict -Q"
    assert worker["ports"][0]["containerPort"] == settings.worker_metrics_port
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(settings.worker_metrics_port)


@pytest.mark.parametrize(
    "name", ["userdest-receiver", "userdest-worker-ingest", "userdest-worker-replay"]
)
def test_every_pod_migrates_before_it_starts(name: str) -> None:
    """An init container runs compose's migration step with the pod's image and settings, so no
    pod of a release runs against an older schema, and a re-apply needs nothing deleted first."""
    spec = find("Deployment", name)["spec"]["template"]["spec"]
    [migrate] = spec["initContainers"]
    assert migrate["command"] == compose_command("migrate") == ["userdest", "db", "upgrade"]
    assert migrate["image"] == container(find("Deployment", name))["image"]
    assert migrate["envFrom"] == container(find("Deployment", name))["envFrom"]
    assert not [o for o in k8s_objects() if o["kind"] == "Job"], "a Job's template is immutable"


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    """The pod template's spec of a Deployment, a Job or a CronJob; {} for other kinds."""
    spec = obj.get("spec", {})
    if obj["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return spec.get("template", {}).get("spec", {})


def test_maintenance_runs_hourly_as_compose_runs_it_one_run_at_a_time() -> None:
    cron = find("CronJob", "userdest-maintenance")
    [job] = pod_spec(cron)["containers"]
    # compose keeps one process looping (`--every 3600`); Kubernetes starts one run an hour.
    assert compose_command("maintenance") == [*job["command"], "--every", "3600"]
    assert cron["spec"]["schedule"].split()[1:] == ["*", "*", "*", "*"]
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"


def test_every_variable_is_a_setting_or_a_tool_s_and_is_documented() -> None:
    readme = (ROOT / "README.md").read_text()
    named = set(config()) | set(secret())
    for obj in k8s_objects():
        for item in pod_spec(obj).get("containers", []):
            named |= set(env_of(item))
    assert named - SETTINGS_VARS - TOOL_VARS == set()
    for var in named:
        assert f"| `{var}` |" in readme, f"{var} is not in README's configuration tables"


def test_config_values_verify_and_are_the_defaults_unless_explained() -> None:
    data = config()
    Settings.from_env({**data, **secret()}).verify()
    parsed = Settings.from_env(data)
    text = (K8S / "config.yaml").read_text()
    for var in data:
        if var in OVERRIDES:
            assert re.search(rf"#[^\n]*\n\s*{var}:", text), f"{var} differs without a comment"
            continue
        assert getattr(parsed, var.lower()) == DEFAULTS[var], f"{var} is not the default"


def test_every_userdest_container_reads_config_and_secret() -> None:
    for obj in k8s_objects():
        if obj["kind"] not in ("Deployment", "Job", "CronJob"):
            continue
        for item in pod_spec(obj)["containers"] + pod_spec(obj).get("initContainers", []):
            refs = {next(iter(r.values()))["name"] for r in item["envFrom"]}
            assert refs == {"userdest-config", "userdest-secrets"}
            assert item["resources"]["limits"] and item["resources"]["requests"]


# --- autoscaling -------------------------------------------------------------------------------


@pytest.mark.parametrize("queue", QUEUES)
def test_keda_scales_each_pool_on_its_own_queue_of_redis_url(queue: str) -> None:
    scaled = find("ScaledObject", f"userdest-worker-{queue}")
    target = scaled["spec"]["scaleTargetRef"]["name"]
    worker = container(find("Deployment", target))
    assert worker["command"][worker["command"].index("-Q") + 1] == queue
    [trigger] = scaled["spec"]["triggers"]
    assert trigger["type"] == "redis"
    meta = trigger["metadata"]
    assert meta["listName"] == queue
    redis_url = urlsplit(secret()["REDIS_URL"])
    assert meta["address"] == f"{redis_url.hostname}:{redis_url.port or 6379}"
    assert meta["databaseIndex"] == (redis_url.path.strip("/") or "0")
    assert int(meta["listLength"]) > 0


# --- alerts and the dashboard ----------------------------------------------------------------


def alert_rules() -> list[dict[str, Any]]:
    groups = documents(DEPLOY / "prometheus" / "alerts.yaml")[0]["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_every_alert_has_a_severity_a_summary_and_a_runbook_that_exists() -> None:
    operations = (ROOT / "docs" / "operations.md").read_text()
    headings = {
        re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in operations.splitlines()
        if line.startswith("#")
    }
    rules = alert_rules()
    assert len({r["alert"] for r in rules}) == len(rules)
    base = runbook_base()
    assert base.startswith("https://") and base.endswith("/operations.md")
    for rule in rules:
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"]
        assert "runbook" not in rule["annotations"], "runbook_url only, a full URL"
        url, anchor = rule["annotations"]["runbook_url"].split("#")
        assert url == base, rule["alert"]
        assert anchor == rule["alert"].lower() and anchor in headings, rule["alert"]


def runbook_base() -> str:
    """The one base address of every runbook link, named in alerts.yaml's header."""
    [base] = re.findall(
        r"^# runbook base: (\S+)$", (DEPLOY / "prometheus" / "alerts.yaml").read_text(), re.M
    )
    return str(base)


def test_redis_memory_alerts_before_the_receivers_turn_calls_away() -> None:
    [rule] = [r for r in alert_rules() if r["alert"] == "UserdestRedisNearlyFull"]
    threshold = float(re.findall(r">\s*([0-9.]+)\s*$", rule["expr"].strip())[0])
    assert 0 < threshold < DEFAULTS["REDIS_HIGH_WATER"]


def test_the_alerts_cover_maintenance_and_a_receiver_target_down() -> None:
    exprs = {r["alert"]: r["expr"] for r in alert_rules()}
    assert (
        "userdest_maintenance_last_success_timestamp_seconds" in exprs["UserdestMaintenanceFailing"]
    )
    scraped = documents(DEPLOY / "prometheus" / "prometheus.yml")[0]["scrape_configs"]
    receiver_job = next(c["job_name"] for c in scraped if "receiver" in c["job_name"])
    assert f'up{{job="{receiver_job}"}} == 0' in exprs["UserdestReceiverDown"]


def test_the_dashboard_draws_every_panel_from_prometheus() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "userdest.json").read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    titles = " ".join(p["title"].lower() for p in panels)
    for needed in ("requests", "latency", "queue depth", "queue lag", "applied", "dead letters",
                   "retries"):  # fmt: skip
        assert needed in titles
    for panel in panels:
        assert panel["targets"] and all("userdest_" in t["expr"] for t in panel["targets"])


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_promtool_accepts_the_alerts_and_every_dashboard_query(tmp_path: Path) -> None:
    """Where Prometheus's own checker is installed (Debian's `prometheus` package), the alert rules
    and, as recording rules, every query of the dashboard parse as PromQL."""
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "userdest.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    # Grafana's $__rate_interval is not PromQL; any duration stands in for it.
    rules = [
        {"record": f"dashboard:query:{i}", "expr": e.replace("$__rate_interval", "5m")}
        for i, e in enumerate(exprs)
    ]
    queries = tmp_path / "dashboard-rules.yaml"
    queries.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        ["promtool", "check", "rules", str(DEPLOY / "prometheus" / "alerts.yaml"), str(queries)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
