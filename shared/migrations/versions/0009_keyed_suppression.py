"""Suppressed ids keyed with SUPPRESSION_SECRET and kept with their kind; skipped calls recorded.

The hashes `suppressed_ids` held were plain SHA-256 prefixes of (app, kind, value): from a copy of
the database, numeric ids came back by counting. Each is now HMAC-SHA256(SUPPRESSION_SECRET, that
prefix), computed here in place, so no value is needed to re-key it. `skipped_messages` remembers,
as long as the dedupe records, the calls skipped because they named an erased person.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects import postgresql

from shared.erasure import Suppression

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "suppressed_ids",
        sa.Column(
            "kind",
            sa.String(length=10),
            nullable=True,
            comment="user, anonymous, email or phone; null for ids suppressed before kinds were kept",
        ),
    )
    bind = op.get_bind()
    rows = bind.execute(sa.text("SELECT app_id, key FROM suppressed_ids")).all()
    if rows:
        secret = context.config.attributes.get("suppression_secret") or ""
        if not secret:
            raise SystemExit("SUPPRESSION_SECRET must be set to key the suppressed ids")
        keyed = Suppression(secret)
        bind.execute(
            sa.text(
                "UPDATE suppressed_ids s SET key = n.new FROM unnest(CAST(:apps AS bigint[]), "
                "CAST(:old AS uuid[]), CAST(:new AS uuid[])) AS n(app_id, old, new) "
                "WHERE s.app_id = n.app_id AND s.key = n.old"
            ),
            {
                "apps": [app for app, _ in rows],
                "old": [key for _, key in rows],
                "new": [keyed.rekey(key.bytes) for _, key in rows],
            },
        )
    op.create_table(
        "skipped_messages",
        sa.Column("key", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("app_id", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.String(length=40), nullable=False),
        sa.Column(
            "skipped_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["app_id"],
            ["apps.id"],
            name=op.f("fk_skipped_messages_app_id_apps"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_skipped_messages")),
    )
    op.create_index(
        op.f("ix_skipped_messages_skipped_at"), "skipped_messages", ["skipped_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_skipped_messages_skipped_at"), table_name="skipped_messages")
    op.drop_table("skipped_messages")
    op.drop_column("suppressed_ids", "kind")
