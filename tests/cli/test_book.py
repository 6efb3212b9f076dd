"""`saga book`: exit codes, the compensation order and the --json shape."""

from __future__ import annotations

from typing import Any

from conftest import SagaCli
from support import BOOKING, HEX_ID, TRAVEL_STEPS, newest_execution_id


def event_types(show: dict[str, Any], *types: str) -> list[tuple[str, str | None]]:
    return [(e["type"], e["step"]) for e in show["events"] if e["type"] in types]


def test_book_completes_with_exit_0_and_prints_the_id_and_status(migrated: SagaCli) -> None:
    result = migrated("book", *BOOKING)

    assert result.code == 0, result
    assert "completed" in result.stdout
    match = HEX_ID.search(result.stdout)
    assert match, result.stdout
    assert match.group() == newest_execution_id(migrated.db)
    assert result.stderr == ""


def test_book_json_prints_id_saga_status_error_and_step_results(migrated: SagaCli) -> None:
    result = migrated("book", *BOOKING, "--customer", "ada", "--json")

    assert result.code == 0, result
    body = result.json()
    assert set(body) == {"id", "saga", "status", "error", "results"}
    assert HEX_ID.fullmatch(body["id"])
    assert body["saga"] == "travel-booking"
    assert body["status"] == "completed"
    assert body["error"] is None
    assert list(body["results"]) == TRAVEL_STEPS
    assert body["results"]["flight"]["resource"] == "FL100"
    assert body["results"]["car"]["resource"] == "ECONOMY"


def test_book_fail_car_exits_3_and_compensates_hotel_then_flight(migrated: SagaCli) -> None:
    result = migrated("book", *BOOKING, "--fail", "car", "--json")

    assert result.code == 3, result
    body = result.json()
    assert body["status"] == "compensated"
    assert "car" in body["error"]
    show = migrated("show", body["id"], "--json").json()
    assert event_types(show, "step_failed", "compensation_succeeded") == [
        ("step_failed", "car"),
        ("compensation_succeeded", "hotel"),
        ("compensation_succeeded", "flight"),
    ]
    assert show["events"][-1]["type"] == "saga_compensated"
    assert [(s["name"], s["status"]) for s in show["steps"]] == [
        ("flight", "compensated"),
        ("hotel", "compensated"),
        ("car", "failed"),
        ("payment", "not run"),
        ("confirm", "not run"),
        ("notify", "not run"),
    ]


def test_book_without_car_skips_the_car_step_and_completes(migrated: SagaCli) -> None:
    result = migrated("book", "--flight", "FL200", "--hotel", "PLAZA", "--json")

    assert result.code == 0, result
    assert result.json()["results"]["car"] == {"skipped": True}
    inventory = {(r["service"], r["resource"]): r for r in migrated("inventory", "--json").json()}
    assert inventory["flight", "FL200"]["confirmed"] == 1
    assert inventory["hotel", "PLAZA"]["confirmed"] == 1
    assert all(r["confirmed"] == 0 for (service, _), r in inventory.items() if service == "car")


def test_book_sold_out_car_compensates_with_exit_3(migrated: SagaCli) -> None:
    first = migrated("book", "--flight", "FL300", "--hotel", "HARBOUR", "--car", "SUV")
    second = migrated("book", "--flight", "FL300", "--hotel", "HARBOUR", "--car", "SUV", "--json")

    assert first.code == 0, first
    assert second.code == 3, second
    assert "no car availability for SUV" in second.json()["error"]


def test_book_fail_confirm_retries_then_ends_stuck_with_exit_4(migrated: SagaCli) -> None:
    result = migrated("book", *BOOKING, "--fail", "confirm", "--json")

    assert result.code == 4, result
    body = result.json()
    assert body["status"] == "stuck"
    show = migrated("show", body["id"], "--json").json()
    confirm = [s for s in show["steps"] if s["name"] == "confirm"][0]
    assert confirm["attempts"] == 10
    assert show["events"][-1]["type"] == "saga_stuck"
    assert not event_types(show, "compensation_started")
    listed = migrated("list", "--status", "stuck", "--json").json()
    assert [row["id"] for row in listed] == [body["id"]]
    assert listed[0]["interrupted"] is False
