"""indexes for the report and the charts: subscribers by when they joined, confirmed and left; clicks by reader

``newsletter report`` and the admin overview count, per day, the readers who joined,
confirmed or unsubscribed in the last months, and per edition the distinct readers who
clicked: on a list of a million readers these read an index range instead of the table.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01 19:00:00
"""

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_subscribers_created_at", "subscribers", ["created_at"], unique=False)
    op.create_index("ix_subscribers_confirmed_at", "subscribers", ["confirmed_at"], unique=False)
    op.create_index("ix_subscribers_unsubscribed_at", "subscribers", ["unsubscribed_at"], unique=False)
    op.create_index(
        "ix_clicks_edition_position_subscriber", "clicks", ["edition_id", "position", "subscriber_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_clicks_edition_position_subscriber", table_name="clicks")
    op.drop_index("ix_subscribers_unsubscribed_at", table_name="subscribers")
    op.drop_index("ix_subscribers_confirmed_at", table_name="subscribers")
    op.drop_index("ix_subscribers_created_at", table_name="subscribers")
