"""Running the `userdest` CLI in tests, and reading what it enqueued."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import redis
from click.testing import CliRunner, Result

from ops.cli import main
from shared.queues import REPLAY
from shared.settings import Settings
from tests.support.receiver import queued

Invoke = Callable[..., Result]


def envelopes(client: redis.Redis, queue: str = REPLAY) -> list[dict[str, Any]]:
    return queued(client, queue)


def message_ids(client: redis.Redis, queue: str = REPLAY) -> list[str]:
    return [mid for env in envelopes(client, queue) for mid in env["message_ids"]]


def invoker(settings: Settings) -> Invoke:
    """Runs `userdest ARGS...` against the test database and Redis database; returns the Result.

    `env` overrides variables (a dead REDIS_URL, a smaller limit)."""
    base = {"DATABASE_URL": settings.database_url, "REDIS_URL": settings.redis_url}

    def run(*args: str, stdin: bytes | None = None, env: dict[str, str] | None = None) -> Result:
        return CliRunner(env={**base, **(env or {})}).invoke(main, list(args), input=stdin)

    return run


def ok(result: Result) -> Result:
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def one_line_error(result: Result) -> str:
    """The one `Error: ...` line a failing command prints on stderr, with a non-zero exit."""
    assert result.exit_code != 0, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    return lines[0]


def replay_ran(result: Result) -> Result:
    """A `userdest replay` that ran: exit 0, or 3 exactly when it refused some lines."""
    rejected = None
    try:
        rejected = orjson.loads(result.stdout)["rejected"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        for line in result.stdout.splitlines():
            if line.startswith("rejected "):
                rejected = int(line.split()[-1])
    assert rejected is not None, (result.output, result.exception)
    assert result.exit_code == (3 if rejected else 0), (result.output, result.exception)
    return result


def replay_answer(result: Result) -> dict[str, Any]:
    """`replay --json`'s answer without its run id (checked here: a run id, or null for a dry run)."""
    answer = orjson.loads(result.stdout)
    run = answer.pop("run")
    assert run is None or (run.startswith("run_") and len(run) == 16), run
    return answer  # type: ignore[no-any-return]


def writes_private_files(export: Callable[[Path], Result], tmp_path: Path) -> None:
    """`export` (a command run with `--out PATH`) writes PATH 0600 under the usual umask, new or
    existing, and refuses a symbolic link planted at PATH instead of writing through it."""
    old = os.umask(0o022)
    try:
        out = tmp_path / "export.json"
        ok(export(out))
        assert stat.S_IMODE(out.stat().st_mode) == 0o600
        existing = tmp_path / "existing.json"
        existing.write_bytes(b"old")
        existing.chmod(0o644)
        ok(export(existing))
        assert stat.S_IMODE(existing.stat().st_mode) == 0o600
    finally:
        os.umask(old)
    target = tmp_path / "someone-elses-file"
    target.write_bytes(b"keep me")
    link = tmp_path / "planted.json"
    link.symlink_to(target)
    line = one_line_error(export(link))
    assert line == f"Error: {link} is a symbolic link: not writing through it"
    assert target.read_bytes() == b"keep me"
