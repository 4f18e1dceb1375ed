"""Erasure of a person (GDPR/CCPA): every row held about them goes, and their ids stay suppressed.

Used alike by `userdest users delete` and by the workers applying a Segment deletion request (a
`delete` call, as Segment sends one to a destination when a regulation deletes a user). A suppressed
id is kept only as a 16-byte hash of (app, kind, value): enough to recognise a later call naming
the person and skip it, not enough to read the id back. The dedupe records of the person's calls
stay too (hashes without a link to anyone): a retried call must still count as applied, not come
back as new data.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import Connection, text

from shared.models import FAMILY_PROFILES

IdKey = tuple[str, str]
"""(kind, value): ("user", userId) or ("anonymous", anonymousId)."""


LETTER_NAMES_PERSON = (
    "app_id = :app AND jsonb_typeof(call) = 'object' AND (call ->> 'userId' = ANY(:v) "
    "OR call ->> 'anonymousId' = ANY(:v) OR call ->> 'previousId' = ANY(:v))"
)
"""Which dead letters hold a call naming one of the ids `:v` of app `:app` (erased and exported)."""


def suppression_key(app_id: int, kind: str, value: str) -> uuid.UUID:
    """The hash under which an erased id of an app is remembered."""
    digest = hashlib.sha256(f"{app_id}:{kind}:{value}".encode()).digest()
    return uuid.UUID(bytes=digest[:16])


@dataclass
class Erased:
    """What an erasure removed, by table, and every id the person answered to."""

    rows: dict[str, int] = field(default_factory=dict)
    ids: set[IdKey] = field(default_factory=set)


def erase(conn: Connection, app_id: int, pks: Iterable[int], named: Iterable[IdKey] = ()) -> Erased:
    """Delete the profiles `pks` of the app with all their rows, and suppress every id they had
    plus the ids `named` (a request may name an id no profile holds yet). The caller holds the
    advisory locks of those ids and commits."""
    out = Erased(ids=set(named))
    pks = sorted(set(pks))
    if pks:
        # The profiles merged into these whose history has not moved yet go with them.
        pks = sorted(set(conn.scalars(FAMILY_PROFILES, {"pks": pks})))
    params = {"app": app_id, "pks": pks}
    if pks:
        found = conn.execute(
            text(
                "DELETE FROM identities WHERE app_id = :app AND user_pk = ANY(:pks) "
                "RETURNING kind, value"
            ),
            params,
        ).all()
        out.rows["identities"] = len(found)
        out.ids.update((kind, value) for kind, value in found)
        for table in ("page_views", "events"):
            out.rows[table] = conn.execute(
                text(f"DELETE FROM {table} WHERE user_pk = ANY(:pks)"),  # noqa: S608 (fixed names)
                params,
            ).rowcount
        out.rows["memberships"] = conn.execute(
            text("DELETE FROM memberships WHERE user_pk = ANY(:pks)"), params
        ).rowcount
        out.rows["users"] = conn.execute(
            text("DELETE FROM users WHERE app_id = :app AND id = ANY(:pks)"), params
        ).rowcount
        # The change feed hears of it by the profile's number only: nothing of the person.
        conn.execute(
            text(
                "INSERT INTO changes (app_id, entity, entity_pk, kind) "
                "SELECT :app, 'profile', p, 'erased' FROM unnest(CAST(:pks AS bigint[])) AS p"
            ),
            params,
        )
    values = sorted({value for _, value in out.ids})
    out.rows["dead_letters"] = (
        conn.execute(
            text(
                "DELETE FROM dead_letters WHERE app_id = :app AND jsonb_typeof(call) = 'object' AND ("
                "call ->> 'userId' = ANY(:v) OR call ->> 'anonymousId' = ANY(:v) "
                "OR call ->> 'previousId' = ANY(:v))"
            ),
            {"app": app_id, "v": values},
        ).rowcount
        if values
        else 0
    )
    suppress(conn, app_id, out.ids)
    return out


def suppress(conn: Connection, app_id: int, ids: Iterable[IdKey]) -> None:
    """Remember `ids` as erased: later calls naming any of them are skipped."""
    keys = sorted({suppression_key(app_id, kind, value) for kind, value in ids})
    if keys:
        conn.execute(
            text(
                "INSERT INTO suppressed_ids (app_id, key) "
                "SELECT :app, k FROM unnest(CAST(:keys AS uuid[])) AS k ORDER BY k "
                "ON CONFLICT DO NOTHING"
            ),
            {"app": app_id, "keys": keys},
        )


def suppressed(conn: Connection, app_id: int, ids: Iterable[IdKey]) -> set[IdKey]:
    """Which of `ids` were erased."""
    by_key = {suppression_key(app_id, kind, value): (kind, value) for kind, value in ids}
    if not by_key:
        return set()
    found = conn.scalars(
        text("SELECT key FROM suppressed_ids WHERE app_id = :app AND key = ANY(:keys)"),
        {"app": app_id, "keys": list(by_key)},
    )
    return {by_key[k] for k in found}
