"""each reader's own morning: an optional time zone per subscriber, and an index by status and zone

``subscribers.timezone`` holds an IANA name, or "" for the newsroom's zone (not NULL, so
every existing reader gets "" and grouping by zone needs no COALESCE). The index on
(status, timezone, id) lets the send count active readers per zone, and make one
zone's deliveries in id order, from the index alone.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05 10:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A plain ALTER TABLE on both databases: a batch operation would copy the whole table
    # on SQLite (a million readers) and drop its AUTOINCREMENT on the way.
    op.add_column(
        "subscribers", sa.Column("timezone", sa.String(length=64), server_default=sa.text("''"), nullable=False)
    )
    op.create_index("ix_subscribers_status_timezone", "subscribers", ["status", "timezone", "id"], unique=False)


def downgrade() -> None:
    # Dropping a column copies the table on SQLite: it must keep AUTOINCREMENT, or ids
    # signed into old unsubscribe links could be given to new readers.
    with op.batch_alter_table("subscribers", table_kwargs={"sqlite_autoincrement": True}) as batch:
        batch.drop_index("ix_subscribers_status_timezone")
        batch.drop_column("timezone")
