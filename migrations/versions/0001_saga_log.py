"""The saga log: executions and their append-only events.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "saga_execution",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("saga", sa.String(200), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("step", sa.String(200), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.Column("owner", sa.String(300), nullable=True),
        sa.Column("lease_expires_at", sa.Float(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
    )
    op.create_index("ix_saga_execution_created", "saga_execution", ["created_at", "id"])
    op.create_index(
        "ix_saga_execution_status_created", "saga_execution", ["status", "created_at", "id"]
    )
    op.create_table(
        "saga_event",
        sa.Column("saga_id", sa.String(32), sa.ForeignKey("saga_execution.id"), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("step", sa.String(200), nullable=True),
        sa.Column("type", sa.String(40), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("saga_id", "seq"),
    )


def downgrade() -> None:
    op.drop_table("saga_event")
    op.drop_index("ix_saga_execution_status_created", "saga_execution")
    op.drop_index("ix_saga_execution_created", "saga_execution")
    op.drop_table("saga_execution")
