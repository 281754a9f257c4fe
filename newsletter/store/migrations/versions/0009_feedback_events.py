"""bounce and complaint reports as subscriber events: edition, DSN status, diagnostic, reference

The single-column index on subscriber_id gives way to (subscriber_id, event, at), which
serves the same lookups and the foreign key, so every event insert keeps one index less.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 10:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

FK = "fk_subscriber_events_edition_id_editions"


def upgrade() -> None:
    with op.batch_alter_table("subscriber_events", schema=None) as batch:
        batch.add_column(sa.Column("edition_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("status", sa.String(length=10), server_default=sa.text("''"), nullable=False))
        batch.add_column(sa.Column("detail", sa.String(length=300), server_default=sa.text("''"), nullable=False))
        batch.add_column(sa.Column("reference", sa.String(length=64), server_default=sa.text("''"), nullable=False))
        batch.create_foreign_key(FK, "editions", ["edition_id"], ["id"], ondelete="SET NULL")
        batch.drop_index("ix_subscriber_events_subscriber_id")
        batch.create_index("ix_subscriber_events_subscriber_event", ["subscriber_id", "event", "at"], unique=False)
        batch.create_index("ix_subscriber_events_edition_event", ["edition_id", "event"], unique=False)
        batch.create_index(
            "ix_subscriber_events_reference",
            ["subscriber_id", "reference"],
            unique=True,
            sqlite_where=sa.text("reference <> ''"),
            postgresql_where=sa.text("reference <> ''"),
        )


def downgrade() -> None:
    with op.batch_alter_table("subscriber_events", schema=None) as batch:
        batch.drop_index("ix_subscriber_events_reference")
        batch.drop_index("ix_subscriber_events_edition_event")
        batch.drop_index("ix_subscriber_events_subscriber_event")
        batch.create_index("ix_subscriber_events_subscriber_id", ["subscriber_id"], unique=False)
        batch.drop_constraint(FK, type_="foreignkey")
        batch.drop_column("reference")
        batch.drop_column("detail")
        batch.drop_column("status")
        batch.drop_column("edition_id")
