"""a partial index of the deliveries that ended without being sent (failed, skipped)

An edition's status counts were one GROUP BY over all of its deliveries, each row read
from the table: 50 ms for 100,000 readers, paid by every send's summary, every zone's
release, ``status`` and each edition on the admin's list. With this index every count
comes from an index alone: the total from the unique (edition, subscriber) index, the
open ones from the partial pending and unsettled indexes, these from this one, and sent
is what is left. Marking a row sent (thousands a second) still touches no index.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-01 23:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

UNSENT = sa.text("status IN ('failed', 'skipped')")


def upgrade() -> None:
    op.create_index(
        "ix_deliveries_unsent",
        "deliveries",
        ["edition_id", "status"],
        unique=False,
        sqlite_where=UNSENT,
        postgresql_where=UNSENT,
    )


def downgrade() -> None:
    op.drop_index("ix_deliveries_unsent", table_name="deliveries")
