"""compose.yaml and the Dockerfile run the entry points the code really has.

Docker may be missing where the tests run, so this reads the files: the services and their
commands, Redis's durability flags, the start-up order, that workers scale, and that every
environment variable compose sets is one that something reads.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import importlib
import importlib.resources
import json
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from shared.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_TEXT = (ROOT / "compose.yaml").read_text()
COMPOSE: dict[str, Any] = yaml.safe_load(COMPOSE_TEXT)
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())

SETTINGS_VARS = {f.name.upper() for f in dataclasses.fields(Settings)}
# Read by the tools around userdest, not by Settings; each is in README's second table.
TOOL_VARS = {
    "PORT": "the receiver's published port",
    "WEB_CONCURRENCY": "gunicorn's process count",
    "PROMETHEUS_MULTIPROC_DIR": "prometheus_client's multiprocess directory",
    "POSTGRES_PASSWORD": "the password of compose's Postgres superuser",
    "USERDEST_DB_PASSWORD": "the password of compose's Postgres role for userdest",
    "REDIS_PASSWORD": "the password of compose's Redis",
    "REDIS_MAXMEMORY": "compose's Redis memory limit",
    "STACK_REDIS_URL": "the userdest containers' REDIS_URL instead of compose's one Redis",
}
# Documented variables of the official postgres and redis images.
IMAGE_VARS = {
    "POSTGRES_PASSWORD",
    "POSTGRES_USER",
    "POSTGRES_DB",
    "POSTGRES_INITDB_ARGS",
    "POSTGRES_HOST_AUTH_METHOD",
    "PGDATA",
    "USERDEST_DB_PASSWORD",  # read by deploy/compose/postgres-init.sh, which the image runs
}
# No default: compose refuses to start without them (a stack never runs on a published password).
REQUIRED = {
    "POSTGRES_PASSWORD": "pg-super",
    "USERDEST_DB_PASSWORD": "pg-app",
    "REDIS_PASSWORD": "redis-pass",
    "ENVELOPE_SECRET": "envelope-key-of-compose",
    "SUPPRESSION_SECRET": "suppression-key-of-compose",
}
USERDEST_SERVICES = ("migrate", "receiver", "worker", "worker-replay")
AFTER_MIGRATE = ("receiver", "worker", "worker-replay")


def command(name: str) -> list[str]:
    cmd = SERVICES[name].get("command", [])
    return shlex.split(cmd) if isinstance(cmd, str) else [str(part) for part in cmd]


def option(tokens: list[str], flag: str) -> str:
    """The value after `flag` in a command line."""
    assert flag in tokens, f"{flag} missing from {tokens}"
    return tokens[tokens.index(flag) + 1]


def environment(name: str) -> dict[str, str | None]:
    env = SERVICES[name].get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return env


def interpolate(value: str) -> str:
    """compose's `${NAME:-default}`, `${NAME}` and `${NAME:?error}` with only REQUIRED set."""

    def one(match: re.Match[str]) -> str:
        name, how, default = match.groups()
        if how == ":?":
            assert name in REQUIRED, f"compose requires {name}, which REQUIRED does not list"
            return REQUIRED[name]
        return default or ""

    while True:  # innermost first: `${A:-${B}}` is nested
        done = re.sub(r"\$\{([A-Z0-9_]+)(?:(:?[-?])([^{}]*))?\}", one, value)
        if done == value:
            return done
        value = done


def redis_conf() -> dict[str, str]:
    """compose's Redis settings: the file its command reads, as compose writes it."""
    [mount] = SERVICES["redis"]["configs"]
    assert command("redis")[:2] == ["redis-server", mount["target"]]
    lines = interpolate(COMPOSE["configs"][mount["source"]]["content"]).splitlines()
    return dict(line.split(" ", 1) for line in lines if line and not line.startswith("#"))


def test_the_stack_has_its_services() -> None:
    assert {"redis", "postgres", "migrate", "receiver", "worker", "worker-replay"} <= set(SERVICES)


