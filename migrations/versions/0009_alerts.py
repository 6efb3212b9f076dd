"""The alert outbox: one row per alert, written in the transaction of the event behind it (#14).

An execution that becomes stuck, misses its deadline, or whose compensation
fails its Nth attempt gets a row here in the same commit as that event, so
an alert exists exactly when its cause does, whatever crashes next. Sinks
(a webhook, a command) are then sent every pending row, at least once:
`id` (``<execution id>:<event seq>``) is the idempotency key a sink sees.

Delivery state lives on the row: `delivered_to` (a JSON list of the sinks
that took it), `attempts`, `last_error`, and `next_attempt_at`, which a
deliverer also pushes ahead while it sends (a lease, so two processes do not
send one alert at once); `delivered_at` is set once every sink took it.
There is no foreign key to the execution: an alert outlives a pruned one.
Plain types only, so the same revision runs on PostgreSQL.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "saga_alert",
        sa.Column("id", sa.String(100), nullable=False),
        sa.Column("execution_id", sa.String(32), nullable=False),
        sa.Column("saga", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("step", sa.String(200), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.Float(), nullable=False),
        sa.Column("delivered_at", sa.Float(), nullable=True),
        sa.Column("delivered_to", sa.Text(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    # Deliverers look for undelivered rows that are due; `saga alerts` lists newest first.
    op.create_index("ix_saga_alert_due", "saga_alert", ["delivered_at", "next_attempt_at"])
    op.create_index("ix_saga_alert_created", "saga_alert", ["created_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_saga_alert_created", "saga_alert")
    op.drop_index("ix_saga_alert_due", "saga_alert")
    op.drop_table("saga_alert")
