"""The read API through real HTTP: a server on a loopback port, a read key, every endpoint, scope,
limit and error; a paging walk while inserts go on; a change feed read while writers commit out of
order."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
import requests
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session
from werkzeug.serving import make_server

import api
import readapi
from shared.models import App, AttributeDefinition, User
from shared.settings import Settings
from shared.tenancy import create_key
from tests.support.db import SUPPRESSION
from tests.support.readmodel import seed
from tests.support.stack import free_ports

PORTS = free_ports(6)
"""The ports of the servers these tests start, one each, free when the module loads."""


class Client(requests.Session):
    """requests with a base URL and a key, as a server using the read API holds them."""

    def __init__(self, base: str, key: str | None = None) -> None:
        super().__init__()
        self.base = base
        if key is not None:
            self.headers["Authorization"] = f"Bearer {key}"

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        kwargs.setdefault("timeout", 30)
        return super().request(method, f"{self.base}{url!s}", *args, **kwargs)


@pytest.fixture
def served(clean_db: Engine, settings: Settings, redis_client: Any) -> Iterator[Any]:
    """Start servers on loopback ports: `serve(app)` answers a base URL."""
    servers = []

    def serve(app: Any, port: int) -> str:
        server = make_server("127.0.0.1", port, app, threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append((server, app))
        return f"http://127.0.0.1:{port}"

    yield serve
    for server, app in servers:
        server.shutdown()
        server.server_close()
        for part in app.extensions.values():
            part.close()


def _keys(engine: Engine) -> tuple[str, str, int]:
    with Session(engine) as session:
        facts = seed(session)
        shop = session.query(App).filter_by(name="shop").one()
        session.add(
            AttributeDefinition(
                app_id=shop.id, scope="user", name="seats", type="integer", origin="operator"
            )
        )
        session.add(
            AttributeDefinition(
                app_id=shop.id, scope="user", name="plan", type="string", origin="operator"
            )
        )
        read = create_key(session, shop, scope="read").api_key
        write = create_key(session, shop).api_key
        session.commit()
        del facts
        return read, write, shop.id


@pytest.fixture
def reader(served: Any, clean_db: Engine, settings: Settings) -> Iterator[tuple[Client, str]]:
    read, write, _ = _keys(clean_db)
    # No rate limit here: the feed test polls as fast as it can (the limit has its own test).
    base = served(readapi.create_app(replace(settings, read_rate_limit_per_second=0)), PORTS[0])
    with Client(base, read) as client:
        yield client, write


def test_keys_have_a_scope_on_both_sides(served: Any, clean_db: Engine, settings: Settings) -> None:
    read, write, _ = _keys(clean_db)
    base = served(readapi.create_app(settings), PORTS[1])
    receiver = served(api.create_app(settings), PORTS[2])
    with requests.Session() as client:
        wrong = client.get(f"{base}/v1/users/u1", headers={"Authorization": f"Bearer {write}"})
        assert (wrong.status_code, wrong.json()["code"]) == (403, "wrong_scope")
        assert client.get(f"{base}/v1/users/u1").json()["code"] == "missing_api_key"
        ok = client.get(f"{base}/v1/users/u1", headers={"Authorization": f"Token {read}"})
        assert ok.status_code == 200
        call = {"type": "track", "userId": "u1", "event": "Signed Up", "messageId": "m-scope"}
        sent = client.post(f"{receiver}/v1/track", json=call, auth=(read, ""))
        assert (sent.status_code, sent.json()["code"]) == (403, "wrong_scope")
        assert client.post(f"{receiver}/v1/track", json=call, auth=(write, "")).status_code == 200
        assert "access-control-allow-origin" not in {h.lower() for h in ok.headers}


def test_profiles_lookup_and_history(reader: tuple[Client, str]) -> None:
    client, _ = reader
    profile = client.get("/v1/users/u1").json()
    assert profile["data"]["email"] == "ada@example.com"
    assert {"kind": "anonymousId", "value": "anon-a"} in profile["data"]["identities"]
    assert "lag_seconds" in profile
    number = profile["data"]["profile_id"]
    by_number = client.get(f"/v1/users/{number}", params={"kind": "profileId"}).json()
    assert by_number["data"]["user_id"] == "u1"
    assert client.get("/v1/users/anon-a", params={"kind": "userId"}).status_code == 404
    assert client.get("/v1/users/nobody").json()["code"] == "not_found"
    found = client.post("/v1/users/lookup", json={"email": "ADA@example.com"}).json()
    assert [p["user_id"] for p in found["data"]] == ["u1"]
    assert client.post("/v1/users/lookup", json={"phone": "+1"}).json()["data"] == []
    assert client.post("/v1/users/lookup", json={}).json()["code"] == "bad_lookup"
    events = client.get("/v1/users/u1/events", params={"limit": 2}).json()
    assert [e["message_id"] for e in events["data"]] == ["e3", "e2"]
    assert events["has_more"] is True
    rest = client.get("/v1/users/u1/events", params={"limit": 2, "cursor": events["next_cursor"]})
    assert [e["message_id"] for e in rest.json()["data"]] == ["e1"]
    named = client.get("/v1/users/u1/events", params={"event": "Signed Up"}).json()
    assert [e["message_id"] for e in named["data"]] == ["e1"]
    ranged = client.get("/v1/users/u1/events", params={"since": "2024-03-01T12:30:00Z"}).json()
    assert [e["message_id"] for e in ranged["data"]] == ["e3", "e2"]
    views = client.get("/v1/users/u1/pageviews").json()["data"]
    assert len(views) == 3
    walked, cursor = [], None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = client.get("/v1/users/u1/timeline", params=params).json()
        walked += [row["message_id"] for row in page["data"]]
        cursor = page["next_cursor"]
        if not page["has_more"]:
            break
    assert sorted(walked) == ["e1", "e2", "e3", "p1", "p2", "p3"]
    assert len(walked) == len(set(walked))


def test_companies_definitions_and_messages(reader: tuple[Client, str]) -> None:
    client, _ = reader
    companies = client.get("/v1/companies").json()
    assert [c["group_id"] for c in companies["data"]] == ["acme", "beta"]
    acme = client.get("/v1/companies/acme", params={"limit": 1}).json()
    assert acme["data"]["name"] == "Acme" and acme["has_more"] is True
    assert client.get("/v1/companies/nope").status_code == 404
    definitions = client.get("/v1/definitions").json()["data"]
    assert {d["name"] for d in definitions["attributes"]} >= {"seats", "plan"}
    assert client.get("/v1/messages/never-sent").json()["data"]["state"] == "unknown"


def test_filters_are_bounded(reader: tuple[Client, str]) -> None:
    client, _ = reader

    def search(flt: Any) -> requests.Response:
        return client.post("/v1/users/search", json={"filter": flt})

    both = {"and": [{"field": "attributes.seats", "op": ">", "value": 2},
                    {"or": [{"field": "email", "op": "contains", "value": "ada"},
                            {"field": "company", "op": "=", "value": "beta"}]}]}  # fmt: skip
    found = search(both).json()
    assert [p["user_id"] for p in found.get("data", [])] == ["u1"], found
    assert search({"field": "attributes.seats", "op": ">", "value": 3}).json()["data"] == []
    assert (
        search({"field": "attributes.nope", "op": "exists"}).json()["code"] == "unknown_attribute"
    )
    assert search({"field": "nope", "op": "=", "value": 1}).json()["code"] == "unknown_field"
    assert search({"field": "attributes.seats", "op": "=", "value": "3"}).status_code == 400
    deep = {"and": [{"or": [{"and": [{"field": "email", "op": "exists"}]}]}]}
    assert search(deep).json()["code"] == "filter_too_deep"
    many = {"and": [{"field": "email", "op": "exists"}] * 16}
    assert search(many).json()["code"] == "too_many_filters"
    assert client.get("/v1/users", params={"limit": 101}).json()["code"] == "bad_limit"
    assert client.get("/v1/users", params={"cursor": "zzz"}).json()["code"] == "bad_cursor"
    assert client.get("/v1/users/u1/events", params={"since": "x"}).json()["code"] == "bad_time"


def test_rate_limit_and_postgres_down(served: Any, clean_db: Engine, settings: Settings) -> None:
    read, _, _ = _keys(clean_db)
    limited = served(readapi.create_app(replace(settings, read_rate_limit_per_second=1)), PORTS[3])
    with Client(limited, read) as client:
        answers = [client.get("/v1/definitions") for _ in range(3)]
        refused = [a for a in answers if a.status_code == 429]
        assert refused and refused[0].headers["Retry-After"] == str(settings.retry_after_seconds)
    down = replace(settings, database_url="postgresql://postgres@127.0.0.1:8509/none")
    base = served(readapi.create_app(down), PORTS[4])
    answer = requests.get(
        f"{base}/v1/users/u1", headers={"Authorization": f"Bearer {read}"}, timeout=30
    )
    assert answer.status_code == 503 and "Retry-After" in answer.headers


def test_paging_walks_every_row_once_while_inserts_go_on(
    reader: tuple[Client, str], clean_db: Engine
) -> None:
    client, _ = reader
    with clean_db.begin() as conn:
        app_id = conn.scalar(text("SELECT id FROM apps WHERE name = 'shop'"))
        conn.execute(
            text(
                "INSERT INTO users (app_id, user_id) SELECT :a, 'p' || g FROM generate_series(1, 60) g"
            ),
            {"a": app_id},
        )
        before = set(conn.scalars(text("SELECT user_id FROM users WHERE app_id = :a AND merged_into IS NULL"), {"a": app_id}))  # fmt: skip
    seen: list[str | None] = []
    cursor, extra = None, 0
    while True:
        page = client.get("/v1/users", params={"limit": 7, **({"cursor": cursor} if cursor else {})}).json()  # fmt: skip
        seen += [row["user_id"] for row in page["data"]]
        with clean_db.begin() as conn:  # a writer adds profiles between pages
            extra += 1
            conn.execute(text("INSERT INTO users (app_id, user_id) VALUES (:a, :u)"), {"a": app_id, "u": f"late{extra}"})  # fmt: skip
        if not page["has_more"]:
            break
        cursor = page["next_cursor"]
    assert len(seen) == len(set(seen))
    assert before <= set(seen)


def test_change_feed_never_skips_a_late_commit(
    reader: tuple[Client, str], clean_db: Engine
) -> None:
    """Writers hold their transactions open for random times, so rows commit out of id order; a
    reader polling all the while sees each committed change exactly once."""
    client, _ = reader
    with clean_db.connect() as conn:
        app_id = conn.scalar(text("SELECT id FROM apps WHERE name = 'shop'"))
    committed: list[int] = []
    lock = threading.Lock()

    def writer(seed_: int) -> None:
        rng = random.Random(seed_)
        for _ in range(15):
            with clean_db.begin() as conn:
                pk = conn.scalar(
                    text("INSERT INTO changes (app_id, entity, entity_pk, kind, fields) "
                         "VALUES (:a, 'profile', :p, 'updated', '[\"email\"]') RETURNING entity_pk"),
                    {"a": app_id, "p": seed_ * 1000 + len(committed)},
                )  # fmt: skip
                conn.execute(text("SELECT pg_sleep(:s)"), {"s": rng.random() / 50})
            with lock:
                committed.append(pk)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(1, 5)]
    for t in threads:
        t.start()
    seen: list[int] = []
    cursor = None

    def poll() -> bool:
        nonlocal cursor
        page = client.get("/v1/changes", params={"limit": 5, **({"cursor": cursor} if cursor else {})}).json()  # fmt: skip
        seen.extend(c["profile_id"] for c in page["data"])
        cursor = page["next_cursor"]
        return bool(page["has_more"])

    while any(t.is_alive() for t in threads):
        poll()
    for t in threads:
        t.join()
    # A page shows a change once every older transaction of the server has ended, this test's
    # or not (another database's long transaction delays the feed, never reorders it): read on
    # until everything committed has been seen, within a bound.
    deadline = time.monotonic() + 120
    while (poll() or len(seen) < len(committed)) and time.monotonic() < deadline:
        time.sleep(0.05)  # a poll interval, not an assertion: the condition is checked
    assert len(seen) == len(set(seen))
    assert sorted(seen) == sorted(committed)


def test_the_feed_records_worker_changes_and_erasure(clean_db: Engine) -> None:
    from shared import erasure

    with Session(clean_db) as session:
        seed(session)
        shop = session.query(App).filter_by(name="shop").one()
        ada = session.query(User).filter_by(app_id=shop.id, user_id="u1").one()
        shop_id, ada_id = shop.id, ada.id
        conn = session.connection()
        erasure.erase(conn, erasure.find(conn, shop_id, set(), [ada_id]), SUPPRESSION)
        session.commit()
        rows = session.execute(text("SELECT entity, entity_pk, kind, fields FROM changes")).all()
    assert [tuple(r) for r in rows] == [("profile", ada_id, "erased", None)]


def test_erased_people_and_revoked_keys(served: Any, clean_db: Engine, settings: Settings) -> None:
    from shared import erasure
    from shared.tenancy import revoke_key

    read, _, shop_id = _keys(clean_db)
    app = readapi.create_app(settings)
    base = served(app, PORTS[5])
    with Client(base, read) as client:
        assert client.get("/v1/users/u1").status_code == 200
        with Session(clean_db) as session:
            ada = session.query(User).filter_by(app_id=shop_id, user_id="u1").one()
            conn = session.connection()
            erasure.erase(conn, erasure.find(conn, shop_id, set(), [ada.id]), SUPPRESSION)
            session.commit()
        erased, never = client.get("/v1/users/u1"), client.get("/v1/users/never-seen")
        assert erased.status_code == never.status_code == 404
        assert erased.json() == never.json()
        assert (
            client.post("/v1/users/lookup", json={"email": "ada@example.com"}).json()["data"] == []
        )
        with Session(clean_db) as session:
            key_id = session.scalars(text("SELECT id FROM api_keys WHERE scope = 'read'")).one()
            revoke_key(session, key_id)
            session.commit()
        # The cache's time bound is AuthCache's own (tests/api/test_auth.py); past it, 403.
        app.extensions["userdest-read"].auth.clear()
        assert client.get("/v1/definitions").json()["code"] == "invalid_api_key"
