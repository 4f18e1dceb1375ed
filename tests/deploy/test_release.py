"""A release an operator can apply: one version everywhere, replicas owned by the autoscalers,
disruption budgets, and every manifest valid against its schema (Kubernetes' own, and KEDA's
documented fields) when applied in the kustomization's order."""

from __future__ import annotations

import re
import subprocess
import tomllib
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

from tests.support.k8s import (
    KEDA_SCHEMAS,
    KUBERNETES,
    applied_in_order,
    kustomization,
    pods,
    references,
)

ROOT = Path(__file__).resolve().parents[2]
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def images() -> list[str]:
    return [
        item["image"]
        for obj in applied_in_order()
        for item in pods(obj).get("containers", []) + pods(obj).get("initContainers", [])
    ]


def test_one_version_everywhere() -> None:
    """pyproject's version is the CLI's, the image tag of every container, kustomize's tag and the
    version `make image` builds and labels; never `latest`."""
    assert metadata.version("userdest") == VERSION
    cli = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "userdest"), "--version"], capture_output=True, text=True
    )
    assert cli.stdout.strip() == f"userdest {VERSION}"
    assert images() and set(images()) == {f"userdest:{VERSION}"}
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    assert compose["x-userdest"]["image"] == f"userdest:{VERSION}"
    assert kustomization()["images"] == [{"name": "userdest", "newTag": VERSION}]
    dry_run = subprocess.run(
        ["make", "-n", "image"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert f"--build-arg VERSION={VERSION}" in dry_run and f"-t userdest:{VERSION}" in dry_run
    assert "latest" not in " ".join(images()) + dry_run
    assert f"## {VERSION}" in (ROOT / "CHANGELOG.md").read_text()


def test_the_image_is_labelled_pinned_and_keeps_docs_out_of_the_dependency_layer() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim@sha256:[0-9a-f]{64}$", dockerfile, re.M)
    for label in ("version", "revision", "created", "title", "source"):
        assert f"org.opencontainers.image.{label}=" in dockerfile
    dependencies, _, project = dockerfile.partition("pip install --no-deps")
    assert "COPY pyproject.toml constraints.txt ./" in dependencies
    assert "README.md ./" not in dependencies.split("RUN", 1)[0], "a docs edit would reinstall"
    assert "README.md" in project.split("COPY", 1)[0] or "COPY README.md" in dockerfile
    ignore = (ROOT / ".dockerignore").read_text()
    copied = set(re.findall(r"^COPY (\w+) \./\1$", dockerfile, re.M))
    assert copied == {"api", "readapi", "workers", "shared", "ops"}
    assert "three packages" not in ignore


def scaled_targets() -> set[str]:
    names = set()
    for obj in applied_in_order():
        if obj["kind"] in ("ScaledObject", "HorizontalPodAutoscaler"):
            names.add(obj["spec"]["scaleTargetRef"]["name"])
    return names


def test_the_autoscalers_own_every_deployment_s_replicas() -> None:
    deployments = [o for o in applied_in_order() if o["kind"] == "Deployment"]
    assert {d["metadata"]["name"] for d in deployments} == scaled_targets()
    for deployment in deployments:
        assert "replicas" not in deployment["spec"], deployment["metadata"]["name"]


def test_every_deployment_has_a_disruption_budget() -> None:
    budgets = [o for o in applied_in_order() if o["kind"] == "PodDisruptionBudget"]
    for deployment in (o for o in applied_in_order() if o["kind"] == "Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        [budget] = [
            b for b in budgets if b["spec"]["selector"]["matchLabels"].items() <= labels.items()
        ]
        assert budget["spec"].get("minAvailable", 0) < 2 or budget["spec"].get("maxUnavailable")


def test_keda_reads_the_password_redis_url_carries() -> None:
    [secret] = [o for o in applied_in_order() if o["kind"] == "Secret"]
    data = secret["stringData"]
    [auth] = [o for o in applied_in_order() if o["kind"] == "TriggerAuthentication"]
    [ref] = auth["spec"]["secretTargetRef"]
    assert (ref["parameter"], ref["name"]) == ("password", secret["metadata"]["name"])
    assert urlsplit(data["REDIS_URL"]).password == data[ref["key"]]
    for scaled in (o for o in applied_in_order() if o["kind"] == "ScaledObject"):
        for trigger in scaled["spec"]["triggers"]:
            assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    assert "sslmode=" in urlsplit(data["DATABASE_URL"]).query
    # Every pod reads the Secret whole (envFrom), so the secrets reach the receiver, workers and CLI.
    assert {"ENVELOPE_SECRET", "SUPPRESSION_SECRET"} <= set(data)


# --- schemas, applied in order ---------------------------------------------------------------------


def test_the_manifests_apply_in_order_and_pass_their_schemas() -> None:
    """Each object, in kustomization order, passes kubernetes-validate --strict (or KEDA's schema)
    and finds what it refers to already applied."""
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    applied: set[tuple[str, str]] = set()
    for obj in applied_in_order():
        kind, name = obj["kind"], obj["metadata"]["name"]
        if kind in KEDA_SCHEMAS:
            jsonschema.validate(obj, KEDA_SCHEMAS[kind])
        else:
            kubernetes_validate.validate(obj, KUBERNETES, strict=True)
        missing = references(obj) - applied
        assert not missing, f"{kind}/{name} comes before {sorted(missing)}"
        applied.add((kind, name))


def test_the_schema_check_can_fail() -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    [deployment] = [o for o in applied_in_order() if o["kind"] == "Deployment"][:1]
    broken = {**deployment, "spec": {**deployment["spec"], "replica": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES, strict=True)
    [scaled] = [o for o in applied_in_order() if o["kind"] == "ScaledObject"][:1]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**scaled, "spec": {**scaled["spec"], "maxReplicas": 3}},
                            KEDA_SCHEMAS["ScaledObject"])  # fmt: skip


# --- hardening ------------------------------------------------------------------------------------


def test_every_pod_runs_under_the_restricted_security_profile() -> None:
    """Kubernetes' restricted Pod Security Standard, plus a read-only root and no API token."""
    for obj in applied_in_order():
        spec = pods(obj)
        if not spec:
            continue
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        assert spec["automountServiceAccountToken"] is False, where
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] != 0, where
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, where
        mounted = {v["name"] for v in spec["volumes"]}
        for item in spec["containers"] + spec.get("initContainers", []):
            context = item["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, (where, item["name"])
            assert context["capabilities"]["drop"] == ["ALL"], (where, item["name"])
            assert context["readOnlyRootFilesystem"] is True, (where, item["name"])
            assert {"name": "tmp", "mountPath": "/tmp"} in item["volumeMounts"], (
                where,
                item["name"],
            )
            assert {m["name"] for m in item["volumeMounts"]} <= mounted


def _selects(policy: dict[str, Any], labels: dict[str, str]) -> bool:
    return policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()


def test_network_policies_let_only_the_receiver_be_reached_from_outside() -> None:
    policies = [o for o in applied_in_order() if o["kind"] == "NetworkPolicy"]
    for obj in applied_in_order():
        if obj["kind"] not in ("Deployment", "CronJob"):
            continue
        template = (
            obj["spec"]["template"]
            if obj["kind"] == "Deployment"
            else (obj["spec"]["jobTemplate"]["spec"]["template"])
        )
        labels = template["metadata"]["labels"]
        mine = [p for p in policies if _selects(p, labels)]
        assert any("Egress" in p["spec"]["policyTypes"] and "Ingress" in p["spec"]["policyTypes"]
                   for p in mine), obj["metadata"]["name"]  # fmt: skip
        open_rules = [
            rule
            for p in mine
            for rule in p["spec"].get("ingress", [])
            if "from" not in rule  # from anywhere
        ]
        if labels.get("app.kubernetes.io/component") == "receiver":
            assert [r["ports"] for r in open_rules] == [[{"protocol": "TCP", "port": 8000}]]
        else:
            assert open_rules == [], obj["metadata"]["name"]
        # Prometheus reaches only the admin port (ADMIN_PORT, WORKER_METRICS_PORT): 9100.
        for rule in (r for p in mine for r in p["spec"].get("ingress", []) if "from" in r):
            assert rule["ports"] == [{"protocol": "TCP", "port": 9100}], obj["metadata"]["name"]
    for store, port in (("redis", 6379), ("postgres", 5432)):
        [guard] = [p for p in policies if _selects(p, {"app.kubernetes.io/name": store})]
        [rule] = guard["spec"]["ingress"]
        assert rule["from"] == [
            {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "userdest"}}}
        ]
        assert {"protocol": "TCP", "port": port} in rule["ports"]
