"""The `number` attribute type: integral values stored as integers.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_OLD = "'string','integer','float','boolean','date','datetime','fixed','json'"
_NEW = "'string','integer','float','number','boolean','date','datetime','fixed','json'"


def upgrade() -> None:
    op.drop_constraint(
        op.f("ck_attribute_definitions_type"), "attribute_definitions", type_="check"
    )
    op.create_check_constraint(
        op.f("ck_attribute_definitions_type"), "attribute_definitions", f"type in ({_NEW})"
    )


def downgrade() -> None:
    op.execute("UPDATE attribute_definitions SET type = 'float' WHERE type = 'number'")
    op.drop_constraint(
        op.f("ck_attribute_definitions_type"), "attribute_definitions", type_="check"
    )
    op.create_check_constraint(
        op.f("ck_attribute_definitions_type"), "attribute_definitions", f"type in ({_OLD})"
    )
