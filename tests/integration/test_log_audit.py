"""audit_log: every finished execution's history checked against its status, page by page."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from saga_cli import Orchestrator, Saga, StepContext
from saga_cli.audit import audit_log
from saga_cli.errors import BusinessError
from saga_cli.store import SagaStore

order = Saga("order")


@order.step()
def reserve(ctx: StepContext) -> None:
    if ctx.payload.get("refuse"):
        raise BusinessError("reserve refused")


@reserve.compensation
def release(ctx: StepContext) -> None:
    pass


@order.step(kind="pivot")
def ship(ctx: StepContext) -> None:
    pass


def test_every_execution_is_counted_and_every_page_audited(store: SagaStore, db_path: Path) -> None:
    with Orchestrator(store, [order]) as orchestrator:
        oldest = orchestrator.run(order, {"n": 0}).execution_id  # on the last page of 2
        for n in range(1, 5):
            orchestrator.run(order, {"n": n})
        orchestrator.run(order, {"refuse": True})
        orchestrator.submit(order, {"n": 5})

    clean = audit_log(store, page=2)
    with closing(sqlite3.connect(db_path)) as connection, connection:
        connection.execute(
            "DELETE FROM saga_event WHERE saga_id = ? AND step = 'ship'"
            " AND type = 'step_succeeded'",
            (oldest,),
        )
    tampered = audit_log(store, page=2)

    assert (clean.executions, clean.violations) == (7, [])
    assert tampered.violations == [
        f"completed execution {oldest} has step ship running, expected succeeded"
    ]
