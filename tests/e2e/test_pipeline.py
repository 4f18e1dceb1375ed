"""Segment's Python library -> receiver (gunicorn) -> Redis -> worker process -> Postgres -> CLI."""

from __future__ import annotations

import json
import subprocess

import segment.analytics as analytics
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from shared.settings import Settings
from shared.tenancy import create_key, new_app
from tests.support.stack import BIN, ROOT, stack_env, wait_for


def test_segment_library_to_profile(stack: str, clean_db: Engine, settings: Settings) -> None:
    with Session(clean_db) as session:
        app = new_app(session, "e2e")
        key = create_key(session, app)
        session.commit()

    client = analytics.Client(write_key=key.api_key, host=stack, sync_mode=True, max_retries=1)
    failures: list[object] = []
    client.on_error = lambda error, items: failures.append(error)
    client.identify(
        "e2e-user",
        {"email": "e2e@example.com", "firstName": "Ada", "plan": "pro"},
        anonymous_id="anon-e2e",
    )
    client.page(
        "e2e-user",
        category="Docs",
        name="Start",
        properties={"url": "https://docs.example.com/start"},
    )
    client.track("e2e-user", "Signed Up", {"method": "email"})
    client.group("e2e-user", "company-1", {"name": "Acme", "employees": "12"})
    client.flush()
    assert failures == []

    def applied() -> bool:
        with clean_db.connect() as conn:
            return conn.scalar(text("SELECT count(*) FROM processed_messages")) == 4

    wait_for(applied, timeout=60, what="the worker to apply four calls")
    result = subprocess.run(
        [str(BIN / "userdest"), "users", "show", "--app", "e2e", "anon-e2e", "--json"],
        cwd=ROOT, env=stack_env(settings), capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    profile = json.loads(result.stdout)
    assert profile["user_id"] == "e2e-user"
    assert profile["anonymous_ids"] == ["anon-e2e"]
    assert (profile["email"], profile["first_name"]) == ("e2e@example.com", "Ada")
    assert profile["attributes"] == {"plan": "pro"}
    assert profile["page_views"] == 1
    assert [c["group_id"] for c in profile["companies"]] == ["company-1"]

    events = subprocess.run(
        [str(BIN / "userdest"), "users", "events", "--app", "e2e", "e2e-user", "--json"],
        cwd=ROOT, env=stack_env(settings), capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert [e["event"] for e in json.loads(events.stdout)] == ["Signed Up"]
    with clean_db.connect() as conn:
        assert conn.scalar(text("SELECT last_used_at FROM api_keys")) is not None
