"""`userdest` end to end through Click against the test database: answers, tables and errors."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import psycopg
import pytest
from click.testing import CliRunner, Result
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from ops.cli import main
from shared.models import App, AttributeDefinition, EventDefinition, User
from shared.settings import Settings
from tests.support.cli import one_line_error
from tests.support.db import ADMIN_URL
from tests.support.readmodel import (
    COMPANY_KEYS,
    DEFINITION_KEYS,
    EVENT_KEYS,
    KEY_KEYS,
    PAGEVIEW_KEYS,
    PROFILE_KEYS,
    make_user,
    seed,
)

Run = Callable[..., Result]


def _invoke(env: dict[str, str], args: tuple[str, ...], stdin: str | None = None) -> Result:
    return CliRunner(env=env).invoke(main, list(args), input=stdin)


@pytest.fixture
def run(clean_db: Engine, settings: Settings) -> Run:
    """Run `userdest ARGS...` against the emptied test database; fail on an unexpected error."""
    env = {"DATABASE_URL": settings.database_url}

    def call(*args: str, stdin: str | None = None) -> Result:
        result = _invoke(env, args, stdin)
        assert result.exit_code == 0, result.output
        return result

    return call


@pytest.fixture
def fail(clean_db: Engine, settings: Settings) -> Run:
    """Run a command that must fail: non-zero, one line on stderr, no traceback. Returns stderr."""
    return lambda *args, env=None, stdin=None: _failure(
        env or {"DATABASE_URL": settings.database_url}, args, stdin
    )


def _failure(env: dict[str, str], args: tuple[str, ...], stdin: str | None) -> Any:
    return one_line_error(_invoke(env, args, stdin))


def as_json(result: Result) -> Any:
    return orjson.loads(result.stdout)


@pytest.fixture
def shop(run: Run) -> str:
    run("apps", "create", "shop")
    return "shop"


# --- help and settings -------------------------------------------------------------------------


def test_help_needs_no_database() -> None:
    result = _invoke({"DATABASE_URL": "mysql://nowhere/x"}, ("--help",))
    assert result.exit_code == 0
    for group in ("apps", "keys", "domains", "webhook-secret", "attributes", "users", "companies"):
        assert group in result.stdout


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://user@host/db", "DATABASE_URL must look like"),
        ("postgresql://postgres@127.0.0.1:abc/db", "DATABASE_URL must look like"),
        ("postgresql://postgres@127.0.0.1:1/userdest_none", "cannot reach the database"),
    ],
)
def test_bad_database_url_is_one_line(fail: Run, url: str, message: str) -> None:
    assert message in fail("apps", "list", env={"DATABASE_URL": url})
    assert message in fail("db", "upgrade", env={"DATABASE_URL": url})


def test_a_database_without_the_schema_says_so(fail: Run) -> None:
    # The maintenance database exists but was never migrated: the query fails, in one line.
    assert "userdest db upgrade" in fail("apps", "list", env={"DATABASE_URL": ADMIN_URL})


def test_usage_mistakes_are_one_line(fail: Run) -> None:
    assert "Missing option '--app'" in fail("keys", "list")
    assert "--limit" in fail("users", "events", "--app", "shop", "u1", "--limit", "0")
    assert "--scope" in fail("attributes", "define", "--app", "shop", "--scope", "team", "a", "b")


# --- db upgrade --------------------------------------------------------------------------------


@pytest.fixture
def fresh_database(settings: Settings) -> Iterator[str]:
    name = f"userdest_cli_{os.getpid()}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')  # type: ignore[arg-type]
    yield settings.database_url.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]


def test_db_upgrade_creates_and_migrates_a_fresh_database(fresh_database: str) -> None:
    env = {"DATABASE_URL": fresh_database}
    first = _invoke(env, ("db", "upgrade", "--json"))
    assert first.exit_code == 0, first.output
    answer = as_json(first)
    assert set(answer) == {"database", "created", "revision"}
    assert answer["database"] == fresh_database.rsplit("/", 1)[1]
    assert answer["created"] is True
    with psycopg.connect(fresh_database) as conn:
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables")}
    assert {"apps", "users", "identities", "alembic_version"} <= tables

    again = _invoke(env, ("db", "upgrade"))
    assert again.exit_code == 0, again.output
    assert answer["revision"] in again.stdout
    assert as_json(_invoke(env, ("db", "upgrade", "--json")))["created"] is False
    # The fresh database is usable straight away.
    assert _invoke(env, ("apps", "create", "first")).exit_code == 0


# --- apps --------------------------------------------------------------------------------------


def test_apps_create_and_list(run: Run) -> None:
    created = as_json(run("apps", "create", "shop", "--json"))
    assert set(created) == {"name", "created_at"}
    assert created["name"] == "shop"
    assert "blog" in run("apps", "create", "blog").stdout

    listed = as_json(run("apps", "list", "--json"))
    assert [a["name"] for a in listed] == ["blog", "shop"]
    assert set(listed[0]) == {
        "name",
        "created_at",
        "active_keys",
        "trusted_domains",
        "webhook_secret_set",
        "caps",
    }
    assert listed[0]["caps"]["user_attributes"] == 1000
    table = run("apps", "list").stdout
    assert "blog" in table
    assert "shop" in table


def test_apps_list_empty(run: Run) -> None:
    assert as_json(run("apps", "list", "--json")) == []
    assert "no apps" in run("apps", "list").stdout


def test_duplicate_or_empty_app(fail: Run, shop: str) -> None:
    assert "already exists" in fail("apps", "create", "shop")
    assert "must not be empty" in fail("apps", "create", " ")


# --- keys --------------------------------------------------------------------------------------


def test_keys_create_list_revoke(run: Run, shop: str) -> None:
    created = as_json(run("keys", "create", "--app", shop, "--json"))
    assert set(created) == {"key_id", "api_key", "label", "scope"}
    assert created["label"] is None
    secret = created["api_key"]
    readable = run("keys", "create", "--app", shop)
    assert "cannot be shown again" in readable.stderr

    listed = as_json(run("keys", "list", "--app", shop, "--json"))
    assert len(listed) == 2
    assert all(set(k) == KEY_KEYS for k in listed)
    mine = next(k for k in listed if k["key_id"] == created["key_id"])
    assert secret.startswith(mine["prefix"])
    assert mine["revoked_at"] is None
    assert mine["last_used_at"] is None
    for output in (
        run("keys", "list", "--app", shop, "--json"),
        run("keys", "list", "--app", shop),
    ):
        assert secret not in output.output
        assert created["key_id"] in output.stdout

    revoked = as_json(run("keys", "revoke", created["key_id"], "--json"))
    assert set(revoked) == {"key_id", "revoked_at"}
    assert revoked["revoked_at"] is not None
    assert created["key_id"] in run("keys", "revoke", created["key_id"]).stdout  # twice is fine
    listed = {k["key_id"]: k for k in as_json(run("keys", "list", "--app", shop, "--json"))}
    assert listed[created["key_id"]]["revoked_at"] == revoked["revoked_at"]
    assert revoked["revoked_at"] in run("keys", "list", "--app", shop).stdout


def test_keys_are_labelled_and_listed_with_their_label(run: Run, fail: Run, shop: str) -> None:
    made = as_json(run("keys", "create", "--app", shop, "--label", " iOS app ", "--json"))
    assert made["label"] == "iOS app"
    run("keys", "create", "--app", shop)
    listed = as_json(run("keys", "list", "--app", shop, "--json"))
    assert [k["label"] for k in listed] == ["iOS app", None]
    assert "iOS app" in run("keys", "list", "--app", shop).stdout
    assert "1 to 200 characters" in fail("keys", "create", "--app", shop, "--label", " ")
    assert "1 to 200 characters" in fail("keys", "create", "--app", shop, "--label", "x" * 201)


def test_keys_errors(fail: Run, run: Run, shop: str) -> None:
    assert "no app named 'nope'" in fail("keys", "create", "--app", "nope")
    assert "no app named 'nope'" in fail("keys", "list", "--app", "nope")
    assert "no API key" in fail("keys", "revoke", "key_missing")
    assert "no keys" in run("keys", "list", "--app", shop).stdout


# --- domains -----------------------------------------------------------------------------------


def test_domains_add_list_remove(run: Run, shop: str) -> None:
    assert "every host is trusted" in run("domains", "list", "--app", shop).stdout
    added = as_json(run("domains", "add", "--app", shop, "https://Shop.Example.com:443/", "--json"))
    assert added == {"app": shop, "host": "shop.example.com"}
    run("domains", "add", "--app", shop, "*.example.com")
    listed = as_json(run("domains", "list", "--app", shop, "--json"))
    assert [d["host"] for d in listed] == ["*.example.com", "shop.example.com"]
    assert all(set(d) == {"host", "created_at"} for d in listed)
    assert "*.example.com" in run("domains", "list", "--app", shop).stdout

    removed = as_json(run("domains", "remove", "--app", shop, "shop.example.com", "--json"))
    assert removed == {"app": shop, "host": "shop.example.com", "already_gone": False}
    assert "*.example.com" in run("domains", "remove", "--app", shop, "*.example.com").stdout
    assert as_json(run("domains", "list", "--app", shop, "--json")) == []
    again = run("domains", "remove", "--app", shop, "shop.example.com", "--json")
    assert as_json(again) == {"app": shop, "host": "shop.example.com", "already_gone": True}
    assert "already gone" in again.stderr


def test_domains_errors(fail: Run, shop: str) -> None:
    assert "no app named" in fail("domains", "add", "--app", "nope", "a.example.com")
    assert "no app named" in fail("domains", "list", "--app", "nope")
    assert "no app named" in fail("domains", "remove", "--app", "nope", "a.example.com")
    assert "not a host name" in fail("domains", "add", "--app", shop, "a.*.example.com")


@pytest.mark.parametrize(
    "entry",
    [
        "*.com",
        "*",
        "*.",
        "a b",
        "exa_mple.com",
        "bad-.example.com",
        "*.*.example.com",
        "x" * 64 + ".com",
    ],
)
def test_domains_add_refuses_what_is_not_a_host_or_a_two_label_wildcard(
    entry: str, fail: Run, run: Run, shop: str
) -> None:
    assert "not a host name" in fail("domains", "add", "--app", shop, entry)
    assert as_json(run("domains", "list", "--app", shop, "--json")) == []


@pytest.mark.parametrize(
    ("entry", "stored"),
    [
        ("*.example.co.uk", "*.example.co.uk"),
        ("Bücher.Example", "xn--bcher-kva.example"),
        ("*.bücher.example", "*.xn--bcher-kva.example"),
        ("https://xn--BCHER-kva.example/", "xn--bcher-kva.example"),
        ("localhost", "localhost"),
        ("127.0.0.1:8080", "127.0.0.1"),
        ("[::1]:8080", "::1"),
    ],
)
def test_domains_add_stores_hosts_as_browsers_send_them(
    entry: str, stored: str, run: Run, shop: str
) -> None:
    added = as_json(run("domains", "add", "--app", shop, entry, "--json"))
    assert added["host"] == stored


# --- webhook secret ----------------------------------------------------------------------------


def _secret(engine: Engine, app: str) -> str | None:
    with Session(engine) as session:
        return session.scalar(select(App.webhook_secret).where(App.name == app))


def test_webhook_secret_set_and_clear(run: Run, clean_db: Engine, shop: str) -> None:
    answer = as_json(run("webhook-secret", "set", "--app", shop, "s3cret", "--json"))
    assert answer == {"app": shop, "webhook_secret_set": True}
    assert _secret(clean_db, shop) == "s3cret"
    assert "s3cret" not in run("webhook-secret", "set", "--app", shop, "other").output
    assert _secret(clean_db, shop) == "other"
    run("webhook-secret", "set", "--app", shop, "-", stdin="from-stdin\n")
    assert _secret(clean_db, shop) == "from-stdin"
    assert as_json(run("apps", "list", "--json"))[0]["webhook_secret_set"] is True

    cleared = as_json(run("webhook-secret", "set", "--app", shop, "--clear", "--json"))
    assert cleared == {"app": shop, "webhook_secret_set": False}
    assert _secret(clean_db, shop) is None


def test_webhook_secret_errors(fail: Run, shop: str) -> None:
    assert "no app named" in fail("webhook-secret", "set", "--app", "nope", "x")
    assert "either SECRET or --clear" in fail("webhook-secret", "set", "--app", shop)
    assert "either SECRET or --clear" in fail(
        "webhook-secret", "set", "--app", shop, "x", "--clear"
    )
    assert "must not be empty" in fail("webhook-secret", "set", "--app", shop, "  ")


# --- attributes --------------------------------------------------------------------------------


def test_attributes_define_and_list(run: Run, clean_db: Engine, shop: str) -> None:
    plan = as_json(
        run(
            "attributes", "define", "--app", shop, "--scope", "user", "plan", "fixed",
            "--choices", "free, pro,free", "--multiple", "--json",
        )
    )  # fmt: skip
    assert plan == {
        "scope": "user",
        "event": None,
        "name": "plan",
        "type": "fixed",
        "choices": ["free", "pro"],
        "origin": "operator",
    }
    seats = as_json(
        run(
            "attributes",
            "define",
            "--app",
            shop,
            "--scope",
            "company",
            "seats",
            "INTEGER",
            "--json",
        )
    )
    assert (seats["scope"], seats["type"], seats["choices"]) == ("company", "integer", None)
    total = as_json(
        run(
            "attributes", "define", "--app", shop, "--scope", "event",
            "--event", "Order Completed", "total", "number", "--json",
        )
    )  # fmt: skip
    assert (total["event"], total["type"]) == ("Order Completed", "number")

    with Session(clean_db) as session:
        event = session.scalars(select(EventDefinition)).one()
        row = session.scalars(select(AttributeDefinition).where(AttributeDefinition.name == "plan"))
        assert row.one().multiple is True
    assert (event.name, event.origin) == ("Order Completed", "operator")

    listed = as_json(run("attributes", "list", "--app", shop, "--json"))
    assert all(set(d) == DEFINITION_KEYS for d in listed)
    assert [(d["scope"], d["name"]) for d in listed] == [
        ("user", "plan"),
        ("company", "seats"),
        ("event", "total"),
    ]
    table = run("attributes", "list", "--app", shop).stdout
    for value in ("plan", "free, pro", "seats", "integer", "Order Completed", "operator"):
        assert value in table


def test_redefining_takes_traffic_definitions_over(run: Run, clean_db: Engine, shop: str) -> None:
    with Session(clean_db) as session:
        app_id = session.scalar(select(App.id).where(App.name == shop))
        session.add(EventDefinition(app_id=app_id, name="Signed Up", origin="traffic"))
        session.add_all(
            [
                AttributeDefinition(
                    app_id=app_id, scope="user", event="", name="age", type="string",
                    origin="traffic",
                ),
                AttributeDefinition(
                    app_id=app_id, scope="event", event="Signed Up", name="plan", type="string",
                    origin="traffic",
                ),
            ]
        )  # fmt: skip
        session.commit()

    age = as_json(
        run("attributes", "define", "--app", shop, "--scope", "user", "age", "integer", "--json")
    )
    assert (age["type"], age["origin"]) == ("integer", "operator")
    run(
        "attributes", "define", "--app", shop, "--scope", "event", "--event", "Signed Up",
        "plan", "fixed", "--choices", "a,b",
    )  # fmt: skip
    run("attributes", "define", "--app", shop, "--scope", "user", "age", "float")
    listed = {d["name"]: d for d in as_json(run("attributes", "list", "--app", shop, "--json"))}
    assert len(listed) == 2
    assert (listed["age"]["type"], listed["age"]["origin"]) == ("float", "operator")
    assert listed["plan"] == {
        "scope": "event",
        "event": "Signed Up",
        "name": "plan",
        "type": "fixed",
        "choices": ["a", "b"],
        "origin": "operator",
    }
    with Session(clean_db) as session:
        assert session.scalars(select(EventDefinition.origin)).all() == ["operator"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--scope", "user", "age", "text"), "unknown attribute type 'text'"),
        (("--scope", "event", "total", "float"), "needs --event"),
        (("--scope", "user", "--event", "Signed Up", "age", "integer"), "event scope only"),
        (("--scope", "user", "x" * 65, "string"), "1 to 64 characters"),
        (("--scope", "user", "", "string"), "1 to 64 characters"),
        (("--scope", "user", "plan", "fixed"), "needs --choices"),
        (("--scope", "user", "plan", "fixed", "--choices", " , "), "needs --choices"),
        (("--scope", "user", "age", "integer", "--choices", "a,b"), "fixed type only"),
        (("--scope", "user", "age", "integer", "--multiple"), "fixed type only"),
    ],
)
def test_attribute_mistakes(fail: Run, shop: str, args: tuple[str, ...], message: str) -> None:
    assert message in fail("attributes", "define", "--app", shop, *args)


def test_attributes_unknown_app(fail: Run) -> None:
    assert "no app named" in fail(
        "attributes", "define", "--app", "x", "--scope", "user", "a", "json"
    )
    assert "no app named" in fail("attributes", "list", "--app", "x")


def test_attribute_caps_refuse_new_names(run: Run, fail: Run, clean_db: Engine, shop: str) -> None:
    with Session(clean_db) as session:
        session.execute(
            update(App).values(max_user_attributes=1, max_event_names=1, max_event_attributes=1)
        )
        session.commit()
    run("attributes", "define", "--app", shop, "--scope", "user", "a", "string")
    run("attributes", "define", "--app", shop, "--scope", "user", "a", "integer")  # a redefinition
    assert "its cap" in fail(
        "attributes", "define", "--app", shop, "--scope", "user", "b", "string"
    )
    event = ("attributes", "define", "--app", shop, "--scope", "event")
    run(*event, "--event", "One", "x", "string")
    assert "its cap" in fail(*event, "--event", "One", "y", "string")
    assert "its cap" in fail(*event, "--event", "Two", "x", "string")


# --- users and companies -----------------------------------------------------------------------


@pytest.fixture
def profiles(clean_db: Engine) -> None:
    with Session(clean_db) as session:
        seed(session)
        session.commit()


OSC52 = "\x1b]52;c;ZWNobyBwd25lZA==\x07"
"""Writes `echo pwned` to the clipboard of the operator's terminal."""
LINK = "\x1b]8;;https://evil.example/\x1b\\https://bank.example/\x1b]8;;\x1b\\"
"""Shows https://bank.example/ and opens https://evil.example/."""
CLEAR = "\x1b[2J\x1b[H"
BIDI = "invoice\u202egnp.exe"


