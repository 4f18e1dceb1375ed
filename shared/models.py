"""The Postgres schema, in SQLAlchemy 2 declarative style.

Every table below an app carries `app_id`, so tenants never meet. Per-field event times live beside
the values they protect (`field_times`), so an older call never rolls a profile back.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    func,
    or_,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql.elements import ColumnElement

from shared.attributes import BUDGET_DEFAULT, DEFAULT_CAPS, NAME_MAX, ORIGINS, SCOPES, TYPES, Caps

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

PROFILE_FIELDS = (
    "email", "first_name", "last_name", "phone", "gender", "country", "region", "city",
    "user_agent", "os", "device_name", "device_type", "language", "resolution", "ip_address",
    "browser_family", "browser_version", "timezone", "current_url",
)  # fmt: skip
"""The standard profile columns of `users`, in the order `users show` lists them."""
COMPANY_FIELDS = ("name", "description", "email", "employees", "phone", "country", "region", "city")
"""The standard columns of `companies` that group traits map to."""
PAGE_FIELDS = ("url", "path", "title", "referrer", "search", "name", "category")
"""The columns of `page_views` a page call's properties may carry too; stored once, in the column."""


def _sql_list(values: tuple[str, ...]) -> str:
    """A tuple of names as a SQL list: ('a', 'b')."""
    return "(" + ", ".join(f"'{v}'" for v in values) + ")"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        dict[str, Any]: JSONB,
        list[Any]: JSONB,
        Any: JSONB,
    }


def _now() -> Any:
    return mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)


def _app_fk(index: bool = False) -> Any:
    """The owning app. Most tables lead a unique key with `app_id`, which serves lookups by app;
    only a table without one asks for an index of its own."""
    return mapped_column(
        BigInteger, ForeignKey("apps.id", ondelete="CASCADE"), nullable=False, index=index
    )


class App(Base):
    __tablename__ = "apps"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True, comment="unique app name")
    webhook_secret: Mapped[str | None] = mapped_column(
        Text, comment="HMAC-SHA1 secret that POST /webhook bodies must be signed with"
    )
    max_user_attributes: Mapped[int] = mapped_column(Integer, server_default=str(DEFAULT_CAPS.user))
    max_company_attributes: Mapped[int] = mapped_column(
        Integer, server_default=str(DEFAULT_CAPS.company)
    )
    max_event_names: Mapped[int] = mapped_column(
        Integer, server_default=str(DEFAULT_CAPS.event_names)
    )
    max_event_attributes: Mapped[int] = mapped_column(
        Integer,
        server_default=str(DEFAULT_CAPS.event_attributes),
        comment="attribute definitions per event name",
    )
    definition_budget: Mapped[int | None] = mapped_column(
        Integer,
        comment="new names traffic may define per scope in any hour; null: DEFINITION_BUDGET",
    )
    created_at: Mapped[datetime] = _now()

    @property
    def caps(self) -> Caps:
        """The app's caps on definitions, as workers and the CLI apply them (the budget here is
        the app's own or the built-in default; workers fall back to DEFINITION_BUDGET instead)."""
        return Caps(
            self.max_user_attributes,
            self.max_company_attributes,
            self.max_event_names,
            self.max_event_attributes,
            BUDGET_DEFAULT if self.definition_budget is None else self.definition_budget,
        )


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, comment="public key id")
    app_id: Mapped[int] = _app_fk(index=True)
    key_hash: Mapped[str] = mapped_column(
        String(64), unique=True, comment="sha256 hex of the secret; the secret is never stored"
    )
    prefix: Mapped[str] = mapped_column(String(16), comment="first characters, to recognise a key")
    label: Mapped[str | None] = mapped_column(
        String(200), comment="what the key is for, as the operator named it"
    )
    scope: Mapped[str] = mapped_column(
        String(8),
        server_default="write",
        comment="write: sends calls to the receiver; read: reads through the read API",
    )
    created_at: Mapped[datetime] = _now()
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), comment="written by workers from the envelope, never by requests"
    )