def test_redis_persists_appends_and_never_evicts() -> None:
    redis = SERVICES["redis"]
    conf = redis_conf()
    assert conf["appendonly"] == "yes"
    assert conf["maxmemory-policy"] == "noeviction"
    # noeviction without a maxmemory never refuses anything: Redis grows until it is killed.
    assert conf["maxmemory"] == "1gb"
    volume = redis["volumes"][0]
    assert volume.split(":")[0] in COMPOSE["volumes"] and volume.endswith(":/data")
    assert "redis-cli" in redis["healthcheck"]["test"]


def test_redis_has_a_password_and_a_memory_limit_the_stack_uses() -> None:
    conf = redis_conf()
    assert conf["requirepass"] == REQUIRED["REDIS_PASSWORD"]
    url = interpolate(COMPOSE["x-userdest"]["environment"]["REDIS_URL"])
    assert url.startswith(f"redis://:{conf['requirepass']}@redis:6379/")
    # The healthcheck authenticates through the environment, not its arguments.
    assert interpolate(environment("redis")["REDISCLI_AUTH"] or "") == conf["requirepass"]


def test_every_password_and_secret_must_be_set() -> None:
    """No default a stack could run on: each is `${NAME:?...}` wherever compose uses it."""
    for name in REQUIRED:
        uses = re.findall(rf"\$\{{{name}(:?[-?]?)", COMPOSE_TEXT)
        assert uses and set(uses) == {":?"}, f"{name} must be required everywhere, not {uses}"
    shared = COMPOSE["x-userdest"]["environment"]
    for name in ("ENVELOPE_SECRET", "SUPPRESSION_SECRET"):
        assert interpolate(shared[name]) == REQUIRED[name]
    for name in (*USERDEST_SERVICES, "cli"):
        assert {"ENVELOPE_SECRET", "SUPPRESSION_SECRET"} <= set(environment(name)), name


def _commands() -> dict[str, str]:
    """Every service's command, entrypoint and healthcheck, as one line each."""
    found = {}
    for name, service in SERVICES.items():
        for key in ("command", "entrypoint"):
            value = service.get(key, [])
            found[f"{name} {key}"] = value if isinstance(value, str) else " ".join(map(str, value))
        found[f"{name} healthcheck"] = " ".join(service.get("healthcheck", {}).get("test", []))
    return found


def test_no_password_is_in_a_process_s_arguments() -> None:
    """Arguments are visible to anyone on the host (`ps`); environment and files are not."""
    for where, raw in _commands().items():
        line = interpolate(raw)
        for name, value in REQUIRED.items():
            assert f"${{{name}" not in raw and value not in line, (
                f"{where} has {name} in its arguments"
            )
        assert not re.search(r"://[^/@\s]*:[^/@\s]+@", line), f"{where} has a URL with a password"


def test_userdest_connects_to_postgres_as_its_own_role_not_the_superuser() -> None:
    url = urlsplit(interpolate(COMPOSE["x-userdest"]["environment"]["DATABASE_URL"]))
    assert (url.username, url.password) == ("userdest", REQUIRED["USERDEST_DB_PASSWORD"])
    script = "./deploy/compose/postgres-init.sh"
    mounts = {v.split(":")[0]: v.split(":")[1] for v in SERVICES["postgres"]["volumes"]}
    assert mounts[script].startswith("/docker-entrypoint-initdb.d/")
    code = [line for line in (ROOT / script).read_text().splitlines() if not line.startswith("#")]
    assert "\\getenv password USERDEST_DB_PASSWORD" in code
    assert "  CREATE ROLE userdest LOGIN PASSWORD :'password';" in code
    assert not [line for line in code if "SUPERUSER" in line.upper()]


def test_postgres_16_keeps_its_data_and_reports_health() -> None:
    pg = SERVICES["postgres"]
    assert pg["image"].startswith("postgres:16")
    volume = pg["volumes"][0]
    assert volume.split(":")[0] in COMPOSE["volumes"]
    assert volume.endswith(":/var/lib/postgresql/data")
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])
    env = environment("postgres")
    assert "POSTGRES_PASSWORD" in env or env.get("POSTGRES_HOST_AUTH_METHOD") == "trust"


