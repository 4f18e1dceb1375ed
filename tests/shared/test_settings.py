"""Settings: built from the environment by a factory, typed, verified with one clear line."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from shared.settings import SECRET_MIN, Settings, SettingsError

ROOT = Path(__file__).resolve().parents[2]

SECRETS = {"envelope_secret": "e" * SECRET_MIN, "suppression_secret": "s" * SECRET_MIN}
"""What every verified Settings here needs besides the values a test is about."""


def test_an_empty_environment_gives_the_defaults() -> None:
    assert Settings.from_env({}) == Settings()
    assert Settings().database_url == "postgresql://postgres@127.0.0.1:5432/userdest"
    assert Settings().redis_url == "redis://127.0.0.1:6379/0"


def test_every_field_is_read_from_its_upper_case_variable_with_its_type() -> None:
    samples = {int: "7", float: "2.5", str: "x"}
    for f in dataclasses.fields(Settings):
        kind = type(f.default)
        got = getattr(Settings.from_env({f.name.upper(): samples[kind]}), f.name)
        assert type(got) is kind and got == kind(samples[kind]), f.name


def test_values_are_stripped_and_empty_means_default() -> None:
    settings = Settings.from_env(
        {"MAX_DEPTH": " 12 ", "AUTH_CACHE_TTL": "", "WORKER_QUEUES": " ingest , replay ,"}
    )
    assert settings.max_depth == 12
    assert settings.auth_cache_ttl == Settings().auth_cache_ttl
    assert settings.queues == ["ingest", "replay"]


def test_unknown_variables_are_ignored() -> None:
    assert Settings.from_env({"PATH": "/bin", "MAX_DEPTHS": "3"}) == Settings()


def test_from_env_reads_the_process_environment_when_called(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TASK_TIME_LIMIT", "120")
    assert Settings.from_env().task_time_limit == 120
    monkeypatch.setenv("TASK_TIME_LIMIT", "90")
    assert Settings.from_env().task_time_limit == 90


@pytest.mark.parametrize(("var", "raw"), [("MAX_DEPTH", "deep"), ("WORKER_PREFETCH", "1e3")])
def test_a_value_of_the_wrong_type_names_its_variable(var: str, raw: str) -> None:
    with pytest.raises(SettingsError) as err:
        Settings.from_env({var: raw})
    assert var in str(err.value) and "\n" not in str(err.value)


def test_settings_are_immutable() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings().max_depth = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("url", "driver_url"),
    [
        ("postgresql://u@h:5432/db", "postgresql+psycopg://u@h:5432/db"),
        ("postgres://u:p@h/db", "postgresql+psycopg://u:p@h/db"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
    ],
)
def test_the_usual_postgres_url_gets_the_psycopg_driver(url: str, driver_url: str) -> None:
    settings = Settings(database_url=url, **SECRETS)
    assert settings.sqlalchemy_url == driver_url
    assert settings.database_url == url
    assert settings.verify() is settings


def test_the_defaults_verify_once_the_secrets_are_set() -> None:
    settings = Settings(**SECRETS)
    assert settings.verify() is settings


@pytest.mark.parametrize("name", ["envelope_secret", "suppression_secret"])
@pytest.mark.parametrize("value", ["", "short"])
def test_a_missing_or_short_secret_is_refused_without_showing_it(name: str, value: str) -> None:
    settings = dataclasses.replace(Settings(**SECRETS), **{name: value})
    with pytest.raises(SettingsError, match=name.upper()) as err:
        settings.verify()
    assert "short" not in str(err.value)
    assert "e" * SECRET_MIN not in repr(settings) and "s" * SECRET_MIN not in repr(settings)


def test_envelope_secret_may_list_secrets_for_a_rotation_the_first_signing() -> None:
    listed = dataclasses.replace(
        Settings(**SECRETS), envelope_secret=f" {'n' * SECRET_MIN} , {'o' * SECRET_MIN} "
    ).verify()
    assert listed.envelope_secrets == ["n" * SECRET_MIN, "o" * SECRET_MIN]
    assert Settings(**SECRETS).envelope_secrets == [SECRETS["envelope_secret"]]


@pytest.mark.parametrize("value", [f"{'n' * SECRET_MIN},short", "," * SECRET_MIN])
def test_each_listed_envelope_secret_must_be_long_enough(value: str) -> None:
    settings = dataclasses.replace(Settings(**SECRETS), envelope_secret=value)
    with pytest.raises(SettingsError, match="ENVELOPE_SECRET") as err:
        settings.verify()
    assert "short" not in str(err.value)


@pytest.mark.parametrize(
    ("changes", "var"),
    [
        ({"database_url": "mysql://u@h/db"}, "DATABASE_URL"),
        ({"database_url": "postgresql://u@h:5432/"}, "DATABASE_URL"),
        ({"database_url": "not a url"}, "DATABASE_URL"),
        ({"redis_url": "http://127.0.0.1:6379"}, "REDIS_URL"),
        ({"redis_url": "127.0.0.1:6379"}, "REDIS_URL"),
        ({"database_url": "postgresql://u@h:port/db"}, "DATABASE_URL"),
        ({"redis_url": "redis://h:port/0"}, "REDIS_URL"),
        ({"max_call_bytes": 0}, "MAX_CALL_BYTES"),
        ({"max_batch_bytes": -1}, "MAX_BATCH_BYTES"),
        ({"max_batch_calls": 0}, "MAX_BATCH_CALLS"),
        ({"max_depth": 0}, "MAX_DEPTH"),
        ({"auth_cache_ttl": 0.0}, "AUTH_CACHE_TTL"),
        ({"auth_cache_ttl": 11.0}, "AUTH_CACHE_TTL"),
        ({"auth_cache_ttl": float("nan")}, "AUTH_CACHE_TTL"),
        ({"readyz_cache_ttl": -1.0}, "READYZ_CACHE_TTL"),
        ({"readyz_cache_ttl": float("nan")}, "READYZ_CACHE_TTL"),
        ({"trusted_proxies": -1}, "TRUSTED_PROXIES"),
        ({"rate_limit_per_second": -1.0}, "RATE_LIMIT"),
        ({"rate_limit_burst": -1}, "RATE_LIMIT"),
        ({"visibility_timeout": 300, "task_time_limit": 300}, "VISIBILITY_TIMEOUT"),
        ({"log_level": "VERBOSE"}, "LOG_LEVEL"),
        ({"definition_budget": -1}, "DEFINITION_BUDGET"),
        ({"definition_budget": 10_001}, "DEFINITION_BUDGET"),
        ({"worker_queues": "ingset"}, "WORKER_QUEUES"),
        ({"worker_queues": "ingest,replay,bulk"}, "WORKER_QUEUES"),
        ({"worker_queues": " , "}, "WORKER_QUEUES"),
    ],
)
def test_verify_rejects_a_bad_value_in_one_line_naming_it(
    changes: dict[str, object], var: str
) -> None:
    with pytest.raises(SettingsError) as err:
        dataclasses.replace(Settings(), **changes).verify()  # type: ignore[arg-type]
    message = str(err.value)
    assert var in message and "\n" not in message
    assert isinstance(err.value, ValueError)


@pytest.mark.parametrize(
    "changes",
    [
        {"database_url": "mysql://ops:s3cret-pw@db.internal/userdest"},
        {"database_url": "postgresql://ops:s3cret-pw@db.internal:notaport/userdest"},
        {"redis_url": "http://:s3cret-pw@redis.internal:6379/0"},
    ],
)
def test_a_rejected_url_is_shown_without_its_password(changes: dict[str, Any]) -> None:
    with pytest.raises(SettingsError) as err:
        dataclasses.replace(Settings(), **changes).verify()
    assert "s3cret-pw" not in str(err.value)
    assert "internal" in str(err.value)


def test_a_bad_environment_is_caught_by_verify_not_by_a_traceback_later() -> None:
    settings = Settings.from_env(
        {"DATABASE_URL": "sqlite:///x.db", "REDIS_URL": "redis://r:6379/1"}
    )
    with pytest.raises(SettingsError, match="DATABASE_URL"):
        settings.verify()


def test_no_module_of_shared_reads_settings_at_import_time() -> None:
    """Importing any shared module, in a broken environment, neither fails nor builds Settings."""
    code = """
