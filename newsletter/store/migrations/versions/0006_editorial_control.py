"""editorial control: hidden, priority and pinned articles; merges the two heads

Revision ID: 0006
Revises: 0003, 0005
Create Date: 2026-12-01 16:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = ("0003", "0005")
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("articles") as batch:
        batch.add_column(sa.Column("hidden", sa.Boolean(), server_default=sa.text("false"), nullable=False))
        batch.add_column(sa.Column("priority", sa.Integer(), server_default=sa.text("0"), nullable=False))
        batch.add_column(sa.Column("pinned_for", sa.Date(), nullable=True))
        batch.add_column(
            sa.Column("edited_fields", sa.String(length=200), server_default=sa.text("''"), nullable=False)
        )
        batch.create_index("ix_articles_pinned_for", ["pinned_for"])


def downgrade() -> None:
    with op.batch_alter_table("articles") as batch:
        batch.drop_index("ix_articles_pinned_for")
        batch.drop_column("edited_fields")
        batch.drop_column("pinned_for")
        batch.drop_column("priority")
        batch.drop_column("hidden")
