"""deliveries outlive a removed subscriber, so past editions keep their counts

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 17:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

FK = "fk_deliveries_subscriber_id_subscribers"


def upgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_constraint(FK, type_="foreignkey")
        batch.alter_column("subscriber_id", existing_type=sa.Integer(), nullable=True)
        batch.create_foreign_key(FK, "subscribers", ["subscriber_id"], ["id"], ondelete="SET NULL")


def downgrade() -> None:
    op.execute("DELETE FROM deliveries WHERE subscriber_id IS NULL")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_constraint(FK, type_="foreignkey")
        batch.alter_column("subscriber_id", existing_type=sa.Integer(), nullable=False)
        batch.create_foreign_key(FK, "subscribers", ["subscriber_id"], ["id"], ondelete="CASCADE")
