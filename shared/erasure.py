"""Erasure of a person (GDPR/CCPA) and the finder an access request shares with it.

Used alike by `userdest users delete` / `users export` and by the workers applying a Segment
deletion request (a `delete` call). `find` gathers everything held about a person from the ids and
contacts that name them, matched as the workers match them (normalised ids, lower-cased email):
their profiles with the profiles merged into them, every id those answer to, their contacts, and the
dead letters naming any of those, even where no profile exists. `erase` then deletes it all, plus
the traces the person left in shared rows (docs/data.md, "Erasure"), and suppresses every id and
contact: later calls naming one are skipped.

A suppressed id or contact is kept only as a 16-byte keyed hash (`Suppression`): without
SUPPRESSION_SECRET, which never enters the database, a copy of the database does not give the
values back, not even by trying every number. The dedupe records of the person's calls stay
(hashes without a link to anyone): a retried call must still count as applied.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, text

from shared.envelope import merge_defaults
from shared.ids import clean_text, normalize_id
from shared.models import FAMILY_PROFILES

IdKey = tuple[str, str]
"""(kind, value): ("user", userId), ("anonymous", anonymousId), ("email", address) or
("phone", digits)."""

ID_KINDS = ("user", "anonymous")
CONTACT_KINDS = ("email", "phone")
SEARCHED_MIN = 6
"""Ids shorter than this are not looked for inside names and free text (definition names, replay
file names): `42` would match strangers' rows. Contacts always are."""
KEYS_KEPT = 16_384
"""Suppression keys a process keeps computed (Suppression.key)."""
COMPANY_TEXT = ("name", "description", "email", "phone", "country", "region", "city")


# --- keys ----------------------------------------------------------------------------------------


def unkeyed(app_id: int, kind: str, value: str) -> bytes:
    """The plain SHA-256 prefix of (app, kind, value) the keyed hash is made from."""
    return hashlib.sha256(f"{app_id}:{kind}:{value}".encode()).digest()[:16]


class Suppression:
    """The keyed hashes erased ids and contacts are remembered by: HMAC-SHA256 with
    SUPPRESSION_SECRET over `unkeyed(...)`, so rows hashed before the key existed could be keyed
    in place (migration 0010)."""

    def __init__(self, secret: str) -> None:
        if not secret:
            raise ValueError("SUPPRESSION_SECRET is required")
        # The key's pads are hashed once; each hash copies that state.
        self._hmac = hmac.new(secret.encode(), digestmod=hashlib.sha256)
        # Workers hash every id and contact of every call, and a person's come back call after
        # call: the keys of the ids seen last are kept (about 3 MB at most).
        self.key: Callable[[int, str, str], uuid.UUID] = functools.lru_cache(KEYS_KEPT)(self._key)

    def rekey(self, plain: bytes) -> uuid.UUID:
        mac = self._hmac.copy()
        mac.update(plain)
        return uuid.UUID(bytes=mac.digest()[:16])

    def _key(self, app_id: int, kind: str, value: str) -> uuid.UUID:
        """The keyed hash of one id or contact of an app."""
        return self.rekey(unkeyed(app_id, kind, value))


# --- what names a person -------------------------------------------------------------------------