def test_human_output_shows_control_characters_instead_of_obeying_them(
    run: Run, clean_db: Engine
) -> None:
    with Session(clean_db) as session:
        app = App(name="shop")
        session.add(app)
        session.flush()
        make_user(
            session,
            app,
            "evil",
            email=OSC52,
            city=CLEAR,
            attributes={"site": LINK, BIDI: "x", "list": [OSC52]},
        )
        session.commit()
    shown = run("users", "show", "--app", "shop", "evil").output
    for raw in ("\x1b", "\x07", "\u202e"):
        assert raw not in shown
    assert "\\x1b]52;c;ZWNobyBwd25lZA==\\x07" in shown
    assert "\\x1b]8;;https://evil.example/" in shown
    assert "invoice\\u202egnp.exe" in shown
    # Machine output keeps the values exactly (JSON escapes them).
    profile = as_json(run("users", "show", "--app", "shop", "evil", "--json"))
    assert profile["email"] == OSC52
    assert profile["attributes"]["site"] == LINK


@pytest.mark.usefixtures("profiles")
def test_users_show(run: Run) -> None:
    profile = as_json(run("users", "show", "--app", "shop", "anon-a", "--json"))
    assert set(profile) == PROFILE_KEYS
    assert profile["user_id"] == "u1"
    assert profile["anonymous_ids"] == ["anon-a", "anon-b"]
    assert profile["attributes"] == {"plan": "pro", "seats": 3}
    assert [c["group_id"] for c in profile["companies"]] == ["beta", "acme"]
    assert set(profile["companies"][0]) == {"group_id", "name", "member_since"}

    shown = run("users", "show", "--app", "shop", "u1").stdout
    for value in ("ada@example.com", "Lovelace", "anon-a, anon-b", "2024-03-01T14:00:00.000Z"):
        assert value in shown
    for value in ("plan", "pro", "seats", "acme", "Beta"):
        assert value in shown


