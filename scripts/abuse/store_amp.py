"""Items 5 and 6, applied directly through workers.apply.messages.apply_messages on the repro database.
5: rows in ignored_values after 20 identifies each with 500 new names past a cap of 10.
6: an alias merging a profile with 25,000 page views: the applying transaction's time and rows moved."""

import time
import uuid

from sqlalchemy import create_engine, text

from bench.stack import bench_suppression
from shared.envelope import Envelope
from shared.settings import Settings
from workers.apply.messages import Outcome, apply_messages, prepare


def apply_envelope(conn, env: Envelope) -> Outcome:
    return apply_messages(conn, [prepare(env)], suppression=bench_suppression())


s = Settings.from_env()
eng = create_engine(s.database_url.replace("postgresql://", "postgresql+psycopg://"))


def env(app, calls):
    return Envelope(
        app_id=app,
        received_at="2026-11-28T12:00:00.000Z",
        request_id=str(uuid.uuid4()),
        calls=calls,
        message_ids=[str(uuid.uuid4()) for _ in calls],
    )


with eng.begin() as c:
    app = c.scalar(
        text("INSERT INTO apps (name, max_user_attributes) VALUES (:n, 10) RETURNING id"),
        {"n": "amp-" + uuid.uuid4().hex[:8]},
    )
for i in range(20):
    with eng.begin() as c:
        apply_envelope(
            c,
            env(
                app,
                [
                    {
                        "type": "identify",
                        "userId": "u",
                        "traits": {f"n{i}_{j}": 1 for j in range(500)},
                    }
                ],
            ),
        )
with eng.connect() as c:
    print(
        "5: ignored_values rows for 10,000 names past the cap:",
        c.scalar(text("SELECT count(*) FROM ignored_values WHERE app_id=:a"), {"a": app}),
    )
# 6: a profile with 25,000 page views
with eng.begin() as c:
    apply_envelope(c, env(app, [{"type": "page", "anonymousId": "anon-1", "name": "p"}]))
    pk = c.scalar(
        text("SELECT user_pk FROM identities WHERE app_id=:a AND value='anon-1'"), {"a": app}
    )
    c.execute(
        text(
            "INSERT INTO page_views (app_id, user_pk, kind, occurred_at, message_id) SELECT :a, :u, 'page', now(), g::text FROM generate_series(1, 25000) g"
        ),
        {"a": app, "u": pk},
    )
    apply_envelope(c, env(app, [{"type": "identify", "userId": "known", "traits": {}}]))
for attempt in range(2):
    if attempt == 1:
        with eng.begin() as c:
            apply_envelope(c, env(app, [{"type": "identify", "userId": "known2", "traits": {}}]))
    t = time.perf_counter()
    with eng.begin() as c:
        apply_envelope(
            c,
            env(
                app,
                [
                    {
                        "type": "alias",
                        "previousId": "anon-1" if attempt == 0 else "known",
                        "userId": "known" if attempt == 0 else "known2",
                    }
                ],
            ),
        )
    dt = time.perf_counter() - t
    with eng.connect() as c:
        rows = c.execute(
            text(
                "SELECT u.user_id, count(*) FROM page_views p JOIN users u ON u.id = p.user_pk WHERE p.app_id=:a GROUP BY 1"
            ),
            {"a": app},
        ).all()
    print(
        f"6: alias #{attempt + 1}: applying transaction {dt * 1000:.0f} ms; page views by owner {rows}"
    )
