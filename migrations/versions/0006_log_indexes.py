"""An index for `saga list --saga` and `saga stats --saga`: (saga, created_at, id).

The other filters of issue #5 already have one: `--status` and `saga prune`
use (status, created_at, id), `--since`/`--until`, the list cursor and the
`stats` window use (created_at, id). Only the saga name lacked an index. Its
columns never change after the insert, so the ~10 updates a saga makes leave
it alone: it costs one index entry per execution and nothing on the hot
update path. An index on updated_at was left out on purpose (every
transition rewrites that column); ages are measured from created_at.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_saga_execution_saga_created", "saga_execution", ["saga", "created_at", "id"]
    )


def downgrade() -> None:
    op.drop_index("ix_saga_execution_saga_created", "saga_execution")
