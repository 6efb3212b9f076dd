"""The crash points of tests/crash with remote services: SIGKILL `saga book`, then resume."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
from conftest import SagaCli
from service_processes import Services, running_services
from support import BOOKING, COMPENSATED_AFTER, FAILURE_FOR, SERVICES

from saga_cli.faults import CrashPoint
from saga_cli.services.travel import all_crash_points

pytestmark = pytest.mark.slow

SIGKILL = -9


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory, migrated_template: Path
) -> Iterator[tuple[SagaCli, Services]]:
    """One saga log and three services for the whole matrix (it audits them at the end)."""
    directory = tmp_path_factory.mktemp("http-crash")
    with running_services(directory / "services", migrated_template) as services:
        saga = SagaCli(directory / "saga.db")
        assert saga("inventory", "--restock", "100", "--services", services.spec).code == 0
        yield saga, services


def events(db: Path, execution_id: str) -> list[tuple[str | None, str, int]]:
    with closing(sqlite3.connect(db, timeout=30)) as connection:
        return list(
            connection.execute(
                "SELECT step, type, attempt FROM saga_event WHERE saga_id=? ORDER BY seq",
                (execution_id,),
            )
        )


def statuses(services: Services, execution_id: str) -> dict[str, str]:
    """Service -> the status of the execution's reservation there."""
    found = {}
    for name in SERVICES:
        rows = services[name].reservations(execution_id)
        assert len(rows) <= 1, rows
        if rows:
            assert rows[0][0] == f"{execution_id}:{name}"
            found[name] = rows[0][2]
    return found


@pytest.mark.parametrize("point", all_crash_points(), ids=str)
def test_a_booking_with_remote_services_killed_at_a_crash_point_resumes_consistent(
    world: tuple[SagaCli, Services], point: CrashPoint
) -> None:
    saga, services = world
    fail = FAILURE_FOR[point.step] if point.compensation else ()

    crashed = saga("book", *BOOKING, "--crash-at", str(point), *fail, "--services", services.spec)

    assert crashed.code == SIGKILL, crashed
    with closing(sqlite3.connect(saga.db, timeout=30)) as connection:
        (execution_id,) = connection.execute(
            "SELECT id FROM saga_execution ORDER BY created_at DESC, id DESC LIMIT 1"
        ).fetchone()
    step, kind, _attempt = events(saga.db, execution_id)[-1]
    assert (step, kind) == (
        point.step,
        "compensation_started" if point.compensation else "step_started",
    )
    held = statuses(services, execution_id)
    if point.compensation:
        assert held[point.step] == ("canceled" if point.when == "after" else "pending")
    elif point.step in SERVICES:
        assert (point.step in held) == (point.when == "after")

    resumed = saga("resume", execution_id, "--services", services.spec, "--json")

    assert resumed.code == (3 if point.compensation else 0), resumed
    assert resumed.json()["status"] == ("compensated" if point.compensation else "completed")
    held = statuses(services, execution_id)
    if point.compensation:
        logged = events(saga.db, execution_id)
        compensated = [s for s, t, _a in logged if t == "compensation_succeeded"]
        assert compensated == COMPENSATED_AFTER[point.step]
        assert set(held.values()) == {"canceled"}
    else:
        assert held == {name: "confirmed" for name in SERVICES}


def test_after_the_matrix_the_log_and_the_remote_services_agree(
    world: tuple[SagaCli, Services],
) -> None:
    saga, services = world
    checked = saga("check", "--services", services.spec, "--json")
    assert checked.json() == {"consistent": True, "violations": []}, checked
    inventory = saga("inventory", "--services", services.spec, "--json").json()
    assert all(row["pending"] == 0 for row in inventory), json.dumps(inventory)
