"""What every `userdest` command does alike: --version, one-line errors from the root down, plain
tables when stdout is not a terminal, and exit statuses a script can trust."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import pytest
from sqlalchemy import Engine

from shared.settings import Settings
from tests.support.cli import Invoke, invoker, ok, one_line_error

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
