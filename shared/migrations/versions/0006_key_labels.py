"""API key labels: what a key is for (`userdest keys create --label`), shown by `keys list`.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "api_keys",
        sa.Column(
            "label",
            sa.String(length=200),
            nullable=True,
            comment="what the key is for, as the operator named it",
        ),
    )


def downgrade() -> None:
    op.drop_column("api_keys", "label")
