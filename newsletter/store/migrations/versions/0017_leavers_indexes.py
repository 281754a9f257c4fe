"""partial indexes of the readers who unsubscribed and who bounced, for the list's history

The admin's overview charts the list over 90 days, and counts the readers who left in
those days. Readers who unsubscribed were read through the status index: SQLite took all
120,000 unsubscribed rows of a list of a million, then their dates from the table.
Readers who bounced were all 50,000 read from the table to keep those updated in the
window. Each partial index holds only its status's rows, by the time that dates them,
with what the count needs (``confirmed_at``, and the id that finds a bounced reader's
latest "bounced" event), so each count reads an index range alone. The index of
``unsubscribed_at`` over every row had no other reader and goes.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-02 00:15:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

UNSUBSCRIBED = sa.text("status = 'unsubscribed'")
BOUNCED = sa.text("status = 'bounced'")


def upgrade() -> None:
    op.create_index(
        "ix_subscribers_unsubscribed",
        "subscribers",
        ["unsubscribed_at", "confirmed_at"],
        unique=False,
        sqlite_where=UNSUBSCRIBED,
        postgresql_where=UNSUBSCRIBED,
    )
    op.create_index(
        "ix_subscribers_bounced",
        "subscribers",
        ["updated_at", "confirmed_at", "id"],
        unique=False,
        sqlite_where=BOUNCED,
        postgresql_where=BOUNCED,
    )
    op.drop_index("ix_subscribers_unsubscribed_at", table_name="subscribers")


def downgrade() -> None:
    op.create_index("ix_subscribers_unsubscribed_at", "subscribers", ["unsubscribed_at"], unique=False)
    op.drop_index("ix_subscribers_bounced", table_name="subscribers")
    op.drop_index("ix_subscribers_unsubscribed", table_name="subscribers")
