"""The worker registry: one row per `saga worker` process (issue #6).

A worker upserts its row on every heartbeat and deletes it when it exits
cleanly; `saga workers` lists the rows, marking as stale those whose
heartbeat is older than their lease. `id` is the owner id the worker writes
into the executions it holds, so its executions are found by joining on
``saga_execution.owner``. `sagas` is a JSON list of the saga names it takes,
or NULL for every saga it has loaded. Plain types only, so the same revision
runs on PostgreSQL.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "saga_worker",
        sa.Column("id", sa.String(300), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("heartbeat_at", sa.Float(), nullable=False),
        sa.Column("concurrency", sa.Integer(), nullable=False),
        sa.Column("lease_seconds", sa.Float(), nullable=False),
        sa.Column("sagas", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    op.drop_table("saga_worker")
