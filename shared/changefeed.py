"""The change feed: profile and company changes in the order a reader can rely on.

Workers insert a `changes` row in the transaction that makes the change (workers/apply/store.py,
shared/erasure.py); the row carries that transaction's id (`xid`). A page holds only rows whose
transaction had finished when the page's snapshot was taken (`xid` below the snapshot's xmin), in
(xid, id) order, and its cursor is the last (xid, id) given. Every transaction still open then has
an xid at or above that xmin, and every later one a larger xid still, so every row that can ever
appear after the cursor sorts after it: a reader never skips a change, whatever order transactions
commit in, and never sees one twice. docs/readapi.md says it at length.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, text
from sqlalchemy.orm import Session

from shared.readmodel import decode_cursor, encode_cursor
from shared.timeparse import iso

_PAGE = text(
    "SELECT c.id, c.xid, c.entity, c.entity_pk, c.kind, c.fields, c.into_pk, c.at, "
    "u.user_id, co.group_id FROM changes c "
    "LEFT JOIN users u ON c.entity = 'profile' AND u.id = c.entity_pk "
    "LEFT JOIN companies co ON c.entity = 'company' AND co.id = c.entity_pk "
    # One statement, one snapshot: the xmin below is the one the rows are read with.
    "WHERE c.app_id = :app AND c.xid < pg_snapshot_xmin(pg_current_snapshot())::text::bigint "
    "AND (c.xid, c.id) > (:xid, :id) ORDER BY c.xid, c.id LIMIT :n"
)


def page(session: Session, app_id: int, limit: int, after: str | None) -> dict[str, Any]:
    """Up to `limit` changes after the cursor `after` (from the oldest kept without one). The
    answer's `next_cursor` continues from the last change given (or stays where it was when nothing
    new is there yet): a reader keeps it and asks again later."""
    xid, row_id = decode_cursor(after, int, int) if after is not None else (0, 0)
    rows = session.execute(_PAGE, {"app": app_id, "xid": xid, "id": row_id, "n": limit + 1}).all()
    shown = rows[:limit]
    changes = [
        {
            "entity": r.entity,
            "kind": r.kind,
            "profile_id" if r.entity == "profile" else "company_id": r.entity_pk,
            **({"user_id": r.user_id} if r.entity == "profile" and r.kind != "erased" else {}),
            **({"group_id": r.group_id} if r.entity == "company" else {}),
            **({"fields": r.fields} if r.fields is not None else {}),
            **({"into_profile_id": r.into_pk} if r.into_pk is not None else {}),
            "at": iso(r.at),
        }
        for r in shown
    ]
    last = (shown[-1].xid, shown[-1].id) if shown else (xid, row_id)
    return {
        "data": changes,
        "next_cursor": encode_cursor(*last),
        "has_more": len(rows) > limit,
    }


def prune(conn: Connection, now: datetime, days: int) -> int:
    """Delete changes older than `days` before `now` (0 keeps everything); the rows deleted."""
    if days <= 0:
        return 0
    with conn.begin():
        deleted = conn.execute(
            text("DELETE FROM changes WHERE at < :cutoff"),
            {"cutoff": now - timedelta(days=days)},
        ).rowcount
    return int(deleted or 0)