class TrustedDomain(Base):
    __tablename__ = "trusted_domains"
    __table_args__ = (UniqueConstraint("app_id", "host"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    app_id: Mapped[int] = _app_fk()
    host: Mapped[str] = mapped_column(String(255), comment="exact host or *.wildcard, lower case")
    created_at: Mapped[datetime] = _now()


class AttributeDefinition(Base):
    __tablename__ = "attribute_definitions"
    __table_args__ = (
        UniqueConstraint("app_id", "scope", "event", "name"),
        CheckConstraint(f"scope in {_sql_list(SCOPES)}", name="scope"),
        CheckConstraint(f"type in {_sql_list(TYPES)}", name="type"),
        CheckConstraint(f"origin in {_sql_list(ORIGINS)}", name="origin"),
        CheckConstraint(f"char_length(name) between 1 and {NAME_MAX}", name="name_length"),
        # Traffic's definitions of the last hour, per app: what its budget has used.
        Index(
            "ix_attribute_definitions_traffic",
            "app_id",
            "created_at",
            "scope",
            postgresql_where=text("origin = 'traffic'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    app_id: Mapped[int] = _app_fk()
    scope: Mapped[str] = mapped_column(String(10))
    event: Mapped[str] = mapped_column(
        Text, server_default="", comment="event name for the event scope, '' otherwise"
    )
    name: Mapped[str] = mapped_column(String(NAME_MAX))
    type: Mapped[str] = mapped_column(String(10))
    choices: Mapped[list[Any] | None] = mapped_column(JSONB, comment="for fixed: allowed values")
    multiple: Mapped[bool] = mapped_column(Boolean, server_default="false")
    origin: Mapped[str] = mapped_column(String(10), comment="operator or traffic")
    created_at: Mapped[datetime] = _now()


class EventDefinition(Base):
    __tablename__ = "event_definitions"
    __table_args__ = (
        UniqueConstraint("app_id", "name"),
        Index(
            "ix_event_definitions_traffic",
            "app_id",
            "created_at",
            postgresql_where=text("origin = 'traffic'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    app_id: Mapped[int] = _app_fk()
    name: Mapped[str] = mapped_column(Text)
    origin: Mapped[str] = mapped_column(String(10), server_default="traffic")
    created_at: Mapped[datetime] = _now()


class User(Base):
    __tablename__ = "users"
    __table_args__ = (
        UniqueConstraint("app_id", "user_id"),
        Index(
            "ix_users_merged_into",
            "merged_into",
            postgresql_where=text("merged_into IS NOT NULL"),
        ),
        # Lookups by email and phone (the read API); an update that leaves both alone stays HOT.
        # `id` last: the matches come in page order, so the planner never walks the primary key
        # instead (it did, 40 ms at 100k profiles, misjudging how many share an address).
        Index(
            "ix_users_email",
            "app_id",
            func.lower(text("email")),
            "id",
            postgresql_where=text("email IS NOT NULL"),
        ),
        Index(
            "ix_users_phone", "app_id", "phone", "id", postgresql_where=text("phone IS NOT NULL")
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    app_id: Mapped[int] = _app_fk()
    user_id: Mapped[str | None] = mapped_column(Text, comment="Segment userId; null if anonymous")
    email: Mapped[str | None] = mapped_column(Text)
    first_name: Mapped[str | None] = mapped_column(Text)
    last_name: Mapped[str | None] = mapped_column(Text)
    phone: Mapped[str | None] = mapped_column(Text)
    gender: Mapped[str | None] = mapped_column(String(10))
    country: Mapped[str | None] = mapped_column(Text)
    region: Mapped[str | None] = mapped_column(Text)
    city: Mapped[str | None] = mapped_column(Text)
    user_agent: Mapped[str | None] = mapped_column(Text)
    os: Mapped[str | None] = mapped_column(Text)
    device_name: Mapped[str | None] = mapped_column(Text)
    device_type: Mapped[str | None] = mapped_column(String(10))
    language: Mapped[str | None] = mapped_column(Text)
    resolution: Mapped[str | None] = mapped_column(Text)
    ip_address: Mapped[str | None] = mapped_column(Text)
    browser_family: Mapped[str | None] = mapped_column(Text)
    browser_version: Mapped[str | None] = mapped_column(Text)
    timezone: Mapped[str | None] = mapped_column(Text)
    current_url: Mapped[str | None] = mapped_column(Text)
    page_views: Mapped[int] = mapped_column(BigInteger, server_default="0")
    first_seen: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_seen: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    attributes: Mapped[dict[str, Any]] = mapped_column(
        JSONB, server_default="{}", comment="custom attribute name to typed value"
    )
    field_times: Mapped[dict[str, Any]] = mapped_column(
        JSONB,
        server_default="{}",
        comment="field or attribute name to the event time of its last write",
    )
    merged_into: Mapped[int | None] = mapped_column(
        BigInteger,
        ForeignKey("users.id"),
        comment="set once merged away: the profile it lives on in; its history moves there in the "
        "background and the row goes",
    )
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()


CANONICAL_PROFILES = text(
    "WITH RECURSIVE chain(start, id, next, depth) AS ("
    "  SELECT id, id, merged_into, 0 FROM users WHERE id = ANY(:pks) "
    "  UNION ALL SELECT c.start, u.id, u.merged_into, c.depth + 1 "
    "  FROM chain c JOIN users u ON u.id = c.next WHERE c.depth < 64"
    ") SELECT start, id FROM chain WHERE next IS NULL"
)
"""(pk, the profile it lives on in now) for each of `:pks`: itself, or the end of its chain of
`merged_into` (a merged-away profile stays until its history has moved)."""

MERGED_FAMILY = (
    "family(root, id) AS (SELECT id, id FROM users WHERE id = ANY(:pks) "
    "UNION SELECT f.root, u.id FROM users u JOIN family f ON u.merged_into = f.id)"
)
"""A recursive CTE, to follow `WITH RECURSIVE`: each profile of `:pks` as `root`, with itself and
every profile merged into it, transitively, whose row is still there (its history not moved yet)."""

FAMILY_PROFILES = text(f"WITH RECURSIVE {MERGED_FAMILY} SELECT DISTINCT id FROM family")  # noqa: S608 (a constant)
"""The profiles `:pks` and every profile merged into them whose row is still there."""


class Identity(Base):
    """Every id a profile answers to: its userId, ids merged into it, and its anonymous ids."""

    __tablename__ = "identities"
    __table_args__ = (
        CheckConstraint("kind in ('user', 'anonymous')", name="kind"),
        Index("ix_identities_user_pk", "user_pk"),
    )

    app_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("apps.id", ondelete="CASCADE"), primary_key=True
    )
    kind: Mapped[str] = mapped_column(String(10), primary_key=True, comment="user or anonymous")
    value: Mapped[str] = mapped_column(Text, primary_key=True)
    user_pk: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="CASCADE"), comment="the profile it names"
    )
    created_at: Mapped[datetime] = _now()


class Company(Base):
    __tablename__ = "companies"
    __table_args__ = (UniqueConstraint("app_id", "group_id"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    app_id: Mapped[int] = _app_fk()
    group_id: Mapped[str] = mapped_column(Text)
    name: Mapped[str | None] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text)
    email: Mapped[str | None] = mapped_column(Text)
    employees: Mapped[int | None] = mapped_column(BigInteger)
    phone: Mapped[str | None] = mapped_column(Text)
    country: Mapped[str | None] = mapped_column(Text)
    region: Mapped[str | None] = mapped_column(Text)
    city: Mapped[str | None] = mapped_column(Text)
    attributes: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    field_times: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()


class Membership(Base):
    __tablename__ = "memberships"
    __table_args__ = (Index("ix_memberships_user_pk", "user_pk"),)

    company_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("companies.id", ondelete="CASCADE"), primary_key=True
    )
    user_pk: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    member_since: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), comment="the earliest event time of a group call linking them"
    )


def _history_args(table: str) -> tuple[Any, ...]:
    """Indexes and partitioning shared by the history tables (events, page views): monthly range
    partitions on `ingested_at` (shared/partitions.py), keyset reads per profile, BRIN on time."""
    return (
        Index(f"ix_{table}_user_time", "user_pk", "occurred_at", "id"),
        Index(f"ix_{table}_ingested_at", "ingested_at", postgresql_using="brin"),
        {"postgresql_partition_by": "RANGE (ingested_at)"},
    )


def _history_id(table: str) -> Any:
    # No primary key: a partitioned table's would have to carry the partition key too, and cost an
    # index as large as the rows' own; the sequence alone keeps ids unique, and nothing looks a
    # row up by id. The ORM still needs to know which column identifies a row.
    return mapped_column(BigInteger, server_default=text(f"nextval('{table}_id_seq')"))


def _ingested_at() -> Any:
    return mapped_column(
        DateTime(timezone=True),
        server_default=func.now(),
        nullable=False,
        comment="when the row was written: the partition key, which retention drops by",
    )


class PageView(Base):
    __tablename__ = "page_views"
    __table_args__ = _history_args("page_views")
    __mapper_args__ = {"primary_key": ["id"]}  # noqa: RUF012 (SQLAlchemy's own attribute)

    id: Mapped[int] = _history_id("page_views")
    app_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("apps.id", ondelete="CASCADE"))
    user_pk: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(10), comment="page or screen")
    url: Mapped[str | None] = mapped_column(Text)
    path: Mapped[str | None] = mapped_column(Text)
    title: Mapped[str | None] = mapped_column(Text)
    referrer: Mapped[str | None] = mapped_column(Text)
    search: Mapped[str | None] = mapped_column(Text)
    name: Mapped[str | None] = mapped_column(Text)
    category: Mapped[str | None] = mapped_column(Text)
    properties: Mapped[dict[str, Any]] = mapped_column(
        JSONB,
        server_default="{}",
        comment="the call's properties less those equal to a column above",
    )
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    message_id: Mapped[str] = mapped_column(Text)
    ingested_at: Mapped[datetime] = _ingested_at()


class EventOccurrence(Base):
    __tablename__ = "events"
    __table_args__ = _history_args("events")
    __mapper_args__ = {"primary_key": ["id"]}  # noqa: RUF012 (SQLAlchemy's own attribute)

    id: Mapped[int] = _history_id("events")
    app_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("apps.id", ondelete="CASCADE"))
    user_pk: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id", ondelete="CASCADE"))
    event_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("event_definitions.id", ondelete="CASCADE"), index=True
    )
    properties: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    message_id: Mapped[str] = mapped_column(Text)
    ingested_at: Mapped[datetime] = _ingested_at()


class ProcessedMessage(Base):
    """One row per applied messageId: the dedupe record, written in the effects' transaction.

    The key is a hash of the app and the messageId (shared/dedupe.py): 16 bytes instead of text.
    """

    __tablename__ = "processed_messages"
    __table_args__ = (Index("ix_processed_messages_processed_at", "processed_at"),)

    key: Mapped[Any] = mapped_column(UUID(as_uuid=True), primary_key=True)
    processed_at: Mapped[datetime] = _now()


class SuppressedId(Base):
    """An id of an erased person (shared/erasure.py), as a hash: later calls naming it are skipped."""

    __tablename__ = "suppressed_ids"

    app_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("apps.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[Any] = mapped_column(UUID(as_uuid=True), primary_key=True)
    kind: Mapped[str | None] = mapped_column(
        String(10),
        comment="user, anonymous, email or phone; null for ids suppressed before kinds were kept",
    )
    created_at: Mapped[datetime] = _now()


class SkippedMessage(Base):
    """A call skipped because it named an erased person, by its dedupe key, kept as long as the
    dedupe records: `messages show` says why it was not applied."""

    __tablename__ = "skipped_messages"

    key: Mapped[Any] = mapped_column(UUID(as_uuid=True), primary_key=True)
    app_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("apps.id", ondelete="CASCADE"))
    reason: Mapped[str] = mapped_column(String(40))
    skipped_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), index=True
    )


