"""The Kubernetes manifests as `kubectl apply -k deploy/kubernetes` is given them, and the schemas
they are checked against beyond Kubernetes' own (tests/deploy)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

K8S = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
KUBERNETES = "1.30.0"
"""The Kubernetes version whose schemas the manifests must pass (kubernetes-validate ships them)."""


def kustomization() -> dict[str, Any]:
    return dict(yaml.safe_load((K8S / "kustomization.yaml").read_text()))


def applied_in_order() -> list[dict[str, Any]]:
    """Every object, in the order `kubectl apply -k` is given them."""
    return [
        doc
        for name in kustomization()["resources"]
        for doc in yaml.safe_load_all((K8S / name).read_text())
        if doc
    ]


def pods(obj: dict[str, Any]) -> dict[str, Any]:
    spec = obj.get("spec", {})
    if obj["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return dict(spec.get("template", {}).get("spec", {}))


STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
METADATA = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string"},
        "namespace": {"type": "string"},
        "labels": STRING_MAP,
        "annotations": STRING_MAP,
    },
    "additionalProperties": False,
}
KEDA_SCHEMAS: dict[str, dict[str, Any]] = {
    # The fields KEDA documents for keda.sh/v1alpha1 (its ScaledObject and TriggerAuthentication
    # specifications); anything else is a mistake the cluster would reject or ignore.
    "ScaledObject": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": "keda.sh/v1alpha1"},
            "kind": {"const": "ScaledObject"},
            "metadata": METADATA,
            "spec": {
                "type": "object",
                "required": ["scaleTargetRef", "triggers"],
                "additionalProperties": False,
                "properties": {
                    "scaleTargetRef": {
                        "type": "object",
                        "required": ["name"],
                        "additionalProperties": False,
                        "properties": {
                            "apiVersion": {"type": "string"},
                            "kind": {"type": "string"},
                            "name": {"type": "string"},
                            "envSourceContainerName": {"type": "string"},
                        },
                    },
                    "pollingInterval": {"type": "integer", "minimum": 1},
                    "cooldownPeriod": {"type": "integer", "minimum": 0},
                    "initialCooldownPeriod": {"type": "integer", "minimum": 0},
                    "idleReplicaCount": {"type": "integer", "minimum": 0},
                    "minReplicaCount": {"type": "integer", "minimum": 0},
                    "maxReplicaCount": {"type": "integer", "minimum": 1},
                    "fallback": {"type": "object"},
                    "advanced": {"type": "object"},
                    "triggers": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "required": ["type", "metadata"],
                            "additionalProperties": False,
                            "properties": {
                                "type": {"type": "string"},
                                "name": {"type": "string"},
                                "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
                                "useCachedMetrics": {"type": "boolean"},
                                "metadata": STRING_MAP,
                                "authenticationRef": {
                                    "type": "object",
                                    "required": ["name"],
                                    "additionalProperties": False,
                                    "properties": {
                                        "name": {"type": "string"},
                                        "kind": {
                                            "enum": [
                                                "TriggerAuthentication",
                                                "ClusterTriggerAuthentication",
                                            ]
                                        },
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
    "TriggerAuthentication": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": "keda.sh/v1alpha1"},
            "kind": {"const": "TriggerAuthentication"},
            "metadata": METADATA,
            "spec": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "secretTargetRef": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["parameter", "name", "key"],
                            "additionalProperties": False,
                            "properties": {
                                "parameter": {"type": "string"},
                                "name": {"type": "string"},
                                "key": {"type": "string"},
                            },
                        },
                    },
                    "env": {"type": "array"},
                    "podIdentity": {"type": "object"},
                },
            },
        },
    },
}


def references(obj: dict[str, Any]) -> set[tuple[str, str]]:
    """(kind, name) of the objects `obj` needs to exist first."""
    needed: set[tuple[str, str]] = set()
    spec = pods(obj)
    for item in spec.get("containers", []) + spec.get("initContainers", []):
        for source in item.get("envFrom", []):
            kind = "ConfigMap" if "configMapRef" in source else "Secret"
            needed.add((kind, next(iter(source.values()))["name"]))
    if obj["kind"] in ("ScaledObject", "HorizontalPodAutoscaler"):
        needed.add(("Deployment", obj["spec"]["scaleTargetRef"]["name"]))
    for trigger in obj.get("spec", {}).get("triggers", []) if obj["kind"] == "ScaledObject" else []:
        if "authenticationRef" in trigger:
            needed.add(("TriggerAuthentication", trigger["authenticationRef"]["name"]))
    if obj["kind"] == "TriggerAuthentication":
        needed |= {("Secret", ref["name"]) for ref in obj["spec"].get("secretTargetRef", [])}
    if obj["kind"] == "Ingress":
        for rule in obj["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                needed.add(("Service", path["backend"]["service"]["name"]))
    return needed