def normalize_email(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    text_ = clean_text(value.strip().lower())
    return text_ if "@" in text_ and len(text_) >= 3 else None


def normalize_phone(value: Any) -> str | None:
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        return None
    digits = re.sub(r"\D", "", str(value))
    return digits if len(digits) >= 5 else None


def contact_keys(body: dict[str, Any]) -> set[IdKey]:
    """The email and phone a call's traits give (its own `traits`, or `context.traits` as
    RudderStack and analytics.js send them)."""
    found: set[IdKey] = set()
    context = body.get("context")
    for traits in (
        body.get("traits"),
        context.get("traits") if isinstance(context, dict) else None,
    ):
        if isinstance(traits, dict):
            email, phone = (
                normalize_email(traits.get("email")),
                normalize_phone(traits.get("phone")),
            )
            if email:
                found.add(("email", email))
            if phone:
                found.add(("phone", phone))
    return found


def call_keys(body: dict[str, Any]) -> set[IdKey]:
    """Every id and contact a raw call (defaults merged) names."""
    keys = contact_keys(body)
    for name, kinds in (("userId", ("user",)), ("anonymousId", ("anonymous",)),
                        ("previousId", ID_KINDS)):  # fmt: skip
        value = normalize_id(body.get(name))
        if value is not None:
            keys.update((kind, value) for kind in kinds)
    return keys


@dataclass
class Person:
    """Everything `find` gathered about one person of an app."""

    app_id: int
    pks: list[int] = field(default_factory=list)
    """Their profiles, with those merged into them whose rows are still there."""
    ids: set[IdKey] = field(default_factory=set)
    contacts: set[IdKey] = field(default_factory=set)
    letters: list[int] = field(default_factory=list)
    """Dead letters naming them: by a normalised id or contact, or holding one of their contacts."""

    @property
    def found(self) -> bool:
        return bool(self.pks or self.letters)

    def searched(self) -> list[str]:
        """The values looked for inside names and free text, lower-cased."""
        values = {v.lower() for _, v in self.contacts}
        values |= {v.lower() for _, v in self.ids if len(v) >= SEARCHED_MIN}
        return sorted(values)


def _like(values: Iterable[str]) -> list[str]:
    return ["%" + re.sub(r"([\\%_])", r"\\\1", v) + "%" for v in values]


def find(conn: Connection, app_id: int, keys: Iterable[IdKey], pks: Iterable[int] = ()) -> Person:
    """The person the ids/contacts `keys` (and profiles `pks`) name, as the workers match them."""
    person = Person(app_id)
    keys = set(keys)
    person.ids = {k for k in keys if k[0] in ID_KINDS}
    person.contacts = {k for k in keys if k[0] in CONTACT_KINDS}
    found = set(pks)
    for _ in range(2):  # a dead letter may link one more id; once more finds that id's profile
        found |= _profiles(conn, app_id, person)
        if found:
            found = set(conn.scalars(FAMILY_PROFILES, {"pks": sorted(found)}))
        person.pks = sorted(found)
        _identities_and_contacts(conn, person)
        before = person.ids | person.contacts
        _letters(conn, person)
        if person.ids | person.contacts == before:
            break
    return person


def _profiles(conn: Connection, app_id: int, person: Person) -> set[int]:
    ids = sorted(person.ids)
    emails = sorted(v for k, v in person.contacts if k == "email")
    return set(
        conn.scalars(
            text(
                "SELECT user_pk FROM identities WHERE app_id = :app AND (kind, value) IN "
                "(SELECT * FROM unnest(CAST(:kinds AS text[]), CAST(:values AS text[]))) "
                "UNION SELECT id FROM users WHERE app_id = :app AND lower(email) = ANY(:emails)"
            ),
            {
                "app": app_id,
                "kinds": [k for k, _ in ids],
                "values": [v for _, v in ids],
                "emails": emails,
            },
        )
    )


def _identities_and_contacts(conn: Connection, person: Person) -> None:
    if not person.pks:
        return
    params = {"app": person.app_id, "pks": person.pks}
    for kind, value in conn.execute(
        text("SELECT kind, value FROM identities WHERE app_id = :app AND user_pk = ANY(:pks)"),
        params,
    ):
        person.ids.add((kind, value))
    for email, phone in conn.execute(
        text("SELECT email, phone FROM users WHERE id = ANY(:pks)"), params
    ):
        if normalize_email(email):
            person.contacts.add(("email", normalize_email(email)))  # type: ignore[arg-type]
        if normalize_phone(phone):
            person.contacts.add(("phone", normalize_phone(phone)))  # type: ignore[arg-type]


def _letters(conn: Connection, person: Person) -> None:
    """The dead letters naming the person; the ids and contacts those letters add are theirs too."""
    values = {v for _, v in person.ids | person.contacts}
    if not values:
        return
    emails = [v for k, v in person.contacts if k == "email"]
    rows = conn.execute(
        text(
            "SELECT l.id, l.call, l.meta, d.defaults FROM dead_letters l "
            "LEFT JOIN dead_letter_defaults d ON d.digest = l.defaults_digest "
            "WHERE l.app_id = :app AND (CAST(l.call AS text) ILIKE ANY(:p) "
            "OR CAST(l.meta AS text) ILIKE ANY(:p) OR CAST(d.defaults AS text) ILIKE ANY(:p)) "
            "ORDER BY l.id"
        ),
        {"app": person.app_id, "p": _like(values)},
    ).all()
    wanted = person.ids | person.contacts
    letters = set(person.letters)
    for letter_id, call, meta, defaults in rows:
        body = merge_defaults(call, defaults or {}) if isinstance(call, dict) else {}
        named = call_keys(body)
        original = (meta or {}).get("original_call")
        if isinstance(original, dict):
            named |= call_keys(original)
        whole = f"{call} {meta} {defaults}".lower()
        if named & wanted or any(e in whole for e in emails):
            letters.add(letter_id)
            person.ids |= {k for k in named if k[0] in ID_KINDS}
            person.contacts |= {k for k in named if k[0] in CONTACT_KINDS}
    person.letters = sorted(letters)


# --- erasing -------------------------------------------------------------------------------------


@dataclass
class Erased:
    """What an erasure removed, by table, and every id and contact the person answered to."""

    rows: dict[str, int] = field(default_factory=dict)
    ids: set[IdKey] = field(default_factory=set)


def erase(
    conn: Connection, person: Person, suppression: Suppression, contacts: bool = True
) -> Erased:
    """Delete every row `find` gathered and the person's traces in shared rows, and suppress
    every id, and every contact unless not `contacts` (the person may sign up again with the same
    email). The caller holds the advisory locks of the person's ids and commits."""
    out = Erased(ids=person.ids | (person.contacts if contacts else set()))
    app, pks = person.app_id, person.pks
    params: dict[str, Any] = {"app": app, "pks": pks}
    message_ids: set[str] = set()
    if pks:
        for table in ("page_views", "events"):
            found = conn.scalars(
                text(f"DELETE FROM {table} WHERE user_pk = ANY(:pks) RETURNING message_id"),  # noqa: S608 (fixed names)
                params,
            ).all()
            out.rows[table] = len(found)
            message_ids.update(found)
        out.rows["identities"] = conn.execute(
            text("DELETE FROM identities WHERE app_id = :app AND user_pk = ANY(:pks)"), params
        ).rowcount
        companies = conn.scalars(
            text("DELETE FROM memberships WHERE user_pk = ANY(:pks) RETURNING company_id"), params
        ).all()
        out.rows["memberships"] = len(companies)
        out.rows["users"] = conn.execute(
            text("DELETE FROM users WHERE app_id = :app AND id = ANY(:pks)"), params
        ).rowcount
        _companies(conn, person, sorted(set(companies)), out)
        # The change feed hears of it by the profile's number only: nothing of the person.
        conn.execute(
            text(
                "INSERT INTO changes (app_id, entity, entity_pk, kind) "
                "SELECT :app, 'profile', p, 'erased' FROM unnest(CAST(:pks AS bigint[])) AS p"
            ),
            params,
        )
    if person.letters:
        gone = conn.execute(
            text(
                "DELETE FROM dead_letters WHERE id = ANY(:ids) RETURNING message_id, defaults_digest"
            ),
            {"ids": person.letters},
        ).all()
        out.rows["dead_letters"] = len(gone)
        message_ids.update(m for m, _ in gone if m)
        out.rows["dead_letter_defaults"] = delete_unused_defaults(
            conn, sorted({d for _, d in gone if d})
        )
    _named_traces(conn, person, sorted(message_ids), out)
    suppress(conn, app, out.ids, suppression)
    return out


def delete_unused_defaults(conn: Connection, digests: list[str] | None = None) -> int:
    """Delete batch defaults no dead letter uses any more (of `digests` only, where given)."""
    where = "" if digests is None else "digest = ANY(:d) AND "
    return conn.execute(
        text(
            f"DELETE FROM dead_letter_defaults d WHERE {where}"  # noqa: S608 (fixed text)
            "NOT EXISTS (SELECT 1 FROM dead_letters l WHERE l.defaults_digest = d.digest)"
        ),
        {"d": digests or []},
    ).rowcount


def _companies(conn: Connection, person: Person, company_ids: list[int], out: Erased) -> None:
    """A company the person was the only member of goes with them; in a company others belong to,
    every field and attribute holding one of their contacts or ids is cleared."""
    if not company_ids:
        return
    out.rows["companies"] = conn.execute(
        text(
            "DELETE FROM companies c WHERE id = ANY(:c) AND NOT EXISTS "
            "(SELECT 1 FROM memberships m WHERE m.company_id = c.id)"
        ),
        {"c": company_ids},
    ).rowcount
    patterns = _like(person.searched())
    if not patterns:
        return
    sets = ", ".join(
        f"{col} = CASE WHEN {col} ILIKE ANY(:p) THEN NULL ELSE {col} END" for col in COMPANY_TEXT
    )
    out.rows["companies_cleared"] = conn.execute(
        text(
            f"UPDATE companies SET {sets}, attributes = (SELECT coalesce(jsonb_object_agg(k, v), "  # noqa: S608 (fixed names)
            "'{}') FROM jsonb_each(attributes) AS a(k, v) WHERE NOT CAST(v AS text) ILIKE ANY(:p)) "
            "WHERE id = ANY(:c) AND (CAST(attributes AS text) ILIKE ANY(:p) OR "
            + " OR ".join(f"{col} ILIKE ANY(:p)" for col in COMPANY_TEXT)
            + ")"
        ),
        {"c": company_ids, "p": patterns},
    ).rowcount


def _named_traces(conn: Connection, person: Person, message_ids: list[str], out: Erased) -> None:
    """Names senders chose that hold the person's contacts or ids (definitions made by traffic,
    ignored-name counters) and replay records of their calls."""
    patterns = _like(person.searched())
    params = {"app": person.app_id, "p": patterns, "m": message_ids}
    if patterns:
        out.rows["event_definitions"] = conn.execute(
            text(
                "DELETE FROM event_definitions WHERE app_id = :app AND origin = 'traffic' "
                "AND name ILIKE ANY(:p)"
            ),
            params,
        ).rowcount
        out.rows["attribute_definitions"] = conn.execute(
            text(
                "DELETE FROM attribute_definitions WHERE app_id = :app AND origin = 'traffic' "
                "AND (name ILIKE ANY(:p) OR event ILIKE ANY(:p))"
            ),
            params,
        ).rowcount
        out.rows["ignored_values"] = conn.execute(
            text(
                "DELETE FROM ignored_values WHERE app_id = :app "
                "AND (name ILIKE ANY(:p) OR event ILIKE ANY(:p))"
            ),
            params,
        ).rowcount
        conn.execute(
            text(
                "UPDATE replay_runs SET source = '(erased)' WHERE app_id = :app "
                "AND source ILIKE ANY(:p)"
            ),
            params,
        )
    if message_ids:
        out.rows["replay_run_messages"] = conn.execute(
            text(
                "DELETE FROM replay_run_messages m USING replay_runs r WHERE m.run_id = r.id "
                "AND r.app_id = :app AND m.message_id = ANY(:m)"
            ),
            params,
        ).rowcount


# --- suppression ---------------------------------------------------------------------------------


def suppress(
    conn: Connection, app_id: int, keys: Iterable[IdKey], suppression: Suppression
) -> None:
    """Remember `keys` as erased: later calls naming any of them are skipped."""
    rows = sorted({(suppression.key(app_id, kind, value), kind) for kind, value in keys})
    if rows:
        conn.execute(
            text(
                "INSERT INTO suppressed_ids (app_id, key, kind) "
                "SELECT :app, k, kind FROM unnest(CAST(:keys AS uuid[]), CAST(:kinds AS text[])) "
                "AS s(k, kind) ORDER BY k ON CONFLICT DO NOTHING"
            ),
            {"app": app_id, "keys": [k for k, _ in rows], "kinds": [kind for _, kind in rows]},
        )


def suppressed(
    conn: Connection, app_id: int, keys: Iterable[IdKey], suppression: Suppression
) -> set[IdKey]:
    """Which of `keys` were erased."""
    by_key = {suppression.key(app_id, kind, value): (kind, value) for kind, value in keys}
    if not by_key:
        return set()
    found = conn.scalars(
        text("SELECT key FROM suppressed_ids WHERE app_id = :app AND key = ANY(:keys)"),
        {"app": app_id, "keys": list(by_key)},
    )
    return {by_key[k] for k in found}


def lift(conn: Connection, app_id: int, keys: Iterable[IdKey], suppression: Suppression) -> int:
    """Forget that `keys` were erased: calls naming them apply again. The number lifted."""
    wanted = [suppression.key(app_id, kind, value) for kind, value in keys]
    return conn.execute(
        text("DELETE FROM suppressed_ids WHERE app_id = :app AND key = ANY(:keys)"),
        {"app": app_id, "keys": wanted},
    ).rowcount
