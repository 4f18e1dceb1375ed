"""Budgets of new definitions: an app's own budget of names traffic may define per hour (null: the
DEFINITION_BUDGET setting), and indexes that find traffic's definitions of the last hour.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "apps",
        sa.Column(
            "definition_budget",
            sa.Integer(),
            nullable=True,
            comment="new names traffic may define per scope in any hour; null: DEFINITION_BUDGET",
        ),
    )
    op.create_index(
        "ix_attribute_definitions_traffic",
        "attribute_definitions",
        ["app_id", "created_at", "scope"],
        postgresql_where=sa.text("origin = 'traffic'"),
    )
    op.create_index(
        "ix_event_definitions_traffic",
        "event_definitions",
        ["app_id", "created_at"],
        postgresql_where=sa.text("origin = 'traffic'"),
    )


def downgrade() -> None:
    op.drop_index("ix_event_definitions_traffic", table_name="event_definitions")
    op.drop_index("ix_attribute_definitions_traffic", table_name="attribute_definitions")
    op.drop_column("apps", "definition_budget")