class IgnoredValue(Base):
    """Counts of values coercion ignored and names the caps turned away, per attribute."""

    __tablename__ = "ignored_values"
    __table_args__ = (UniqueConstraint("app_id", "scope", "event", "name", "reason"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    app_id: Mapped[int] = _app_fk()
    scope: Mapped[str] = mapped_column(String(10))
    event: Mapped[str] = mapped_column(Text, server_default="")
    name: Mapped[str] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(String(40), comment="uncoercible or over_cap")
    count: Mapped[int] = mapped_column(BigInteger, server_default="0")
    last_at: Mapped[datetime] = _now()


class DeadLetterDefaults(Base):
    """A batch's defaults (`context`, `integrations`) kept once for all its dead letters, and for
    every batch that sent the same ones: a 107 KB batch of bad calls once stored 239 MB."""

    __tablename__ = "dead_letter_defaults"

    digest: Mapped[str] = mapped_column(
        Text, primary_key=True, comment="SHA-256 of the defaults as canonical JSON"
    )
    defaults: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = _now()


class DeadLetter(Base):
    __tablename__ = "dead_letters"
    __table_args__ = (
        Index("ix_dead_letters_app_created", "app_id", "created_at"),
        Index("ix_dead_letters_defaults_digest", "defaults_digest"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    app_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("apps.id", ondelete="CASCADE"), comment="null if the app is unknown"
    )
    reason: Mapped[str] = mapped_column(String(60), index=True, comment="stable reason code")
    error: Mapped[str] = mapped_column(Text, comment="human explanation")
    attempts: Mapped[int] = mapped_column(Integer, server_default="1")
    call: Mapped[Any] = mapped_column(JSONB, comment="the raw call exactly as received")
    meta: Mapped[dict[str, Any]] = mapped_column(
        JSONB, server_default="{}", comment="envelope metadata: received_at, request_id, message_id"
    )
    defaults_digest: Mapped[str | None] = mapped_column(
        Text,
        ForeignKey("dead_letter_defaults.digest"),
        comment="its batch's defaults, kept once in dead_letter_defaults",
    )
    message_id: Mapped[str | None] = mapped_column(Text)
    dedupe_key: Mapped[str] = mapped_column(
        Text,
        unique=True,
        comment="one dead letter per failing call, however often it is redelivered",
    )
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()
    replayed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    @classmethod
    def is_open(cls) -> ColumnElement[bool]:
        """Never replayed, or failed again after its last replay: waiting for an operator."""
        return or_(cls.replayed_at.is_(None), cls.updated_at > cls.replayed_at)


class ReplayRun(Base):
    """One `userdest replay` of a file: what it read and enqueued, so `replay status RUN` can
    follow the workers applying it."""

    __tablename__ = "replay_runs"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, comment="the run id, shown once")
    app_id: Mapped[int] = _app_fk(index=True)
    queue: Mapped[str] = mapped_column(String(20))
    source: Mapped[str] = mapped_column(Text, comment="the file's name, or - for stdin")
    started_at: Mapped[datetime] = _now()
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    lines: Mapped[int] = mapped_column(Integer, server_default="0")
    accepted: Mapped[int] = mapped_column(Integer, server_default="0")
    rejected: Mapped[int] = mapped_column(Integer, server_default="0")


class ReplayRunMessage(Base):
    """A messageId a replay run enqueued; the run's progress is these joined with what applied."""

    __tablename__ = "replay_run_messages"

    run_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("replay_runs.id", ondelete="CASCADE"), primary_key=True
    )
    message_id: Mapped[str] = mapped_column(Text, primary_key=True)


class MaintenanceRun(Base):
    """A `userdest maintenance run` that finished its work: when, and what it did. The newest one's
    time is a gauge of /metrics, so an alert can say when maintenance stopped succeeding."""

    __tablename__ = "maintenance_runs"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime] = _now()
    report: Mapped[dict[str, Any]] = mapped_column(comment="what the run did, as its --json answer")


