"""each reader's own morning: how far an edition's release, zone by zone, has come

``editions.released_until`` is the instant up to which every zone's readers have their
deliveries; NULL (every existing edition) means the edition went to everyone at once.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01 21:15:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("editions", sa.Column("released_until", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("editions") as batch:
        batch.drop_column("released_until")
