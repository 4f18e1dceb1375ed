"""The dedupe record of applied messageIds: its key, and forgetting expired ones.

A record is 16 bytes of key and a time: the key is the first half of SHA-256 over the app id and the
messageId, so the table holds no sender-chosen text (the messageId itself stays in the event or page
view it produced, where one is shown) and an index entry is fixed-size. Within an app, two messageIds
would have to collide in 128 bits to be taken for each other.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime

from sqlalchemy import Connection, text

PRUNE_BATCH = 10_000
"""Records one prune statement deletes: short transactions, however far behind pruning is."""
KEY_SQL = (
    "CAST(encode(substring(sha256(convert_to(CAST({app} AS text) || ':' || {mid}, 'UTF8')) "
    "FROM 1 FOR 16), 'hex') AS uuid)"
)
"""The same key computed in SQL (the migration of an existing table uses it); a test checks both agree."""


def key(app_id: int, message_id: str) -> uuid.UUID:
    """The dedupe key of `message_id` in app `app_id`."""
    return uuid.UUID(key_hex(app_id, message_id))


def key_hex(app_id: int, message_id: str) -> str:
    """The same key as 32 hex digits, which Postgres takes as a uuid: what the workers send for
    every call, without building a UUID object each time."""
    return hashlib.sha256(f"{app_id}:{message_id}".encode()).hexdigest()[:32]


def prune_batch(
    conn: Connection, days: int, limit: int = PRUNE_BATCH, now: datetime | None = None
) -> int:
    """Forget up to `limit` records older than `days` (before `now`, the database's clock unless
    given); returns how many went.

    SKIP LOCKED lets several pruners (the maintenance job, a worker) run at once without queueing.
    """
    result = conn.execute(
        text(
            "DELETE FROM processed_messages WHERE ctid = ANY(ARRAY(SELECT ctid "
            "FROM processed_messages WHERE processed_at < "
            "coalesce(CAST(:now AS timestamptz), now()) - make_interval(days => :days) "
            "ORDER BY processed_at LIMIT :limit FOR UPDATE SKIP LOCKED))"
        ),
        {"days": days, "limit": limit, "now": now},
    )
    return int(result.rowcount)


def prune(
    conn: Connection, days: int, limit: int = PRUNE_BATCH, now: datetime | None = None
) -> int:
    """Forget every record older than `days`, `limit` at a time, each batch committed on its own
    (`conn` has no transaction open); returns how many went. Finishes however far behind it was."""
    total = 0
    while True:
        with conn.begin():
            gone = prune_batch(conn, days, limit, now)
        total += gone
        if gone < limit:
            break
    with conn.begin():
        # What `messages show` says of a skipped call is kept as long as its dedupe record.
        conn.execute(
            text(
                "DELETE FROM skipped_messages WHERE skipped_at < "
                "coalesce(CAST(:now AS timestamptz), now()) - make_interval(days => :days)"
            ),
            {"days": days, "now": now},
        )
    return total
