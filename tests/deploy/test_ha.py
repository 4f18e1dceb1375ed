"""deploy/kubernetes/ha: the base manifests with Redis behind its Sentinels and a CloudNativePG
Postgres with a synchronous standby. The overlay's JSON patches are applied here as kustomize
applies them, and the result passes the same schema checks, in order, as the base."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

from tests.support.k8s import (
    KEDA_SCHEMAS,
    KUBERNETES,
    METADATA,
    STRING_MAP,
    applied_in_order,
    references,
)

HA = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes" / "ha"

CNPG_SCHEMA: dict[str, Any] = {
    # The fields of CloudNativePG's postgresql.cnpg.io/v1 Cluster this overlay uses, as its API
    # reference documents them; anything else is a mistake.
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "postgresql.cnpg.io/v1"},
        "kind": {"const": "Cluster"},
        "metadata": METADATA,
        "spec": {
            "type": "object",
            "required": ["instances", "storage"],
            "additionalProperties": False,
            "properties": {
                "instances": {"type": "integer", "minimum": 1},
                "imageName": {"type": "string"},
                "inheritedMetadata": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"labels": STRING_MAP, "annotations": STRING_MAP},
                },
                "postgresql": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "parameters": STRING_MAP,
                        "synchronous": {
                            "type": "object",
                            "required": ["method", "number"],
                            "additionalProperties": False,
                            "properties": {
                                "method": {"enum": ["any", "first"]},
                                "number": {"type": "integer", "minimum": 1},
                                "maxStandbyNamesFromCluster": {"type": "integer"},
                                "dataDurability": {"enum": ["required", "preferred"]},
                            },
                        },
                    },
                },
                "bootstrap": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "initdb": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {
                                "database": {"type": "string"},
                                "owner": {"type": "string"},
                                "secret": {
                                    "type": "object",
                                    "required": ["name"],
                                    "additionalProperties": False,
                                    "properties": {"name": {"type": "string"}},
                                },
                            },
                        }
                    },
                },
                "storage": {
                    "type": "object",
                    "required": ["size"],
                    "additionalProperties": False,
                    "properties": {"size": {"type": "string"}, "storageClass": {"type": "string"}},
                },
                "affinity": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "enablePodAntiAffinity": {"type": "boolean"},
                        "topologyKey": {"type": "string"},
                        "podAntiAffinityType": {"enum": ["preferred", "required"]},
                    },
                },
            },
        },
    },
}


def _pointer(path: str) -> list[str]:
    return [part.replace("~1", "/").replace("~0", "~") for part in path.split("/")[1:]]


def json_patch(obj: dict[str, Any], operations: list[dict[str, Any]]) -> None:
    """RFC 6902's add, replace and remove, as kustomize applies an inline patch."""
    for op in operations:
        *parents, last = _pointer(op["path"])
        where: Any = obj
        for part in parents:
            where = where[int(part)] if isinstance(where, list) else where[part]
        key: Any = int(last) if isinstance(where, list) else last
        if op["op"] == "remove":
            del where[key]
        elif op["op"] == "replace":
            assert key in where if isinstance(where, dict) else key < len(where), op["path"]
            where[key] = op["value"]
        elif op["op"] == "add":
            if isinstance(where, list):
                where.insert(key, op["value"])
            else:
                where[key] = op["value"]
        else:
            raise AssertionError(f"unsupported op {op['op']}")


def rendered() -> list[dict[str, Any]]:
    """`kubectl apply -k deploy/kubernetes/ha`'s objects, in order."""
    kustomization = yaml.safe_load((HA / "kustomization.yaml").read_text())
    objects: list[dict[str, Any]] = []
    for resource in kustomization["resources"]:
        if resource == "..":
            objects += copy.deepcopy(applied_in_order())
        else:
            objects += [d for d in yaml.safe_load_all((HA / resource).read_text()) if d]
    for patch in kustomization["patches"]:
        target = patch["target"]
        [obj] = [
            o
            for o in objects
            if o["kind"] == target["kind"] and o["metadata"]["name"] == target["name"]
        ]
        json_patch(obj, yaml.safe_load(patch["patch"]))
    return objects


