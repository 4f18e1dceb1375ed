"""bounds against abuse: dead letters keep their batch's defaults once; merged-away profiles stay
as tombstones naming the profile they live on in, while their history moves in the background

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 02:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "users",
        sa.Column(
            "merged_into",
            sa.BigInteger(),
            nullable=True,
            comment="set once merged away: the profile it lives on in; its history moves there in "
            "the background and the row goes",
        ),
    )
    op.create_foreign_key(
        op.f("fk_users_merged_into_users"), "users", "users", ["merged_into"], ["id"]
    )
    op.create_index(
        "ix_users_merged_into",
        "users",
        ["merged_into"],
        unique=False,
        postgresql_where=sa.text("merged_into IS NOT NULL"),
    )
    op.create_table(
        "dead_letter_defaults",
        sa.Column(
            "digest", sa.Text(), nullable=False, comment="SHA-256 of the defaults as canonical JSON"
        ),
        sa.Column("defaults", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("digest", name=op.f("pk_dead_letter_defaults")),
    )
    op.add_column(
        "dead_letters",
        sa.Column(
            "defaults_digest",
            sa.Text(),
            nullable=True,
            comment="its batch's defaults, kept once in dead_letter_defaults",
        ),
    )
    op.create_foreign_key(
        op.f("fk_dead_letters_defaults_digest_dead_letter_defaults"),
        "dead_letters",
        "dead_letter_defaults",
        ["defaults_digest"],
        ["digest"],
    )
    op.create_index(
        "ix_dead_letters_defaults_digest", "dead_letters", ["defaults_digest"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_dead_letters_defaults_digest", table_name="dead_letters")
    op.drop_constraint(
        op.f("fk_dead_letters_defaults_digest_dead_letter_defaults"),
        "dead_letters",
        type_="foreignkey",
    )
    op.drop_column("dead_letters", "defaults_digest")
    op.drop_table("dead_letter_defaults")
    op.drop_index(
        "ix_users_merged_into",
        table_name="users",
        postgresql_where=sa.text("merged_into IS NOT NULL"),
    )
    op.drop_constraint(op.f("fk_users_merged_into_users"), "users", type_="foreignkey")
    op.drop_column("users", "merged_into")