class Change(Base):
    """One profile or company change a worker committed: the change feed's outbox.

    Rows are only inserted (a profile update stays a HOT update; this table takes the new row).
    `xid` is the writing transaction's id: readers return only rows of transactions that had
    finished when their snapshot was taken, in (xid, id) order, so a change committed late is never
    behind a cursor already handed out (docs/readapi.md has the argument). A row holds ids and
    field names only, never values: erasing the person leaves nothing of theirs here.
    """

    __tablename__ = "changes"
    __table_args__ = (
        Index("ix_changes_app_xid", "app_id", "xid", "id"),
        Index("ix_changes_at", "at", postgresql_using="brin"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    app_id: Mapped[int] = _app_fk()
    xid: Mapped[int] = mapped_column(
        BigInteger,
        server_default=text("(pg_current_xact_id())::text::bigint"),
        comment="the writing transaction's id (xid8 as a number)",
    )
    entity: Mapped[str] = mapped_column(String(8), comment="profile or company")
    entity_pk: Mapped[int] = mapped_column(BigInteger, comment="users.id or companies.id")
    kind: Mapped[str] = mapped_column(String(8), comment="created, updated, merged or erased")
    fields: Mapped[list[str] | None] = mapped_column(
        JSONB, comment="names of the fields that changed (created, updated)"
    )
    into_pk: Mapped[int | None] = mapped_column(
        BigInteger, comment="the profile a merged profile lives on in now"
    )
    at: Mapped[datetime] = _now()
