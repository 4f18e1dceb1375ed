"""API key scopes (`write`, the default, or `read`), lookups by email and phone, and the change
feed of profiles and companies.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "api_keys",
        sa.Column(
            "scope",
            sa.String(length=8),
            server_default="write",
            nullable=False,
            comment="write: sends calls to the receiver; read: reads through the read API",
        ),
    )
    op.create_table(
        "changes",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("app_id", sa.BigInteger(), nullable=False),
        sa.Column(
            "xid",
            sa.BigInteger(),
            server_default=sa.text("(pg_current_xact_id())::text::bigint"),
            nullable=False,
            comment="the writing transaction's id (xid8 as a number)",
        ),
        sa.Column("entity", sa.String(length=8), nullable=False, comment="profile or company"),
        sa.Column("entity_pk", sa.BigInteger(), nullable=False, comment="users.id or companies.id"),
        sa.Column(
            "kind",
            sa.String(length=8),
            nullable=False,
            comment="created, updated, merged or erased",
        ),
        sa.Column(
            "fields",
            postgresql.JSONB(astext_type=sa.Text()),
            nullable=True,
            comment="names of the fields that changed (created, updated)",
        ),
        sa.Column(
            "into_pk",
            sa.BigInteger(),
            nullable=True,
            comment="the profile a merged profile lives on in now",
        ),
        sa.Column("at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.ForeignKeyConstraint(
            ["app_id"], ["apps.id"], name=op.f("fk_changes_app_id_apps"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_changes")),
    )
    op.create_index(
        "ix_users_email",
        "users",
        ["app_id", sa.text("lower(email)"), "id"],
        postgresql_where=sa.text("email IS NOT NULL"),
    )
    op.create_index(
        "ix_users_phone",
        "users",
        ["app_id", "phone", "id"],
        postgresql_where=sa.text("phone IS NOT NULL"),
    )
    op.create_index("ix_changes_app_xid", "changes", ["app_id", "xid", "id"])
    op.create_index("ix_changes_at", "changes", ["at"], postgresql_using="brin")


def downgrade() -> None:
    op.drop_table("changes")
    op.drop_index("ix_users_phone", table_name="users")
    op.drop_index("ix_users_email", table_name="users")
    op.drop_column("api_keys", "scope")
