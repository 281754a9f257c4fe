"""web attempts; subscriber events outlive a removed subscriber

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24 20:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_FK = "fk_subscriber_events_subscriber_id_subscribers"


def upgrade() -> None:
    op.create_table(
        "web_attempts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("client", sa.String(length=64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_web_attempts")),
    )
    with op.batch_alter_table("web_attempts", schema=None) as batch_op:
        batch_op.create_index("ix_web_attempts_kind_client_at", ["kind", "client", "at"], unique=False)
    with op.batch_alter_table("subscriber_events", schema=None) as batch_op:
        batch_op.drop_constraint(_FK, type_="foreignkey")
        batch_op.alter_column("subscriber_id", existing_type=sa.Integer(), nullable=True)
        batch_op.create_foreign_key(_FK, "subscribers", ["subscriber_id"], ["id"], ondelete="SET NULL")


def downgrade() -> None:
    op.execute("DELETE FROM subscriber_events WHERE subscriber_id IS NULL")
    with op.batch_alter_table("subscriber_events", schema=None) as batch_op:
        batch_op.drop_constraint(_FK, type_="foreignkey")
        batch_op.alter_column("subscriber_id", existing_type=sa.Integer(), nullable=False)
        batch_op.create_foreign_key(_FK, "subscribers", ["subscriber_id"], ["id"], ondelete="CASCADE")
    with op.batch_alter_table("web_attempts", schema=None) as batch_op:
        batch_op.drop_index("ix_web_attempts_kind_client_at")
    op.drop_table("web_attempts")
