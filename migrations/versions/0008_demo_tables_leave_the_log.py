"""The travel demo's tables leave the saga log for the demo's own branch (issue #12).

Revisions 0002-0004 put the demo services' tables (flight, hotel and car
resources and reservations, payment charges, the notification outbox and the
circuit breakers) in every saga log, even one that only ever runs its user's
own sagas. They now come from the ``demo`` branch (revision demo_0001), which
the demo applies when it is first used.

On a log where the demo was never used (those tables empty, the catalogue as
0002 seeded it) this revision drops them. On one where it was, it leaves them
and their rows as they are and records the demo branch as applied, so the
branch never creates them twice. Revisions are append-only, so 0002-0004 stay:
a new log still creates the demo's tables, then drops them here.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import context, op

revision = "0008"
down_revision = "0007"
# The saga log's own line (0001 on) is upgraded as "saga@head" now that the
# scripts have a second head, the demo's.
branch_labels = ("saga",)
depends_on = None

DEMO_REVISION = "demo_0001"
# As 0002 seeded it: code -> (name, capacity), every unit available.
CATALOGUE = {
    "flight": {
        "FL100": ("London -> New York", 8),
        "FL200": ("Paris -> Tokyo", 8),
        "FL300": ("Berlin -> Lisbon", 6),
    },
    "hotel": {
        "GRAND": ("Grand Hotel, New York", 6),
        "PLAZA": ("Plaza, Tokyo", 6),
        "HARBOUR": ("Harbour Inn, Lisbon", 4),
    },
    "car": {
        "ECONOMY": ("Economy car", 3),
        "COMPACT": ("Compact car", 2),
        "SUV": ("SUV", 1),
    },
}
RECORD_TABLES = [
    *(f"{service}_reservation" for service in CATALOGUE),
    "payment_charge",
    "notification_outbox",
    "circuit_breaker",
]
RESOURCE_TABLES = [f"{service}_resource" for service in CATALOGUE]


def upgrade() -> None:
    bind = op.get_bind()
    version_table = op.get_context().version_table
    applied = {row[0] for row in bind.execute(sa.text(f"SELECT version_num FROM {version_table}"))}
    if DEMO_REVISION in applied:
        return  # the demo branch ran first (an upgrade to every head by hand)
    present = set(sa.inspect(bind).get_table_names())
    tables = [t for t in RECORD_TABLES + RESOURCE_TABLES if t in present]
    if not tables:
        return
    if _used(bind, present):
        bind.execute(
            sa.text(f"INSERT INTO {version_table} (version_num) VALUES (:revision)"),
            {"revision": DEMO_REVISION},
        )
        return
    for table in tables:
        op.drop_table(table)


def _used(bind: sa.Connection, present: set[str]) -> bool:
    """Whether the demo ever ran on this log: any record, or a catalogue changed since 0002."""
    for table in RECORD_TABLES:
        if table in present and bind.execute(sa.text(f"SELECT 1 FROM {table} LIMIT 1")).first():
            return True
    for service, seeded in CATALOGUE.items():
        table = f"{service}_resource"
        if table not in present:
            continue
        rows = bind.execute(sa.text(f"SELECT code, name, capacity, available FROM {table}"))
        found = {code: (name, capacity, available) for code, name, capacity, available in rows}
        if found != {code: (name, cap, cap) for code, (name, cap) in seeded.items()}:
            return True
    return False


def downgrade() -> None:
    bind = op.get_bind()
    version_table = op.get_context().version_table
    bind.execute(
        sa.text(f"DELETE FROM {version_table} WHERE version_num = :revision"),
        {"revision": DEMO_REVISION},
    )
    # At 0007 every log has the demo's tables. Those this revision dropped
    # (or demo_0001's downgrade, which runs first) are made again, by the
    # revision that makes them on first use: it creates only absent ones.
    script = context.script.get_revision(DEMO_REVISION)
    assert script is not None
    script.module.upgrade()
