"""The travel demo's own tables, created when the demo is first used (branch ``demo``).

The demo's services keep their state in the saga log's database, but the log
itself needs none of it: these tables come from this branch, applied through
``SagaStore.upgrade_branch("demo")`` the first time a demo service or circuit
breaker touches the log, so a log that only runs its user's own sagas holds
only the saga tables.

Each service (flight, hotel, car) owns a resource table (capacity and what is
still available) and a reservation table keyed by the idempotency key; the
catalogue is small on purpose, cars the scarcest, so "no availability"
happens naturally in a demo. The payment service (the saga's pivot) keeps
its charges, the notification service its outbox, and every process shares
each service's circuit-breaker state.

The tables are those revisions 0002-0004 created in every log. A log that
used the demo before revision 0008 keeps them, and 0008 records this branch
as applied there; a table is created here only where it is absent.

Revision ID: demo_0001
Revises:
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "demo_0001"
down_revision = None
branch_labels = ("demo",)
depends_on = None

CATALOGUE = {
    "flight": [
        ("FL100", "London -> New York", 8),
        ("FL200", "Paris -> Tokyo", 8),
        ("FL300", "Berlin -> Lisbon", 6),
    ],
    "hotel": [
        ("GRAND", "Grand Hotel, New York", 6),
        ("PLAZA", "Plaza, Tokyo", 6),
        ("HARBOUR", "Harbour Inn, Lisbon", 4),
    ],
    "car": [
        ("ECONOMY", "Economy car", 3),
        ("COMPACT", "Compact car", 2),
        ("SUV", "SUV", 1),
    ],
}


def upgrade() -> None:
    present = set(sa.inspect(op.get_bind()).get_table_names())
    for service, rows in CATALOGUE.items():
        if f"{service}_resource" not in present:
            resource = op.create_table(
                f"{service}_resource",
                sa.Column("code", sa.String(40), primary_key=True),
                sa.Column("name", sa.String(200), nullable=False),
                sa.Column("capacity", sa.Integer(), nullable=False),
                sa.Column("available", sa.Integer(), nullable=False),
                sa.CheckConstraint(
                    "available >= 0 AND available <= capacity", name=f"ck_{service}_available"
                ),
            )
            op.bulk_insert(
                resource,
                [{"code": c, "name": n, "capacity": cap, "available": cap} for c, n, cap in rows],
            )
        if f"{service}_reservation" not in present:
            op.create_table(
                f"{service}_reservation",
                sa.Column("key", sa.String(200), primary_key=True),
                sa.Column("saga_id", sa.String(32), nullable=False),
                sa.Column("resource", sa.String(40), nullable=True),
                sa.Column("customer", sa.String(200), nullable=True),
                sa.Column("status", sa.String(20), nullable=False),
                sa.Column("created_at", sa.Float(), nullable=False),
                sa.Column("updated_at", sa.Float(), nullable=False),
            )
            op.create_index(f"ix_{service}_reservation_saga", f"{service}_reservation", ["saga_id"])
    if "payment_charge" not in present:
        op.create_table(
            "payment_charge",
            sa.Column("key", sa.String(200), primary_key=True),
            sa.Column("saga_id", sa.String(32), nullable=False),
            sa.Column("customer", sa.String(200), nullable=False),
            sa.Column("amount", sa.Integer(), nullable=False),
            sa.Column("created_at", sa.Float(), nullable=False),
        )
    if "notification_outbox" not in present:
        op.create_table(
            "notification_outbox",
            sa.Column("key", sa.String(200), primary_key=True),
            sa.Column("saga_id", sa.String(32), nullable=False),
            sa.Column("customer", sa.String(200), nullable=False),
            sa.Column("message", sa.Text(), nullable=False),
            sa.Column("created_at", sa.Float(), nullable=False),
        )
    if "circuit_breaker" not in present:
        op.create_table(
            "circuit_breaker",
            sa.Column("service", sa.String(100), primary_key=True),
            sa.Column("state", sa.String(20), nullable=False),
            sa.Column("failures", sa.Integer(), nullable=False),
            sa.Column("opened_at", sa.Float(), nullable=True),
            sa.Column("last_error", sa.Text(), nullable=True),
            sa.Column("updated_at", sa.Float(), nullable=False),
        )


def downgrade() -> None:
    op.drop_table("circuit_breaker")
    op.drop_table("notification_outbox")
    op.drop_table("payment_charge")
    for service in CATALOGUE:
        op.drop_index(f"ix_{service}_reservation_saga", f"{service}_reservation")
        op.drop_table(f"{service}_reservation")
        op.drop_table(f"{service}_resource")
