"""SIGKILL `saga book` at every crash point, then `saga resume`: each booking ends consistent."""

from __future__ import annotations

import pytest
from conftest import SagaCli
from support import BOOKING, COMPENSATED_AFTER, FAILURE_FOR, TRAVEL_STEPS

from saga_cli.faults import CrashPoint
from saga_cli.services.travel import all_crash_points

from .logdb import (
    LogDb,
    assert_capacity_conserved,
    assert_log_well_formed,
    assert_terminal_and_consistent,
)

pytestmark = pytest.mark.slow

BOOKED = (("flight", "FL100"), ("hotel", "GRAND"), ("car", "ECONOMY"))
SIGKILL = -9
REACHABLE = all_crash_points()


def test_every_crash_point_is_covered_here() -> None:
    points = {str(p) for p in all_crash_points()}

    assert points == {str(p) for p in REACHABLE}
    assert set(FAILURE_FOR) == {p.step for p in REACHABLE if p.compensation}
    assert len(points) == 18


def crash_booking(saga: SagaCli, point: CrashPoint | str, *extra: str) -> str:
    """Run `saga book --crash-at POINT`, check it died by SIGKILL, return the execution id."""
    result = saga("book", *BOOKING, "--crash-at", str(point), *extra)
    assert result.code == SIGKILL, result
    return LogDb(saga.db).newest_id()


def assert_crashed_where_expected(db: LogDb, execution_id: str, point: CrashPoint) -> None:
    """Check the log and the services right after the crash.

    The log's last record is the `started` of the crash point, with no outcome
    after it; the service shows whether the call happened (`after`) or not (`before`).
    """
    events = db.events(execution_id)
    last = events[-1]
    started = "compensation_started" if point.compensation else "step_started"
    outcomes = (
        ("compensation_succeeded", "compensation_failed")
        if point.compensation
        else ("step_succeeded", "step_failed")
    )
    assert (last.type, last.step, last.attempt) == (started, point.step, 1)
    assert not [e for e in events if e.step == point.step and e.type in outcomes]
    reservations = {r.service: r for r in db.reservations(execution_id)}
    if point.step in ("payment", "notify"):
        table = "payment_charge" if point.step == "payment" else "notification_outbox"
        rows = db.rows(f"SELECT key FROM {table} WHERE saga_id=?", (execution_id,))
        assert rows == ([(f"{execution_id}:{point.step}",)] if point.when == "after" else [])
        want = "confirmed" if point.step == "notify" else "pending"
        assert {r.status for r in reservations.values()} == {want}
    elif point.step == "confirm":
        want = "confirmed" if point.when == "after" else "pending"
        assert {r.status for r in reservations.values()} == {want}
        assert set(reservations) == {"flight", "hotel", "car"}
    elif point.compensation:
        target = reservations[point.step]
        assert target.status == ("canceled" if point.when == "after" else "pending")
    elif point.when == "before":
        assert point.step not in reservations
    else:
        assert reservations[point.step].status == "pending"
        assert reservations[point.step].key == f"{execution_id}:{point.step}"


@pytest.mark.parametrize("point", REACHABLE, ids=str)
def test_a_booking_killed_at_a_crash_point_is_resumed_to_a_consistent_end(
    migrated: SagaCli, point: CrashPoint
) -> None:
    fail = FAILURE_FOR[point.step] if point.compensation else ()
    db = LogDb(migrated.db)
    capacity = db.capacity()
    execution_id = crash_booking(migrated, point, *fail)

    assert_crashed_where_expected(db, execution_id, point)
    assert_capacity_conserved(db)
    shown = migrated("show", execution_id[:12], "--json").json()
    assert shown["interrupted"] is True

    resumed = migrated("resume", execution_id[:12])

    assert resumed.code == (3 if point.compensation else 0), resumed
    status = assert_terminal_and_consistent(db, execution_id)
    events = db.events(execution_id)
    assert [e.type for e in events].count("saga_resumed") == 1
    if point.compensation:
        assert status == "compensated"
        compensated = [e.step for e in events if e.type == "compensation_succeeded"]
        assert compensated == COMPENSATED_AFTER[point.step]
        assert db.capacity() == capacity
        if point.step != "car":
            assert "car" not in {r.service for r in db.reservations(execution_id)}
    else:
        assert status == "completed"
        assert [e.step for e in events if e.type == "step_succeeded"] == TRAVEL_STEPS
        after = db.capacity()
        for resource in BOOKED:
            total, available, pending, confirmed = capacity[resource]
            assert after[resource] == (total, available - 1, 0, 1), resource
    assert_capacity_conserved(db)
    assert migrated("check", "--json").json() == {"consistent": True, "violations": []}


def test_saga_compensate_is_refused_once_past_the_pivot(
    migrated: SagaCli,
) -> None:
    db = LogDb(migrated.db)
    execution_id = crash_booking(migrated, "confirm:before")
    before = db.events(execution_id)

    refused = migrated("compensate", execution_id)

    assert refused.code == 2, refused
    assert refused.stderr.startswith("Error: ") and "pivot" in refused.stderr
    assert db.events(execution_id) == before
    assert migrated("resume", execution_id).code == 0
    assert assert_terminal_and_consistent(db, execution_id) == "completed"


@pytest.mark.parametrize("point", ["car:before", "car:after"])
def test_saga_compensate_after_a_crash_inside_car_cancels_car_hotel_flight(
    migrated: SagaCli, point: str
) -> None:
    db = LogDb(migrated.db)
    capacity = db.capacity()
    execution_id = crash_booking(migrated, point)

    result = migrated("compensate", execution_id)

    assert result.code == 3, result
    events = db.events(execution_id)
    assert [e.type for e in events].count("compensation_requested") == 1
    assert [e.step for e in events if e.type == "compensation_succeeded"] == [
        "car",
        "hotel",
        "flight",
    ]
    assert_terminal_and_consistent(db, execution_id)
    car = db.reservation(execution_id, "car")
    assert car is not None and car.status == "canceled"
    if point == "car:before":
        assert car.resource is None  # a tombstone: a late reserve would be refused
    assert db.capacity() == capacity
    assert migrated("check", "--json").json()["consistent"] is True


def test_resume_all_finishes_executions_killed_at_different_points(migrated: SagaCli) -> None:
    db = LogDb(migrated.db)
    assert migrated("inventory", "--restock", "20").code == 0  # no booking may sell out
    crashed = {
        crash_booking(migrated, "flight:after"): "completed",
        crash_booking(migrated, "car:before"): "completed",
        crash_booking(migrated, "confirm:after"): "completed",
        crash_booking(migrated, "compensate-flight:before", "--fail", "hotel"): "compensated",
        crash_booking(migrated, "compensate-hotel:after", "--fail", "car"): "compensated",
    }
    finished = migrated("book", *BOOKING, "--json").json()["id"]

    result = migrated("resume", "--all", "--json")

    assert result.code == 0, result
    body = result.json()
    assert body["busy"] == []
    assert {o["id"]: o["status"] for o in body["outcomes"]} == crashed
    assert finished not in {o["id"] for o in body["outcomes"]}
    for execution_id, status in crashed.items():
        assert assert_terminal_and_consistent(db, execution_id) == status
    assert_log_well_formed(db, finished)
    assert_capacity_conserved(db)
    assert migrated("check", "--json").json()["consistent"] is True
    again = migrated("resume", "--all", "--json").json()
    assert (again["resumed"], again["busy"]) == (0, [])