def test_migrate_runs_once_after_postgres_is_healthy() -> None:
    assert command("migrate") == ["userdest", "db", "upgrade"]
    assert SERVICES["migrate"]["restart"] == "no"
    assert SERVICES["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"


@pytest.mark.parametrize("name", AFTER_MIGRATE)
def test_receiver_and_workers_wait_for_the_migration_and_redis(name: str) -> None:
    deps = SERVICES[name]["depends_on"]
    assert deps["migrate"]["condition"] == "service_completed_successfully"
    assert deps["redis"]["condition"] == "service_healthy"


def test_receiver_runs_the_app_factory_under_gunicorn() -> None:
    receiver = SERVICES["receiver"]
    tokens = command("receiver")
    assert tokens[0] == "gunicorn"
    assert "api:create_app()" in tokens
    assert option(tokens, "--bind") == "0.0.0.0:8000"
    assert [p.rsplit(":", 1)[1] for p in receiver["ports"]] == ["8000"]
    assert "/healthz" in " ".join(receiver["healthcheck"]["test"])
    assert "WEB_CONCURRENCY" in environment("receiver")


def _seconds(value: str) -> int:
    assert value.endswith("s"), value
    return int(value[:-1])


def _bytes(value: str) -> int:
    units = {"k": 2**10, "m": 2**20, "g": 2**30}
    number, unit = re.fullmatch(r"(\d+)([kmg])b?", value.lower()).groups()  # type: ignore[union-attr]
    return int(number) * units[unit]


def test_the_receiver_drains_before_compose_kills_it() -> None:
    graceful = int(option(command("receiver"), "--graceful-timeout"))
    assert _seconds(SERVICES["receiver"]["stop_grace_period"]) > graceful
    for name in ("worker", "worker-replay"):
        assert _seconds(SERVICES[name]["stop_grace_period"]) >= 30


def test_every_long_running_service_has_a_memory_limit() -> None:
    for name, service in SERVICES.items():
        if name in ("migrate", "cli") or "profiles" in service:
            continue
        limits = service["deploy"]["resources"]["limits"]
        assert limits["memory"], name
    redis_limit = _bytes(SERVICES["redis"]["deploy"]["resources"]["limits"]["memory"])
    # Room beside maxmemory for the fork that rewrites the append-only file.
    assert redis_limit >= 1.5 * _bytes(redis_conf()["maxmemory"])


def test_prometheus_grafana_and_flower_are_optional_and_use_deploy() -> None:
    for name in ("prometheus", "grafana", "flower"):
        assert SERVICES[name]["profiles"] == ["observability"], name
        for volume in SERVICES[name].get("volumes", []):
            source = volume.split(":")[0]
            assert (ROOT / source).exists(), f"{name} mounts {source}, which is missing"
        for port in SERVICES[name]["ports"]:
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond this host"
    scraped = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    names = {
        n for job in scraped["scrape_configs"] for sd in job["dns_sd_configs"] for n in sd["names"]
    }
    assert names == {"receiver", "worker", "worker-replay"}
    assert "alerts.yaml" in " ".join(scraped["rule_files"])
    broker = interpolate(environment("flower")["CELERY_BROKER_URL"] or "")
    assert broker == interpolate(COMPOSE["x-userdest"]["environment"]["REDIS_URL"]), (
        "Flower watches another Redis"
    )


@pytest.mark.parametrize(("name", "queue"), [("worker", "ingest"), ("worker-replay", "replay")])
def test_workers_run_celery_on_their_queue(name: str, queue: str) -> None:
    tokens = command(name)
    # --quiet: no banner, so a start prints only JSON lines (the logs' format).
    assert tokens[:5] == ["celery", "--quiet", "-A", "workers", "worker"]
    assert option(tokens, "-Q") == queue


@pytest.mark.parametrize("name", ["worker", "worker-replay"])
def test_workers_can_be_scaled(name: str) -> None:
    service = SERVICES[name]
    for fixed in ("container_name", "ports", "hostname"):
        assert fixed not in service, f"{name} has {fixed}, so --scale {name}=N cannot work"


def test_userdest_services_share_one_image_built_from_the_dockerfile() -> None:
    images = set()
    for name in USERDEST_SERVICES:
        service = SERVICES[name]
        assert service["build"] == {"context": ".", "dockerfile": "Dockerfile"}
        images.add(service["image"])
        assert "/run/prometheus" in service["tmpfs"]
        assert environment(name)["PROMETHEUS_MULTIPROC_DIR"] == "/run/prometheus"
    assert len(images) == 1


def test_every_setting_reaches_the_userdest_containers() -> None:
    """Each Settings field passes through from the shell; unset, it arrives empty (the default)."""
    shared = COMPOSE["x-userdest"]["environment"]
    for var in SETTINGS_VARS - {"DATABASE_URL", "REDIS_URL"} - set(REQUIRED):
        assert shared.get(var) == f"${{{var}:-}}", f"x-userdest: {var} should be ${{{var}:-}}"
    for name in USERDEST_SERVICES:
        env = environment(name)
        missing = SETTINGS_VARS - set(env)
        assert not missing, f"{name} does not pass {sorted(missing)}"
        for var in SETTINGS_VARS - {"DATABASE_URL", "REDIS_URL", "WORKER_QUEUES"} - set(REQUIRED):
            assert str(env[var]).startswith(f"${{{var}:-"), (
                f"{name}: {var} must come from the shell"
            )


@pytest.mark.parametrize(("name", "queue"), [("worker", "ingest"), ("worker-replay", "replay")])
def test_workers_settings_agree_with_their_command(name: str, queue: str) -> None:
    env = {k: interpolate(v or "") for k, v in environment(name).items()}
    settings = Settings.from_env(env)
    assert settings.queues == [queue], "WORKER_QUEUES must not contradict -Q"
    assert settings.worker_metrics_port > 0
    assert [str(p) for p in SERVICES[name]["expose"]] == [str(settings.worker_metrics_port)]


@pytest.mark.parametrize("name", USERDEST_SERVICES)
def test_compose_settings_verify_and_point_at_compose_services(name: str) -> None:
    env = {k: interpolate(v or "") for k, v in environment(name).items()}
    settings = Settings.from_env(env).verify()
    assert urlsplit(settings.database_url).hostname == "postgres"
    assert urlsplit(settings.redis_url).hostname == "redis"


def test_every_variable_in_compose_is_read_by_something() -> None:
    readme = (ROOT / "README.md").read_text()
    named = set(re.findall(r"\$\{([A-Z0-9_]+)", COMPOSE_TEXT))
    for name in USERDEST_SERVICES:
        named |= set(environment(name))
    unknown = named - SETTINGS_VARS - set(TOOL_VARS)
    assert not unknown, f"compose names variables nothing reads: {sorted(unknown)}"
    for var in named & set(TOOL_VARS):
        assert f"`{var}`" in readme, f"{var} ({TOOL_VARS[var]}) is not documented in README.md"
    assert set(environment("postgres")) <= IMAGE_VARS
    assert set(environment("redis")) == {"REDISCLI_AUTH"}


def test_userdest_console_script_is_declared() -> None:
    assert PYPROJECT["project"]["scripts"]["userdest"] == "ops.cli:main"
    deps = " ".join(PYPROJECT["project"]["dependencies"])
    for tool in ("gunicorn", "celery"):
        assert re.search(rf"\b{tool}\b", deps), f"{tool} is run by compose but not a dependency"


def test_cli_module_defines_main() -> None:
    cli = importlib.import_module("ops.cli")
    assert callable(getattr(cli, "main", None))


def test_api_package_offers_create_app() -> None:
    init = ROOT / "api" / "__init__.py"
    tree = ast.parse(init.read_text())
    names = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            names |= {alias.asname or alias.name for alias in node.names}
    assert "create_app" in names, "gunicorn runs api:create_app(), which api/__init__.py lacks"


def test_workers_package_is_a_celery_app() -> None:
    if not (ROOT / "workers" / "__init__.py").exists():
        pytest.skip("workers/__init__.py is not written yet")
    from celery import Celery
    from celery.app.utils import find_app

    assert isinstance(find_app("workers"), Celery), "`celery -A workers` finds no Celery app"


def test_dockerfile_installs_the_project_as_a_user() -> None:
    lines = [
        line.strip()
        for line in (ROOT / "Dockerfile").read_text().replace("\\\n", " ").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert lines[0].startswith("ARG PYTHON_IMAGE=python:3.11-slim@sha256:")
    assert lines[1] == "FROM ${PYTHON_IMAGE}"
    copied = {
        part.rstrip("/") for line in lines if line.startswith("COPY") for part in line.split()
    }
    packages = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    for package in [p.rstrip("*") for p in packages] + ["pyproject.toml", "README.md"]:
        assert package in copied, f"the Dockerfile does not copy {package}"
    assert any(re.search(r"pip install (--no-deps )?\.(\s|$)", line) for line in lines)
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored


def test_the_receiver_publishes_only_ingestion_and_prometheus_scrapes_its_admin_port() -> None:
    receiver = SERVICES["receiver"]
    admin = interpolate(environment("receiver")["ADMIN_PORT"] or "")
    assert [str(p) for p in receiver["expose"]] == [admin]
    assert [p.rsplit(":", 1)[1] for p in receiver["ports"]] == ["8000"] != [admin]
    scraped = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    [job] = [j for j in scraped["scrape_configs"] if j["job_name"] == "userdest-receiver"]
    assert [str(sd["port"]) for sd in job["dns_sd_configs"]] == [admin]


def _ha_services() -> dict[str, dict[str, Any]]:
    return {n: s for n, s in SERVICES.items() if s.get("profiles") == ["ha"]}


def test_the_ha_profile_runs_three_redis_and_three_sentinels_that_agree_by_two() -> None:
    ha = _ha_services()
    replicas = [n for n in ha if n.startswith("redis-")]
    sentinels = [n for n in ha if n.startswith("sentinel-")]
    assert len(replicas) == 2 and len(sentinels) == 3
    conf = redis_conf()
    assert conf["masterauth"] == conf["requirepass"], "a returning master must rejoin"
    assert option(command("redis"), "--replica-announce-ip") == "redis"
    for name in replicas:
        assert option(command(name), "--replicaof") == "redis"
        assert option(command(name), "--replica-announce-ip") == name
        assert SERVICES[name]["configs"] == SERVICES["redis"]["configs"]
    [mount] = {m["source"]: m for n in sentinels for m in SERVICES[n]["configs"]}.values()
    lines = interpolate(COMPOSE["configs"][mount["source"]]["content"]).splitlines()
    # The master's name userdest asks for by default (REDIS_SENTINEL_MASTER).
    defaults = {f.name: f.default for f in dataclasses.fields(Settings)}
    master = defaults.get("redis_sentinel_master", "userdest")
    assert f"sentinel monitor {master} redis 6379 2" in lines
    assert f"sentinel auth-pass {master} {conf['requirepass']}" in lines
    # The URL README gives for STACK_REDIS_URL names exactly these Sentinels.
    readme = (ROOT / "README.md").read_text()
    [example] = re.findall(r"\(`(sentinel://[^`]+)`\)", readme)
    parts = [urlsplit(p) for p in example.split(";")]
    assert [(p.hostname, p.port) for p in parts] == [(n, 26379) for n in sentinels]


def test_the_ha_profile_s_standby_copies_postgres_with_the_password_from_the_environment() -> None:
    standby = SERVICES["postgres-standby"]
    line = " ".join(command("postgres-standby"))
    assert "pg_basebackup --host postgres --username postgres" in line
    assert "--write-recovery-conf" in line and line.endswith("exec postgres")
    assert (
        interpolate(environment("postgres-standby")["PGPASSWORD"] or "")
        == REQUIRED["POSTGRES_PASSWORD"]
    )
    assert standby["depends_on"]["postgres"]["condition"] == "service_healthy"
    script = (ROOT / "deploy" / "compose" / "postgres-init.sh").read_text()
    assert "host replication all all scram-sha-256" in script


def _compose_spec() -> dict[str, Any]:
    """The Compose Specification's JSON schema, as check-jsonschema ships it."""
    pytest.importorskip("check_jsonschema")
    schemas = importlib.resources.files("check_jsonschema") / "builtin_schemas" / "vendor"
    return dict(json.loads((schemas / "compose-spec.json").read_text()))


def test_compose_passes_the_compose_specification_s_schema() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = _compose_spec()
    jsonschema.validators.validator_for(schema)(schema).validate(COMPOSE)
    broken = copy.deepcopy(COMPOSE)
    broken["services"]["redis"]["comand"] = broken["services"]["redis"].pop("command")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validators.validator_for(schema)(schema).validate(broken)
