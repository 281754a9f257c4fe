"""editions preflight held back from the scheduler, and whether the staff were told

One row per held edition: a digest of the version held, the findings, and the notice's
state. No existing edition is held.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02 09:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "preflight_holds",
        sa.Column("edition_id", sa.Integer(), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("findings", sa.Text(), nullable=False),
        sa.Column("held_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("notified_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("notice_error", sa.String(length=500), server_default=sa.text("''"), nullable=False),
        sa.ForeignKeyConstraint(
            ["edition_id"], ["editions.id"], name="fk_preflight_holds_edition_id_editions", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("edition_id", name="pk_preflight_holds"),
    )


def downgrade() -> None:
    op.drop_table("preflight_holds")
