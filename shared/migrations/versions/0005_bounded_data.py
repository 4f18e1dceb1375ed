"""Bounded data: compact dedupe keys, monthly history partitions, suppressed ids, leaner indexes.

- processed_messages: a 16-byte hash key (shared/dedupe.py) instead of (app_id, message_id text);
  existing records are rehashed, so nothing already applied is applied again.
- events and page_views: partitioned by month of a new `ingested_at` column (shared/partitions.py),
  with a DEFAULT partition; existing rows are copied into the month they occurred in, no earlier
  than twelve months back (older ones land in that first month). No primary key (ids still come
  from the same sequences); the per-profile index gains `id` for keyset pagination; BRIN on time.
- suppressed_ids: hashes of erased people's ids (shared/erasure.py).
- six `app_id` indexes that the tables' unique keys (which start with app_id) already serve.
- users and companies: fillfactor 80 so updates stay on their page (HOT), and earlier autovacuum.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from shared.dedupe import KEY_SQL
from shared.partitions import MONTHS_AHEAD, add_months, create_sql, default_sql, month_of

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

REDUNDANT = (
    "trusted_domains",
    "attribute_definitions",
    "event_definitions",
    "users",
    "companies",
    "ignored_values",
)
LEGACY_MONTHS = 12
"""How far back existing history gets partitions of its own month."""
HISTORY = {
    "events": "app_id, user_pk, event_id, properties, occurred_at, message_id",
    "page_views": "app_id, user_pk, kind, url, path, title, referrer, search, name, category, "
    "properties, occurred_at, message_id",
}


def _history_columns(table: str) -> list[sa.Column[Any]]:
    common: list[sa.Column[Any]] = [
        sa.Column(
            "id",
            sa.BigInteger(),
            server_default=sa.text(f"nextval('{table}_id_seq')"),
            nullable=False,
        ),
        sa.Column("app_id", sa.BigInteger(), nullable=False),
        sa.Column("user_pk", sa.BigInteger(), nullable=False),
    ]
    if table == "events":
        own: list[sa.Column[Any]] = [sa.Column("event_id", sa.BigInteger(), nullable=False)]
        props = sa.Column(
            "properties",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default="{}",
            nullable=False,
        )
    else:
        own = [sa.Column("kind", sa.String(length=10), nullable=False, comment="page or screen")]
        own += [
            sa.Column(c, sa.Text(), nullable=True)
            for c in ("url", "path", "title", "referrer", "search", "name", "category")
        ]
        props = sa.Column(
            "properties",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default="{}",
            nullable=False,
            comment="the call's properties less those equal to a column above",
        )
    return [
        *common,
        *own,
        props,
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("message_id", sa.Text(), nullable=False),
        sa.Column(
            "ingested_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
            nullable=False,
            comment="when the row was written: the partition key, which retention drops by",
        ),
    ]  # fmt: skip


def _partition_history(table: str) -> None:
    op.execute(f"ALTER TABLE {table} RENAME TO {table}_old")
    op.execute(f"ALTER TABLE {table}_old DROP CONSTRAINT pk_{table}")
    op.execute(f"DROP INDEX ix_{table}_user_time")
    if table == "events":
        op.execute("DROP INDEX ix_events_event_id")
    op.execute(f"ALTER SEQUENCE {table}_id_seq OWNED BY NONE")
    fks = [
        sa.ForeignKeyConstraint(
            ["app_id"], ["apps.id"], name=op.f(f"fk_{table}_app_id_apps"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["user_pk"], ["users.id"], name=op.f(f"fk_{table}_user_pk_users"), ondelete="CASCADE"
        ),
    ]
    if table == "events":
        fks.append(
            sa.ForeignKeyConstraint(
                ["event_id"], ["event_definitions.id"],
                name=op.f("fk_events_event_id_event_definitions"), ondelete="CASCADE",
            )
        )  # fmt: skip
    op.create_table(
        table, *_history_columns(table), *fks, postgresql_partition_by="RANGE (ingested_at)"
    )
    op.execute(f"ALTER SEQUENCE {table}_id_seq OWNED BY {table}.id")
    op.create_index(f"ix_{table}_user_time", table, ["user_pk", "occurred_at", "id"])
    op.create_index(f"ix_{table}_ingested_at", table, ["ingested_at"], postgresql_using="brin")
    if table == "events":
        op.create_index(op.f("ix_events_event_id"), "events", ["event_id"])
    now = month_of(datetime.now(UTC))
    first = add_months(now, -LEGACY_MONTHS)
    op.execute(default_sql(table))
    for n in range(LEGACY_MONTHS + MONTHS_AHEAD + 1):
        op.execute(create_sql(table, add_months(first, n)))
    columns = HISTORY[table]
    op.execute(
        f"INSERT INTO {table} (id, {columns}, ingested_at) "  # noqa: S608 (fixed names)
        f"SELECT id, {columns}, LEAST(GREATEST(occurred_at, TIMESTAMPTZ '{first} 00:00:00+00'), "
        f"now()) FROM {table}_old"
    )
    op.execute(f"DROP TABLE {table}_old")


def upgrade() -> None:
    op.execute("ALTER TABLE processed_messages RENAME TO processed_messages_old")
    op.execute("ALTER TABLE processed_messages_old DROP CONSTRAINT pk_processed_messages")
    op.execute("DROP INDEX ix_processed_messages_processed_at")
    op.create_table(
        "processed_messages",
        sa.Column("key", sa.UUID(), nullable=False),
        sa.Column(
            "processed_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_processed_messages")),
    )  # fmt: skip
    op.create_index("ix_processed_messages_processed_at", "processed_messages", ["processed_at"])
    op.execute(
        "INSERT INTO processed_messages (key, processed_at) "  # noqa: S608 (fixed names)
        f"SELECT {KEY_SQL.format(app='app_id', mid='message_id')}, processed_at "
        "FROM processed_messages_old ON CONFLICT DO NOTHING"
    )
    op.execute("DROP TABLE processed_messages_old")
    op.execute(
        "ALTER TABLE processed_messages SET (autovacuum_vacuum_scale_factor = 0.05, "
        "autovacuum_vacuum_insert_scale_factor = 0.05)"
    )

    for table in HISTORY:
        _partition_history(table)

    op.create_table(
        "suppressed_ids",
        sa.Column("app_id", sa.BigInteger(), nullable=False),
        sa.Column("key", sa.UUID(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["app_id"], ["apps.id"], name=op.f("fk_suppressed_ids_app_id_apps"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("app_id", "key", name=op.f("pk_suppressed_ids")),
    )  # fmt: skip

    for table in REDUNDANT:
        op.drop_index(op.f(f"ix_{table}_app_id"), table_name=table)
    for table in ("users", "companies"):
        op.execute(
            f"ALTER TABLE {table} SET (fillfactor = 80, autovacuum_vacuum_scale_factor = 0.05, "
            "autovacuum_analyze_scale_factor = 0.05)"
        )


def downgrade() -> None:
    for table in ("users", "companies"):
        op.execute(
            f"ALTER TABLE {table} RESET (fillfactor, autovacuum_vacuum_scale_factor, "
            "autovacuum_analyze_scale_factor)"
        )
    for table in REDUNDANT:
        op.create_index(op.f(f"ix_{table}_app_id"), table, ["app_id"])
    op.drop_table("suppressed_ids")
    for table in HISTORY:
        op.execute(f"ALTER SEQUENCE {table}_id_seq OWNED BY NONE")
        op.execute(f"ALTER TABLE {table} RENAME TO {table}_new")
        op.execute(f"DROP INDEX ix_{table}_user_time")
        op.execute(f"CREATE TABLE {table} (LIKE {table}_new INCLUDING DEFAULTS INCLUDING COMMENTS)")
        op.execute(f"INSERT INTO {table} SELECT * FROM {table}_new")  # noqa: S608
        op.execute(f"DROP TABLE {table}_new CASCADE")
        op.execute(f"ALTER TABLE {table} DROP COLUMN ingested_at")
        op.execute(f"ALTER TABLE {table} ADD CONSTRAINT pk_{table} PRIMARY KEY (id)")
        op.execute(f"ALTER SEQUENCE {table}_id_seq OWNED BY {table}.id")
        for fk, ref in (("app_id", "apps"), ("user_pk", "users")):
            op.create_foreign_key(
                op.f(f"fk_{table}_{fk}_{ref}"), table, ref, [fk], ["id"], ondelete="CASCADE"
            )
        op.create_index(f"ix_{table}_user_time", table, ["user_pk", "occurred_at"])
    op.create_foreign_key(
        op.f("fk_events_event_id_event_definitions"), "events", "event_definitions",
        ["event_id"], ["id"], ondelete="CASCADE",
    )  # fmt: skip
    op.create_index(op.f("ix_events_event_id"), "events", ["event_id"])
    # The dedupe keys cannot be turned back into messageIds: the old table starts empty.
    op.drop_table("processed_messages")
    op.create_table(
        "processed_messages",
        sa.Column("app_id", sa.BigInteger(), nullable=False),
        sa.Column("message_id", sa.Text(), nullable=False),
        sa.Column(
            "processed_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["app_id"], ["apps.id"], name=op.f("fk_processed_messages_app_id_apps"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("app_id", "message_id", name=op.f("pk_processed_messages")),
    )  # fmt: skip
    op.create_index("ix_processed_messages_processed_at", "processed_messages", ["processed_at"])
