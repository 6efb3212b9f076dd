"""Definition versions and concurrency keys.

Each execution records the version (a hash of its steps' names and kinds) of
the definition it started with; ``saga_definition`` keeps each version's step
list and where its code came from, so a resume can say what changed and load
the module again. ``saga_key_lock`` holds one row per concurrency key in use:
the execution holding it runs, others with the same key wait or are refused.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("saga_execution") as batch:
        batch.add_column(sa.Column("definition_version", sa.String(64), nullable=True))
        batch.add_column(sa.Column("concurrency_key", sa.String(300), nullable=True))
    op.create_table(
        "saga_definition",
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("steps", sa.Text(), nullable=False),
        sa.Column("source", sa.Text(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("name", "version"),
    )
    op.create_table(
        "saga_key_lock",
        sa.Column("key", sa.String(300), primary_key=True),
        sa.Column(
            "execution_id", sa.String(32), sa.ForeignKey("saga_execution.id"), nullable=False
        ),
        sa.Column("acquired_at", sa.Float(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("saga_key_lock")
    op.drop_table("saga_definition")
    with op.batch_alter_table("saga_execution") as batch:
        batch.drop_column("concurrency_key")
        batch.drop_column("definition_version")
