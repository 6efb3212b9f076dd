"""The demo's payment service (the saga's pivot) and its notification outbox.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "payment_charge",
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("saga_id", sa.String(32), nullable=False),
        sa.Column("customer", sa.String(200), nullable=False),
        sa.Column("amount", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
    )
    op.create_table(
        "notification_outbox",
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("saga_id", sa.String(32), nullable=False),
        sa.Column("customer", sa.String(200), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("notification_outbox")
    op.drop_table("payment_charge")
