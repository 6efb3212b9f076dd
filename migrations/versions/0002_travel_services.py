"""The demo travel services' own tables and their seeded catalogue.

Each service (flight, hotel, car) owns a resource table (capacity and what is
still available) and a reservation table keyed by the idempotency key. The
catalogue is small on purpose, cars the scarcest, so "no availability" happens
naturally in a demo (examples/travel_booking.py: five customers, two compact cars).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
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
    for service, rows in CATALOGUE.items():
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
        op.bulk_insert(
            resource,
            [{"code": c, "name": n, "capacity": cap, "available": cap} for c, n, cap in rows],
        )


def downgrade() -> None:
    for service in CATALOGUE:
        op.drop_index(f"ix_{service}_reservation_saga", f"{service}_reservation")
        op.drop_table(f"{service}_reservation")
        op.drop_table(f"{service}_resource")
