"""What every `userdest` command does alike: --version, one-line errors from the root down, plain
tables when stdout is not a terminal, and exit statuses a script can trust."""

from __future__ import annotations

import re
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import click
import orjson
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from ops.cli import main
from ops.cli.common import EXIT_ERROR, EXIT_OK, EXIT_PARTIAL, EXIT_USAGE
from shared.settings import Settings
from shared.tenancy import get_app
from tests.support.cli import Invoke, invoker, ok, one_line_error
from tests.support.readmodel import make_user

BOX = set("─│┌┐└┘├┤┬┴┼━┃┏┓┗┛╭╮╯╰═║")


@pytest.fixture
def invoke(clean_db: Engine, settings: Settings) -> Invoke:
    return invoker(settings)


def test_version() -> None:
    result = ok(invoker(Settings())("--version"))
    assert result.stdout == f"userdest {metadata.version('userdest')}\n"


@pytest.mark.parametrize(
    "args", [("--bogus",), ("nosuch",), ("queue", "--bogus"), ("apps", "create")]
)
def test_a_usage_mistake_is_one_line_at_any_level(args: tuple[str, ...]) -> None:
    result = invoker(Settings())(*args)
    assert result.exit_code == 2
    assert "(see `" in one_line_error(result)


def test_tables_are_plain_and_unfolded_when_piped(invoke: Invoke) -> None:
    long_name = "shop-" + "x" * 150
    ok(invoke("apps", "create", long_name))
    ok(invoke("keys", "create", "--app", long_name))
    out = ok(invoke("keys", "list", "--app", long_name)).stdout
    assert not BOX & set(out), out
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("key_id"))
    assert lines[header].split()[:3] == ["key_id", "label", "prefix"]
    [row] = lines[header + 1 :]
    assert row.startswith("key_")
    apps = ok(invoke("apps", "list")).stdout
    assert not BOX & set(apps)
    assert any(line.startswith(long_name + " ") for line in apps.splitlines()), apps


def test_a_key_value_answer_is_one_pair_a_line(invoke: Invoke) -> None:
    out = ok(invoke("apps", "create", "panel")).stdout.splitlines()
    assert not BOX & set("".join(out))
    assert out[0] == "app created"
    assert out[1].split() == ["name", "panel"]


def test_replay_exits_3_when_it_refused_lines_and_0_when_it_did_not(
    invoke: Invoke, tmp_path: Path
) -> None:
    ok(invoke("apps", "create", "shop"))
    good = tmp_path / "good.ndjson"
    good.write_text('{"type": "track", "userId": "u", "event": "E", "messageId": "g1"}\n')
    mixed = tmp_path / "mixed.ndjson"
    mixed.write_text(good.read_text() + '{"type": "track", "event": "E"}\n')
    assert invoke("replay", str(good), "--app", "shop", "--dry-run").exit_code == 0
    result = invoke("replay", str(mixed), "--app", "shop", "--dry-run", "--json")
    assert result.exit_code == 3
    assert '"rejected": 1' in result.stdout
    assert "line 2: missing_user_id" in result.stderr


# --- walking every command -------------------------------------------------------------------

CLI_DOC = Path(__file__).resolve().parents[2] / "docs" / "cli.md"
ALWAYS_JSON = {("users", "export"), ("deadletters", "export")}
"""Commands whose output is a document (JSON, NDJSON) whatever is asked: no --json to take."""
VALUES = {"app_name": "shop", "name": "shop", "id": "u1", "revision": "0001"}
"""A value for each required parameter a command may have, naming what `_world` made."""


def _commands(
    group: click.Group = main, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from _commands(command, (*path, name))
        else:
            yield (*path, name), command


def _typed(path: tuple[str, ...]) -> str:
    """How docs/cli.md names a command: the implied `replay file` is typed `replay FILE`."""
    return "userdest replay FILE" if path == ("replay", "file") else "userdest " + " ".join(path)


def _required_args(command: click.Command) -> list[str]:
    args = []
    for param in command.params:
        if not param.required:
            continue
        assert param.name in VALUES, f"give the walk a value for {param.name!r}"
        value = VALUES[param.name]
        args += [param.opts[0], value] if isinstance(param, click.Option) else [value]
    return args


CONFIRMED = [path for path, command in _commands() if any(p.name == "yes" for p in command.params)]


def test_the_walk_finds_every_destructive_command() -> None:
    assert {" ".join(path) for path in CONFIRMED} >= {
        "apps delete",
        "db downgrade",
        "deadletters purge",
        "users delete",
    }


def _world(engine: Engine) -> dict[str, int]:
    """An app with a user and a dead letter, and the row counts that must not change."""
    with Session(engine) as session:
        session.execute(text("INSERT INTO apps (name) VALUES ('shop')"))
        app = get_app(session, "shop")
        make_user(session, app, "u1")
        session.execute(
            text(
                "INSERT INTO dead_letters (app_id, reason, error, call, dedupe_key) "
                "VALUES (:a, 'r', 'e', '{}', 'k')"
            ),
            {"a": app.id},
        )
        session.commit()
    return _counts(engine)


def _counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            table: int(conn.scalar(text(f"SELECT count(*) FROM {table}")))  # noqa: S608 (fixed names)
            for table in ("apps", "users", "dead_letters", "alembic_version")
        }


@pytest.mark.parametrize("path", CONFIRMED, ids=" ".join)
def test_every_destructive_command_without_yes_is_a_usage_mistake_and_does_nothing(
    invoke: Invoke, clean_db: Engine, path: tuple[str, ...]
) -> None:
    before = _world(clean_db)
    command = dict(_commands())[path]
    result = invoke(*path, *_required_args(command))
    assert result.exit_code == EXIT_USAGE, result.output
    assert "--yes" in one_line_error(result)
    assert _counts(clean_db) == before


@pytest.mark.parametrize(
    "args",
    [("apps", "delete", "gone", "--yes"), ("domains", "remove", "--app", "shop", "gone.example")],
    ids=" ".join,
)
def test_deleting_what_is_already_gone_is_done(invoke: Invoke, args: tuple[str, ...]) -> None:
    ok(invoke("apps", "create", "shop"))
    result = invoke(*args, "--json")
    assert result.exit_code == EXIT_OK, result.output
    assert orjson.loads(result.stdout)["already_gone"] is True
    assert "already gone" in result.stderr


def test_every_command_answers_json_and_is_documented() -> None:
    documented = CLI_DOC.read_text()
    for path, command in _commands():
        if path not in ALWAYS_JSON:
            assert any(p.name == "as_json" for p in command.params), f"{path} takes no --json"
        assert f"### `{_typed(path)}" in documented, f"docs/cli.md has no section on {path}"


def test_the_exit_statuses_are_the_documented_table() -> None:
    documented = CLI_DOC.read_text()
    rows = dict(re.findall(r"^ *\| (\d) \| (.+) \|$", documented, re.MULTILINE))
    assert set(rows) == {str(s) for s in (EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_PARTIAL)}
    assert "--yes" in rows[str(EXIT_USAGE)] and "already gone" in rows[str(EXIT_OK)]