import importlib, pkgutil
import shared
from shared.settings import Settings

def refuse(cls, *args, **kwargs):
    raise AssertionError("Settings.from_env() called while importing " + current)

Settings.from_env = classmethod(refuse)
names = ["shared." + m.name for m in pkgutil.iter_modules(shared.__path__)] + ["shared.migrations"]
for current in names:
    importlib.import_module(current)
print(len(names))
"""
    env = {
        "PATH": "/usr/bin:/bin",
        "DATABASE_URL": "nonsense",
        "REDIS_URL": "nonsense",
        "MAX_DEPTH": "not a number",
        "VISIBILITY_TIMEOUT": "1",
    }
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) >= 10


@pytest.mark.parametrize(
    ("url", "driver_url"),
    [
        (
            "postgresql://u@h1:5432,h2:5433/db?target_session_attrs=read-write",
            "postgresql+psycopg://u@/db?host=h1:5432&host=h2:5433&target_session_attrs=read-write",
        ),
        ("postgresql://u@h1,h2/db", "postgresql+psycopg://u@/db?host=h1&host=h2"),
        (
            "postgresql://u@/db?host=h1,h2&port=5432,5433",
            "postgresql+psycopg://u@/db?host=h1,h2&port=5432,5433",
        ),
        (
            "postgresql://u@/db?host=h1:5432&host=h2:5433",
            "postgresql+psycopg://u@/db?host=h1:5432&host=h2:5433",
        ),
    ],
)
def test_libpq_multi_host_urls_verify_and_reach_sqlalchemy(url: str, driver_url: str) -> None:
    settings = Settings(database_url=url, **SECRETS).verify()
    assert settings.sqlalchemy_url == driver_url
    make_url(settings.sqlalchemy_url)  # SQLAlchemy reads it


@pytest.mark.parametrize(
    "url",
    [
        "sentinel://127.0.0.1:26379/0",
        "sentinel://h1:26379;sentinel://h2:26379;sentinel://h3:26379/0",
        "sentinel://:secret@h1:26379;sentinel://h2/1",
    ],
)
def test_sentinel_urls_verify(url: str) -> None:
    Settings(redis_url=url, **SECRETS).verify()


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"redis_url": "sentinel://h1:26379;redis://h2:6379/0"}, "REDIS_URL"),
        ({"redis_url": "sentinel://h1:x/0"}, "REDIS_URL"),
        ({"database_url": "postgresql://u@h1:5432,h2:x/db"}, "DATABASE_URL"),
        ({"redis_wait_replicas": -1}, "REDIS_WAIT_REPLICAS"),
        ({"redis_wait_timeout_ms": 0}, "REDIS_WAIT_TIMEOUT_MS"),
        ({"redis_url": "sentinel://h1/0", "redis_sentinel_master": ""}, "REDIS_SENTINEL_MASTER"),
    ],
)
def test_bad_high_availability_settings_are_named(changes: dict[str, Any], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        Settings(**{**SECRETS, **changes}).verify()
