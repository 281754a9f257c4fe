"""the links of each edition, and readers' clicks on them (and opens, as position 0)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 18:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "edition_links",
        sa.Column("edition_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("url", sa.String(length=2048), nullable=False),
        sa.ForeignKeyConstraint(
            ["edition_id"], ["editions.id"], name="fk_edition_links_edition_id_editions", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("edition_id", "position", name="pk_edition_links"),
    )
    op.create_table(
        "clicks",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("edition_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("subscriber_id", sa.Integer(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_clicks"),
    )
    op.create_index("ix_clicks_edition_position", "clicks", ["edition_id", "position"], unique=False)
    op.create_index("ix_clicks_subscriber_id", "clicks", ["subscriber_id"], unique=False)
    op.create_index("ix_clicks_at", "clicks", ["at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_clicks_at", table_name="clicks")
    op.drop_index("ix_clicks_subscriber_id", table_name="clicks")
    op.drop_index("ix_clicks_edition_position", table_name="clicks")
    op.drop_table("clicks")
    op.drop_table("edition_links")
