"""Helpers for tests of the receiver: Basic auth, bodies, reading the queue, a committed tenant."""

from __future__ import annotations

import base64
import copy
import gzip
import json
from dataclasses import dataclass
from typing import Any

import redis
from sqlalchemy import Engine, update
from sqlalchemy.orm import Session

from shared.envelope import Envelope
from shared.models import App
from shared.queues import APPLY_TASK, INGEST
from shared.tenancy import add_domain, create_key, new_app, revoke_key


def basic(key: str) -> dict[str, str]:
    """The Authorization header Segment's libraries send."""
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def gz(data: bytes) -> bytes:
    """gzip of `data`, the same bytes every time (no timestamp), so it can name a test case."""
    return gzip.compress(data, mtime=0)


def jdump(value: Any) -> bytes:
    return json.dumps(value).encode()


def decode_message(raw: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    """One kombu message from Redis: (its Celery headers, the envelope it carries)."""
    message = json.loads(raw)
    assert message["content-type"] == "application/json"
    assert message["properties"]["body_encoding"] == "base64"
    args, kwargs, _embed = json.loads(base64.b64decode(message["body"]))
    assert kwargs == {}
    assert len(args) == 1
    return message["headers"], args[0]


def queued(client: redis.Redis, queue: str = INGEST) -> list[dict[str, Any]]:
    """The envelopes waiting on `queue`, oldest first, each checked by Envelope.from_dict."""
    out = []
    for raw in reversed(client.lrange(queue, 0, -1)):
        headers, envelope = decode_message(raw)
        assert headers["task"] == APPLY_TASK
        Envelope.from_dict(copy.deepcopy(envelope))
        out.append(envelope)
    return out


@dataclass
class Tenant:
    """An app with one key, committed so that the receiver's own sessions see it."""

    engine: Engine
    app_id: int
    app_name: str
    key_id: str
    api_key: str

    def add_domain(self, host: str) -> None:
        with Session(self.engine) as session:
            add_domain(session, session.get_one(App, self.app_id), host)
            session.commit()

    def set_secret(self, secret: str | None) -> None:
        with Session(self.engine) as session:
            session.execute(update(App).where(App.id == self.app_id).values(webhook_secret=secret))
            session.commit()

    def revoke(self, key_id: str | None = None) -> None:
        with Session(self.engine) as session:
            revoke_key(session, key_id or self.key_id)
            session.commit()

    def new_key(self) -> tuple[str, str]:
        with Session(self.engine) as session:
            new = create_key(session, session.get_one(App, self.app_id))
            session.commit()
        return new.key_id, new.api_key


def make_tenant(engine: Engine, name: str = "shop") -> Tenant:
    with Session(engine) as session:
        app = new_app(session, name)
        key = create_key(session, app)
        session.commit()
        return Tenant(engine, app.id, name, key.key_id, key.api_key)
