"""`saga resume` (one id or --all) and `saga compensate` from the command line."""

from __future__ import annotations

from conftest import SagaCli
from support import BOOKING, assert_one_line_error, newest_execution_id, query


def crash(saga: SagaCli, point: str, *extra: str) -> str:
    """Book a trip that SIGKILLs itself at `point`; return the interrupted execution's id."""
    result = saga("book", *BOOKING, "--crash-at", point, *extra)
    assert result.code == -9, result
    return newest_execution_id(saga.db)


def event_count(saga: SagaCli, execution_id: str) -> int:
    rows = query(saga.db, "SELECT COUNT(*) FROM saga_event WHERE saga_id=?", (execution_id,))
    return int(str(rows[0][0]))


def test_resume_by_prefix_finishes_an_interrupted_booking_with_exit_0(migrated: SagaCli) -> None:
    execution_id = crash(migrated, "hotel:after")

    result = migrated("resume", execution_id[:10])

    assert result.code == 0, result
    assert "resumed from the log" in result.stdout
    assert f"{execution_id}  completed" in result.stdout
    show = migrated("show", execution_id, "--json").json()
    assert show["status"] == "completed"
    assert show["interrupted"] is False
    assert [e["type"] for e in show["events"]].count("saga_resumed") == 1


def test_resume_of_a_finished_execution_is_a_no_op(migrated: SagaCli) -> None:
    booked = migrated("book", *BOOKING, "--fail", "hotel", "--json")
    assert booked.code == 3, booked
    execution_id = booked.json()["id"]
    before = event_count(migrated, execution_id)

    result = migrated("resume", execution_id, "--json")

    assert result.code == 3, result
    assert result.json()["status"] == "compensated"
    assert event_count(migrated, execution_id) == before


def test_resume_all_json_reports_every_resumed_execution(migrated: SagaCli) -> None:
    forward = crash(migrated, "flight:after")
    backward = crash(migrated, "compensate-flight:before", "--fail", "hotel")

    result = migrated("resume", "--all", "--json")

    assert result.code == 0, result
    body = result.json()
    assert body["resumed"] == 2
    assert body["busy"] == []
    assert {(o["id"], o["status"]) for o in body["outcomes"]} == {
        (forward, "completed"),
        (backward, "compensated"),
    }
    again = migrated("resume", "--all")
    assert again.code == 0, again
    assert "Resumed 0 execution(s)" in again.stdout


def test_compensate_aborts_an_interrupted_booking_with_exit_3(migrated: SagaCli) -> None:
    execution_id = crash(migrated, "hotel:before")

    result = migrated("compensate", execution_id[:8], "--json")

    assert result.code == 3, result
    assert result.json()["status"] == "compensated"
    show = migrated("show", execution_id, "--json").json()
    compensated = [e["step"] for e in show["events"] if e["type"] == "compensation_succeeded"]
    assert compensated == ["hotel", "flight"]
    assert show["events"][-1]["type"] == "saga_compensated"
    assert migrated("check", "--json").json() == {"consistent": True, "violations": []}


def test_compensate_refuses_a_completed_execution_with_exit_2(migrated: SagaCli) -> None:
    booked = migrated("book", *BOOKING, "--json")
    execution_id = booked.json()["id"]
    before = event_count(migrated, execution_id)

    result = migrated("compensate", execution_id)

    assert_one_line_error(result, 2, "completed", "cannot be compensated")
    assert event_count(migrated, execution_id) == before


def test_compensate_refuses_an_execution_past_its_pivot_with_exit_2(migrated: SagaCli) -> None:
    execution_id = crash(migrated, "confirm:before")

    result = migrated("compensate", execution_id)

    assert_one_line_error(result, 2, "pivot", "saga resume")
    assert migrated("resume", execution_id).code == 0
