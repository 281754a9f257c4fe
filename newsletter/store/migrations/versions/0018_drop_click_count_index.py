"""the index that covered counting clicks goes: the counts come from the rollups now

``ix_clicks_edition_position_subscriber`` (migration 0011) let the report count each
edition's and each link's unique readers from the index alone. Since migration 0016 the
report reads ``clicks_by_edition`` and ``clicks_by_link`` instead, and nothing reads the
index, yet every click recorded had to be inserted into it: 510 MB at 17 million clicks,
one index fewer to write for each batch the click endpoint records (a batch of 170, a
second of 10,000 clicks a minute, goes from about 17 to 16 ms on PostgreSQL at a million
readers).

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-02 00:30:00
"""

from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_clicks_edition_position_subscriber", table_name="clicks")


def downgrade() -> None:
    op.create_index(
        "ix_clicks_edition_position_subscriber", "clicks", ["edition_id", "position", "subscriber_id"], unique=False
    )
