"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-29 06:59:05.266102
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "apps",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False, comment="unique app name"),
        sa.Column(
            "webhook_secret",
            sa.Text(),
            nullable=True,
            comment="HMAC-SHA1 secret that POST /webhook bodies must be signed with",
        ),
        sa.Column("max_user_attributes", sa.Integer(), server_default="1000", nullable=False),
        sa.Column("max_company_attributes", sa.Integer(), server_default="1000", nullable=False),
        sa.Column("max_event_names", sa.Integer(), server_default="1000", nullable=False),
        sa.Column(
            "max_event_attributes",
            sa.Integer(),
            server_default="200",
            nullable=False,
            comment="attribute definitions per event name",
        ),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_apps")),
        sa.UniqueConstraint("name", name=op.f("uq_apps_name")),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(length=40), nullable=False, comment="public key id"),
        sa.Column("app_id", sa.BigInteger(), nullable=False),
        sa.Column(
            "key_hash",
            sa.String(length=64),
            nullable=False,
            comment="sha256 hex of the secret; the secret is never stored",
        ),
        sa.Column(
            "prefix",
            sa.String(length=16),
            nullable=False,
            comment="first characters, to recognise a key",
        ),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "last_used_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="written by workers from the envelope, never by requests",
        ),
        sa.ForeignKeyConstraint(
            ["app_id"], ["apps.id"], name=op.f("fk_api_keys_app_id_apps"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
    )
    op.create_index(op.f("ix_api_keys_app_id"), "api_keys", ["app_id"], unique=False)
    op.create_table(
        "attribute_definitions",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("app_id", sa.BigInteger(), nullable=False),
        sa.Column("scope", sa.String(length=10), nullable=False),
        sa.Column(
            "event",
            sa.Text(),
            server_default="",
            nullable=False,
            comment="event name for the event scope, '' otherwise",
        ),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("type", sa.String(length=10), nullable=False),
        sa.Column(
            "choices",
            postgresql.JSONB(astext_type=sa.Text()),
            nullable=True,
            comment="for fixed: allowed values",
        ),
        sa.Column("multiple", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("origin", sa.String(length=10), nullable=False, comment="operator or traffic"),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "origin in ('operator', 'traffic')", name=op.f("ck_attribute_definitions_origin")
        ),
        sa.CheckConstraint(
            "scope in ('user', 'company', 'event')", name=op.f("ck_attribute_definitions_scope")
        ),
        sa.CheckConstraint(
            "type in ('string','integer','float','boolean','date','datetime','fixed','json')",
            name=op.f("ck_attribute_definitions_type"),
        ),
        sa.CheckConstraint(
            "char_length(name) between 1 and 64", name=op.f("ck_attribute_definitions_name_length")
        ),
        sa.ForeignKeyConstraint(
            ["app_id"],
            ["apps.id"],
            name=op.f("fk_attribute_definitions_app_id_apps"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_attribute_definitions")),
        sa.UniqueConstraint(
            "app_id", "scope", "event", "name", name=op.f("uq_attribute_definitions_app_id")
        ),
    )
    op.create_index(
        op.f("ix_attribute_definitions_app_id"), "attribute_definitions", ["app_id"], unique=False
    )
    op.create_table(
        "companies",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("app_id", sa.BigInteger(), nullable=False),
        sa.Column("group_id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("email", sa.Text(), nullable=True),
        sa.Column("employees", sa.BigInteger(), nullable=True),
        sa.Column("phone", sa.Text(), nullable=True),
        sa.Column("country", sa.Text(), nullable=True),
        sa.Column("region", sa.Text(), nullable=True),
        sa.Column("city", sa.Text(), nullable=True),
        sa.Column(
            "attributes",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default="{}",
            nullable=False,
        ),
        sa.Column(
            "field_times",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default="{}",
            nullable=False,
        ),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["app_id"], ["apps.id"], name=op.f("fk_companies_app_id_apps"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_companies")),
        sa.UniqueConstraint("app_id", "group_id", name=op.f("uq_companies_app_id")),
    )
    op.create_index(op.f("ix_companies_app_id"), "companies", ["app_id"], unique=False)
    op.create_table(
        "dead_letters",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("app_id", sa.BigInteger(), nullable=True, comment="null if the app is unknown"),
        sa.Column("reason", sa.String(length=60), nullable=False, comment="stable reason code"),
        sa.Column("error", sa.Text(), nullable=False, comment="human explanation"),
        sa.Column("attempts", sa.Integer(), server_default="1", nullable=False),
        sa.Column(
            "call",
            postgresql.JSONB(astext_type=sa.Text()),
            nullable=False,
            comment="the raw call exactly as received",
        ),
        sa.Column(
            "meta",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default="{}",
            nullable=False,
            comment="envelope metadata: received_at, request_id, message_id",
        ),
        sa.Column("message_id", sa.Text(), nullable=True),
        sa.Column(
            "dedupe_key",
            sa.Text(),
            nullable=False,
            comment="one dead letter per failing call, however often it is redelivered",
        ),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("replayed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["app_id"], ["apps.id"], name=op.f("fk_dead_letters_app_id_apps"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dead_letters")),
        sa.UniqueConstraint("dedupe_key", name=op.f("uq_dead_letters_dedupe_key")),
    )
    op.create_index(
        "ix_dead_letters_app_created", "dead_letters", ["app_id", "created_at"], unique=False
    )
    op.create_index(op.f("ix_dead_letters_reason"), "dead_letters", ["reason"], unique=False)
    op.create_table(
        "event_definitions",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("app_id", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("origin", sa.String(length=10), server_default="traffic", nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["app_id"],
            ["apps.id"],
            name=op.f("fk_event_definitions_app_id_apps"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_event_definitions")),
        sa.UniqueConstraint("app_id", "name", name=op.f("uq_event_definitions_app_id")),
    )
    op.create_index(
        op.f("ix_event_definitions_app_id"), "event_definitions", ["app_id"], unique=False
    )
    op.create_table(
        "ignored_values",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("app_id", sa.BigInteger(), nullable=False),
        sa.Column("scope", sa.String(length=10), nullable=False),
        sa.Column("event", sa.Text(), server_default="", nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column(
            "reason", sa.String(length=40), nullable=False, comment="uncoercible or over_cap"
        ),
        sa.Column("count", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column(
            "last_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["app_id"], ["apps.id"], name=op.f("fk_ignored_values_app_id_apps"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ignored_values")),
        sa.UniqueConstraint(
            "app_id", "scope", "event", "name", "reason", name=op.f("uq_ignored_values_app_id")
        ),
    )
    op.create_index(op.f("ix_ignored_values_app_id"), "ignored_values", ["app_id"], unique=False)
    op.create_table(
        "processed_messages",
        sa.Column("app_id", sa.BigInteger(), nullable=False),
        sa.Column("message_id", sa.Text(), nullable=False),
        sa.Column(
            "processed_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["app_id"],
            ["apps.id"],
            name=op.f("fk_processed_messages_app_id_apps"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("app_id", "message_id", name=op.f("pk_processed_messages")),
    )
    op.create_index(
        "ix_processed_messages_processed_at", "processed_messages", ["processed_at"], unique=False
    )
    op.create_table(
        "trusted_domains",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("app_id", sa.BigInteger(), nullable=False),
        sa.Column(
            "host",
            sa.String(length=255),
            nullable=False,
            comment="exact host or *.wildcard, lower case",
        ),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["app_id"], ["apps.id"], name=op.f("fk_trusted_domains_app_id_apps"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_trusted_domains")),
        sa.UniqueConstraint("app_id", "host", name=op.f("uq_trusted_domains_app_id")),
    )
    op.create_index(op.f("ix_trusted_domains_app_id"), "trusted_domains", ["app_id"], unique=False)
    op.create_table(
        "users",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("app_id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=True, comment="Segment userId; null if anonymous"),
        sa.Column("email", sa.Text(), nullable=True),
        sa.Column("first_name", sa.Text(), nullable=True),
        sa.Column("last_name", sa.Text(), nullable=True),
        sa.Column("phone", sa.Text(), nullable=True),
        sa.Column("gender", sa.String(length=10), nullable=True),
        sa.Column("country", sa.Text(), nullable=True),
        sa.Column("region", sa.Text(), nullable=True),
        sa.Column("city", sa.Text(), nullable=True),
        sa.Column("user_agent", sa.Text(), nullable=True),
        sa.Column("os", sa.Text(), nullable=True),
        sa.Column("device_name", sa.Text(), nullable=True),
        sa.Column("device_type", sa.String(length=10), nullable=True),
        sa.Column("language", sa.Text(), nullable=True),
        sa.Column("resolution", sa.Text(), nullable=True),
        sa.Column("ip_address", sa.Text(), nullable=True),
        sa.Column("browser_family", sa.Text(), nullable=True),
        sa.Column("browser_version", sa.Text(), nullable=True),
        sa.Column("timezone", sa.Text(), nullable=True),
        sa.Column("current_url", sa.Text(), nullable=True),
        sa.Column("page_views", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "attributes",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default="{}",
            nullable=False,
            comment="custom attribute name to typed value",
        ),
        sa.Column(
            "field_times",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default="{}",
            nullable=False,
            comment="field or attribute name to the event time of its last write",
        ),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["app_id"], ["apps.id"], name=op.f("fk_users_app_id_apps"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("app_id", "user_id", name=op.f("uq_users_app_id")),
    )
    op.create_index(op.f("ix_users_app_id"), "users", ["app_id"], unique=False)
    op.create_table(
        "events",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("app_id", sa.BigInteger(), nullable=False),
        sa.Column("user_pk", sa.BigInteger(), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.Column(
            "properties",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default="{}",
            nullable=False,
        ),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("message_id", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["app_id"], ["apps.id"], name=op.f("fk_events_app_id_apps"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["event_id"],
            ["event_definitions.id"],
            name=op.f("fk_events_event_id_event_definitions"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_pk"], ["users.id"], name=op.f("fk_events_user_pk_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
    )
    op.create_index(op.f("ix_events_event_id"), "events", ["event_id"], unique=False)
    op.create_index("ix_events_user_time", "events", ["user_pk", "occurred_at"], unique=False)
    op.create_table(
        "identities",
        sa.Column("app_id", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False, comment="user or anonymous"),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("user_pk", sa.BigInteger(), nullable=False, comment="the profile it names"),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("kind in ('user', 'anonymous')", name=op.f("ck_identities_kind")),
        sa.ForeignKeyConstraint(
            ["app_id"], ["apps.id"], name=op.f("fk_identities_app_id_apps"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["user_pk"], ["users.id"], name=op.f("fk_identities_user_pk_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("app_id", "kind", "value", name=op.f("pk_identities")),
    )
    op.create_index("ix_identities_user_pk", "identities", ["user_pk"], unique=False)
    op.create_table(
        "memberships",
        sa.Column("company_id", sa.BigInteger(), nullable=False),
        sa.Column("user_pk", sa.BigInteger(), nullable=False),
        sa.Column(
            "member_since",
            sa.DateTime(timezone=True),
            nullable=False,
            comment="the earliest event time of a group call linking them",
        ),
        sa.ForeignKeyConstraint(
            ["company_id"],
            ["companies.id"],
            name=op.f("fk_memberships_company_id_companies"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_pk"], ["users.id"], name=op.f("fk_memberships_user_pk_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("company_id", "user_pk", name=op.f("pk_memberships")),
    )
    op.create_index("ix_memberships_user_pk", "memberships", ["user_pk"], unique=False)
    op.create_table(
        "page_views",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("app_id", sa.BigInteger(), nullable=False),
        sa.Column("user_pk", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False, comment="page or screen"),
        sa.Column("url", sa.Text(), nullable=True),
        sa.Column("path", sa.Text(), nullable=True),
        sa.Column("title", sa.Text(), nullable=True),
        sa.Column("referrer", sa.Text(), nullable=True),
        sa.Column("search", sa.Text(), nullable=True),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("category", sa.Text(), nullable=True),
        sa.Column(
            "properties",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default="{}",
            nullable=False,
        ),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("message_id", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["app_id"], ["apps.id"], name=op.f("fk_page_views_app_id_apps"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["user_pk"], ["users.id"], name=op.f("fk_page_views_user_pk_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_page_views")),
    )
    op.create_index(
        "ix_page_views_user_time", "page_views", ["user_pk", "occurred_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_page_views_user_time", table_name="page_views")
    op.drop_table("page_views")
    op.drop_index("ix_memberships_user_pk", table_name="memberships")
    op.drop_table("memberships")
    op.drop_index("ix_identities_user_pk", table_name="identities")
    op.drop_table("identities")
    op.drop_index("ix_events_user_time", table_name="events")
    op.drop_index(op.f("ix_events_event_id"), table_name="events")
    op.drop_table("events")
    op.drop_index(op.f("ix_users_app_id"), table_name="users")
    op.drop_table("users")
    op.drop_index(op.f("ix_trusted_domains_app_id"), table_name="trusted_domains")
    op.drop_table("trusted_domains")
    op.drop_index("ix_processed_messages_processed_at", table_name="processed_messages")
    op.drop_table("processed_messages")
    op.drop_index(op.f("ix_ignored_values_app_id"), table_name="ignored_values")
    op.drop_table("ignored_values")
    op.drop_index(op.f("ix_event_definitions_app_id"), table_name="event_definitions")
    op.drop_table("event_definitions")
    op.drop_index(op.f("ix_dead_letters_reason"), table_name="dead_letters")
    op.drop_index("ix_dead_letters_app_created", table_name="dead_letters")
    op.drop_table("dead_letters")
    op.drop_index(op.f("ix_companies_app_id"), table_name="companies")
    op.drop_table("companies")
    op.drop_index(op.f("ix_attribute_definitions_app_id"), table_name="attribute_definitions")
    op.drop_table("attribute_definitions")
    op.drop_index(op.f("ix_api_keys_app_id"), table_name="api_keys")
    op.drop_table("api_keys")
    op.drop_table("apps")