@pytest.mark.usefixtures("profiles")
def test_users_events(run: Run) -> None:
    events = as_json(run("users", "events", "--app", "shop", "u1", "--json"))
    assert [e["message_id"] for e in events] == ["e3", "e2", "e1"]
    assert all(set(e) == EVENT_KEYS for e in events)
    limited = as_json(run("users", "events", "--app", "shop", "u1", "--limit", "1", "--json"))
    assert [e["message_id"] for e in limited] == ["e3"]
    table = run("users", "events", "--app", "shop", "u1").stdout
    for value in ("Order Completed", "Signed Up", '{"total":9.5}', "e3"):
        assert value in table
    assert "no events" in run("users", "events", "--app", "shop", "anon-z").stdout


@pytest.mark.usefixtures("profiles")
def test_users_pageviews(run: Run) -> None:
    views = as_json(run("users", "pageviews", "--app", "shop", "anon-b", "--json"))
    assert [v["message_id"] for v in views] == ["p3", "p2", "p1"]
    assert all(set(v) == PAGEVIEW_KEYS for v in views)
    limited = as_json(run("users", "pageviews", "--app", "shop", "u1", "--limit", "2", "--json"))
    assert [v["message_id"] for v in limited] == ["p3", "p2"]
    table = run("users", "pageviews", "--app", "shop", "u1").stdout
    for value in ("screen", "https://shop.example.com/p3", "/p1", "Title p2", "Home"):
        assert value in table
    assert "no page views" in run("users", "pageviews", "--app", "shop", "anon-z").stdout