def one(kind: str, name: str | None = None) -> dict[str, Any]:
    [found] = [o for o in rendered() if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    return found


def test_the_overlay_applies_in_order_and_passes_its_schemas() -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    applied: set[tuple[str, str]] = set()
    for obj in rendered():
        kind, name = obj["kind"], obj["metadata"]["name"]
        if kind in KEDA_SCHEMAS:
            jsonschema.validate(obj, KEDA_SCHEMAS[kind])
        elif kind == "Cluster":
            jsonschema.validate(obj, CNPG_SCHEMA)
            applied.add(("Secret", obj["spec"]["bootstrap"]["initdb"]["secret"]["name"]))
        else:
            kubernetes_validate.validate(obj, KUBERNETES, strict=True)
        missing = references(obj) - applied
        assert not missing, f"{kind}/{name} comes before {sorted(missing)}"
        applied.add((kind, name))


def test_the_cnpg_schema_can_fail() -> None:
    cluster = one("Cluster")
    broken = {**cluster, "spec": {**cluster["spec"], "minSyncReplica": 1}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, CNPG_SCHEMA)


def test_workers_receivers_and_keda_ask_the_same_sentinels_for_the_same_master() -> None:
    secret = one("Secret", "userdest-secrets")["stringData"]
    master = one("ConfigMap", "userdest-config")["data"]["REDIS_SENTINEL_MASTER"]
    parts = [urlsplit(p) for p in secret["REDIS_URL"].split(";")]
    assert {p.scheme for p in parts} == {"sentinel"} and len(parts) == 3
    sentinels = [f"{p.hostname}:{p.port}" for p in parts]
    assert {p.password for p in parts} == {secret["REDIS_PASSWORD"]}
    [auth] = [o for o in rendered() if o["kind"] == "TriggerAuthentication"]
    scaled = [o for o in rendered() if o["kind"] == "ScaledObject"]
    assert scaled
    for obj in scaled:
        [trigger] = obj["spec"]["triggers"]
        assert trigger["type"] == "redis-sentinel"
        assert trigger["metadata"]["addresses"].split(",") == sentinels
        assert trigger["metadata"]["sentinelMaster"] == master
        assert trigger["metadata"]["databaseIndex"] == parts[-1].path.strip("/")
        assert "address" not in trigger["metadata"]
        assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]


def test_postgres_commits_wait_for_a_standby_and_userdest_follows_the_primary() -> None:
    cluster = one("Cluster")
    spec = cluster["spec"]
    assert spec["instances"] >= 3, "two hold the data; the third keeps a standby after a loss"
    assert spec["postgresql"]["synchronous"]["number"] >= 1
    database = urlsplit(one("Secret", "userdest-secrets")["stringData"]["DATABASE_URL"])
    assert database.hostname == f"{cluster['metadata']['name']}-rw"
    assert "sslmode=" in database.query
    initdb = spec["bootstrap"]["initdb"]
    app = one("Secret", initdb["secret"]["name"])["stringData"]
    assert (database.username, database.password) == (app["username"], app["password"])
    assert initdb["owner"] == app["username"] and database.path == f"/{initdb['database']}"


def test_network_policies_let_userdest_and_the_instances_reach_postgres() -> None:
    labels = {**one("Cluster")["spec"]["inheritedMetadata"]["labels"]}
    labels["cnpg.io/cluster"] = one("Cluster")["metadata"]["name"]
    policies = [
        p
        for p in rendered()
        if p["kind"] == "NetworkPolicy"
        and p["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    ]
    sources = [source for p in policies for rule in p["spec"]["ingress"] for source in rule["from"]]
    assert {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "userdest"}}} in sources
    assert {
        "podSelector": {"matchLabels": {"cnpg.io/cluster": labels["cnpg.io/cluster"]}}
    } in sources
