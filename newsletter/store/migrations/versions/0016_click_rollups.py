"""each edition's and each link's click figures kept as rollups; a reader's clicks indexed by edition and link

``newsletter report`` and the admin's charts counted distinct readers from the raw
clicks: every click and open of every edition shown, 2.2 s for the last 30 editions of a
list of a million with opens tracked. ``clicks_by_edition`` (readers who clicked, clicks,
readers who opened) and ``clicks_by_link`` (readers and clicks per link) hold those
figures, a row per edition and per link. ``store.clicks.record_clicks`` adds each batch
to them in the batch's own transaction and ``forget_clicks_of`` takes a removed reader
out of them, so they always equal a count of the raw rows; here they are filled from the
clicks recorded so far.

Knowing whether a batch's readers had clicked before is a look-up by reader and edition:
the index of a reader's clicks gains the edition and the position (it still serves
making a removed reader's clicks anonymous).

The clicks table is locked against writes while the rollups are filled (on PostgreSQL;
SQLite's migration holds the whole database), so no click is missed or counted twice.
Stop the web processes before upgrading, as for any migration: one still running the
code from before would write clicks without adding them to the rollups.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-01 23:45:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("LOCK TABLE clicks IN SHARE MODE")
    op.create_table(
        "clicks_by_edition",
        sa.Column("edition_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("clickers", sa.Integer(), nullable=False),
        sa.Column("clicks", sa.Integer(), nullable=False),
        sa.Column("openers", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("edition_id", name="pk_clicks_by_edition"),
    )
    op.create_table(
        "clicks_by_link",
        sa.Column("edition_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("position", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("readers", sa.Integer(), nullable=False),
        sa.Column("clicks", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("edition_id", "position", name="pk_clicks_by_link"),
    )
    op.create_index("ix_clicks_subscriber_edition", "clicks", ["subscriber_id", "edition_id", "position"], unique=False)
    op.drop_index("ix_clicks_subscriber_id", table_name="clicks")
    # Opens are position 0, links from 1; a click whose reader was removed (NULL) counts
    # in the clicks, never among the readers.
    op.execute(
        """INSERT INTO clicks_by_edition (edition_id, clickers, clicks, openers)
           SELECT edition_id,
                  COUNT(DISTINCT CASE WHEN position > 0 THEN subscriber_id END),
                  COALESCE(SUM(CASE WHEN position > 0 THEN 1 ELSE 0 END), 0),
                  COUNT(DISTINCT CASE WHEN position = 0 THEN subscriber_id END)
           FROM clicks GROUP BY edition_id"""
    )
    op.execute(
        """INSERT INTO clicks_by_link (edition_id, position, readers, clicks)
           SELECT edition_id, position, COUNT(DISTINCT subscriber_id), COUNT(*)
           FROM clicks WHERE position > 0 GROUP BY edition_id, position"""
    )


def downgrade() -> None:
    op.create_index("ix_clicks_subscriber_id", "clicks", ["subscriber_id"], unique=False)
    op.drop_index("ix_clicks_subscriber_edition", table_name="clicks")
    op.drop_table("clicks_by_link")
    op.drop_table("clicks_by_edition")