@pytest.mark.usefixtures("profiles")
def test_companies_show(run: Run) -> None:
    company = as_json(run("companies", "show", "--app", "shop", "acme", "--json"))
    assert set(company) == COMPANY_KEYS
    assert company["users"] == ["u1", "anon-c"]
    assert company["employees"] == 10
    shown = run("companies", "show", "--app", "shop", "acme").stdout
    for value in ("Acme", "Paris", "tier", "gold", "u1, anon-c"):
        assert value in shown


@pytest.mark.usefixtures("profiles")
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("users", "show", "--app", "shop", "nobody"), "no user with userId or anonymousId"),
        (("users", "events", "--app", "shop", "nobody"), "no user with userId or anonymousId"),
        (("users", "pageviews", "--app", "shop", "nobody"), "no user with userId or anonymousId"),
        (("users", "show", "--app", "other", "anon-a"), "no user with userId or anonymousId"),
        (("companies", "show", "--app", "shop", "nope"), "no company with groupId 'nope'"),
        (("users", "show", "--app", "nope", "u1"), "no app named 'nope'"),
        (("users", "events", "--app", "nope", "u1"), "no app named 'nope'"),
        (("users", "pageviews", "--app", "nope", "u1"), "no app named 'nope'"),
        (("companies", "show", "--app", "nope", "acme"), "no app named 'nope'"),
    ],
)
def test_unknown_ids(fail: Run, args: tuple[str, ...], message: str) -> None:
    assert message in fail(*args)
    assert message in fail(*args, "--json")


@pytest.mark.usefixtures("profiles")
def test_values_print_as_they_are(run: Run, clean_db: Engine) -> None:
    # Brackets in a value are data, not rich markup: nothing may be styled away.
    with Session(clean_db) as session:
        session.execute(
            update(User).where(User.user_id == "u1").values(attributes={"note": "[red]x[/red]"})
        )
        session.execute(update(App).where(App.name == "shop").values(name="[b]shop[/b]"))
        session.commit()
    assert "[red]x[/red]" in run("users", "show", "--app", "[b]shop[/b]", "u1").stdout
    assert "[b]shop[/b]" in run("apps", "list").stdout
