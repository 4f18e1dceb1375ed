"""Replay runs: `userdest replay` answers a run id, and `userdest replay status RUN` follows the
workers through it (applied, already applied, dead-lettered, waiting)."""

from __future__ import annotations

from pathlib import Path

import orjson
import redis
from sqlalchemy import Engine

from shared.envelope import Envelope
from shared.settings import Settings
from tests.support.apply import apply_envelope
from tests.support.cli import Invoke, envelopes, invoker, ok, one_line_error, replay_ran
from tests.support.envelopes import envelope
from workers.apply.deadletters import LetterToKeep
from workers.apply.deadletters import keep as keep_letters


def call(mid: str) -> dict[str, str]:
    return {"type": "track", "userId": f"u-{mid}", "event": "Paid", "messageId": mid}


def status(invoke: Invoke, run: str) -> dict[str, object]:
    return orjson.loads(ok(invoke("replay", "status", run, "--json")).stdout)


def test_status_follows_the_workers_through_a_run(
    invoke: Invoke, shop: int, clean_db: Engine, redis_client: redis.Redis, tmp_path: Path
) -> None:
    with clean_db.begin() as conn:  # applied before the replay: the workers will skip it
        apply_envelope(conn, envelope(shop, [call("g1")]))
    path = tmp_path / "calls.ndjson"
    path.write_bytes(b"".join(orjson.dumps(call(m)) + b"\n" for m in ("g1", "g2", "g3")))
    answer = orjson.loads(replay_ran(invoke("replay", str(path), "--app", "shop", "--json")).stdout)
    run = answer["run"]

    before = status(invoke, run)
    assert before["run"] == run and before["app"] == "shop" and before["queue"] == "replay"
    assert (before["lines"], before["accepted"], before["rejected"]) == (3, 3, 0)
    assert before["finished_at"] is not None
    assert {k: before[k] for k in ("calls", "applied", "duplicates", "dead_letters", "waiting")} == {
        "calls": 3, "applied": 0, "duplicates": 1, "dead_letters": 0, "waiting": 2,
    }  # fmt: skip

    # The workers: g3 fails and is kept as a dead letter, the rest applies.
    for queued in envelopes(redis_client):
        env = Envelope.from_dict(queued)
        keep = [i for i, m in enumerate(env.message_ids) if m != "g3"]
        with clean_db.begin() as conn:
            apply_envelope(
                conn,
                envelope(shop, [env.calls[i] for i in keep], received_at=env.received_at),
            )
            if "g3" in env.message_ids:
                keep_letters(
                    conn, shop, [LetterToKeep("k-g3", "worker_error", "boom", {}, "g3", {})]
                )
    after = status(invoke, run)
    assert {k: after[k] for k in ("calls", "applied", "duplicates", "dead_letters", "waiting")} == {
        "calls": 3, "applied": 1, "duplicates": 1, "dead_letters": 1, "waiting": 0,
    }  # fmt: skip
    assert "applied" in ok(invoke("replay", "status", run)).stdout


def test_a_dry_run_has_no_run(invoke: Invoke, shop: int, tmp_path: Path) -> None:
    path = tmp_path / "calls.ndjson"
    path.write_bytes(orjson.dumps(call("d1")) + b"\n")
    answer = orjson.loads(
        ok(invoke("replay", str(path), "--app", "shop", "--dry-run", "--json")).stdout
    )
    assert answer["run"] is None


def test_an_unknown_run_is_one_line(invoke: Invoke, shop: int) -> None:
    assert "run_nope" in one_line_error(invoke("replay", "status", "run_nope"))


def test_replay_help_is_still_the_file_command_s() -> None:
    result = ok(invoker(Settings())("replay", "--help"))
    assert "FILE|-" in result.stdout and "--app" in result.stdout
    assert "RUN" in ok(invoker(Settings())("replay", "status", "--help")).stdout


def test_list_shows_the_runs_newest_first_a_page_at_a_time(
    invoke: Invoke, shop: int, tmp_path: Path
) -> None:
    runs = []
    for name in ("first", "second", "third"):
        path = tmp_path / f"{name}.ndjson"
        path.write_bytes(orjson.dumps(call(name)) + b"\n")
        answer = replay_ran(invoke("replay", str(path), "--app", "shop", "--json")).stdout
        runs.append(orjson.loads(answer)["run"])

    listed = orjson.loads(ok(invoke("replay", "list", "--app", "shop", "--json")).stdout)
    assert [r["run"] for r in listed] == runs[::-1]
    assert listed[0]["source"].endswith("third.ndjson")
    assert (listed[0]["app"], listed[0]["lines"], listed[0]["accepted"]) == ("shop", 1, 1)
    page = ok(invoke("replay", "list", "--limit", "2", "--after", runs[2], "--json")).stdout
    assert [r["run"] for r in orjson.loads(page)] == [runs[1], runs[0]]
    assert runs[0] in ok(invoke("replay", "list")).stdout
    assert "no replay run" in one_line_error(invoke("replay", "list", "--after", "run_nope"))


def test_replay_help_shows_how_it_is_typed(invoke: Invoke) -> None:
    text = ok(invoke("replay", "--help")).stdout
    usage = text.splitlines()[0]
    assert usage.endswith(" replay [OPTIONS] FILE|-"), usage
    words = " ".join(text.split())
    assert "replay list" in words and "replay status RUN" in words
    hint = one_line_error(invoke("replay", "no-such-file.ndjson", "--app", "shop"))
    assert hint.endswith(" replay --help`)"), hint
