"""Retries, stuck executions, outages and manual resolution, through the real CLI."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from typing import Any

import pytest
from conftest import SagaCli
from support import BOOKING, assert_consistent, show_json


def _steps(saga: SagaCli, execution_id: str) -> dict[str, dict[str, Any]]:
    return {step["name"]: step for step in show_json(saga, execution_id)["steps"]}


def test_a_flaky_step_is_retried_with_its_attempts_in_the_log(saga: SagaCli) -> None:
    booked = saga("book", *BOOKING, "--flaky", "hotel:2", "--json")
    assert booked.code == 0, booked.stderr
    execution = booked.json()["id"]
    assert _steps(saga, execution)["hotel"]["attempts"] == 3
    failures = [e for e in show_json(saga, execution)["events"] if e["type"] == "step_failed"]
    assert [e["attempt"] for e in failures] == [1, 2]
    assert all(e["detail"]["retry_at"] >= e["at"] for e in failures)
    assert_consistent(saga)


def test_a_step_that_stays_flaky_past_its_budget_is_compensated_too(saga: SagaCli) -> None:
    booked = saga("book", *BOOKING, "--flaky", "hotel:9", "--json")
    assert booked.code == 3, booked.stderr
    steps = _steps(saga, booked.json()["id"])
    assert steps["hotel"]["attempts"] == 4
    # its outcome is unknown, so the hotel is compensated as well as the flight
    assert steps["hotel"]["status"] == "compensated"
    assert steps["flight"]["status"] == "compensated"
    assert_consistent(saga)


def test_a_compensation_that_fails_once_is_retried(saga: SagaCli) -> None:
    booked = saga("book", *BOOKING, "--fail", "car", "--fail-compensation", "flight:1", "--json")
    assert booked.code == 3, booked.stderr
    steps = _steps(saga, booked.json()["id"])
    assert steps["flight"]["compensation_attempts"] == 2
    assert steps["flight"]["status"] == "compensated"
    assert_consistent(saga)


def test_a_compensation_that_always_fails_leaves_the_execution_stuck_until_resumed(
    saga: SagaCli,
) -> None:
    booked = saga(
        "book", *BOOKING, "--fail", "car", "--fail-compensation", "hotel:always", "--json"
    )
    assert booked.code == 4, booked.stderr
    execution = booked.json()["id"]
    stuck = saga("list", "--status", "stuck", "--json").json()
    assert [row["id"] for row in stuck] == [execution]
    assert stuck[0]["interrupted"] is False  # parked for an operator, not interrupted
    events = show_json(saga, execution)["events"]
    assert events[-1]["type"] == "saga_stuck"
    assert "gave up after 5 attempt(s)" in events[-1]["detail"]["error"]
    # resume --all leaves it to an operator; five failures in a row opened the
    # hotel's breaker, so the operator closes it, then resume ID succeeds
    assert saga("resume", "--all", "--json").json()["resumed"] == 0
    assert saga("services", "--reset", "hotel").code == 0
    resumed = saga("resume", execution[:8])
    assert resumed.code == 3, resumed.stderr
    assert show_json(saga, execution)["status"] == "compensated"
    assert_consistent(saga)


def test_an_outage_opens_the_breaker_and_ends_stuck_until_the_service_is_back(
    saga: SagaCli,
) -> None:
    booked = saga("book", *BOOKING, "--outage", "hotel", "--json")
    assert booked.code == 4, booked.stderr
    execution = booked.json()["id"]
    shown = {row["service"]: row for row in saga("services", "--json").json()}
    assert shown["hotel"]["breaker"] == "open"
    assert shown["hotel"]["consecutive_failures"] >= 5
    assert "unreachable" in shown["hotel"]["last_error"]
    assert {shown[s]["breaker"] for s in ("flight", "car", "payment", "notification")} == {"closed"}
    # while open, the hotel's compensation was not even sent: it failed fast
    # and waited out the cool-down before its next attempt
    failures = [
        e for e in show_json(saga, execution)["events"] if e["type"] == "compensation_failed"
    ]
    assert any("circuit open" in e["detail"]["error"] for e in failures)
    # the operator knows the hotel is back: close its breaker, then resume
    reset = saga("services", "--reset", "hotel", "--json")
    assert {r["service"]: r["breaker"] for r in reset.json()}["hotel"] == "closed"
    resumed = saga("resume", execution)
    assert resumed.code == 3, resumed.stderr
    with closing(sqlite3.connect(saga.db)) as db:
        rows = db.execute(
            "SELECT resource, status FROM hotel_reservation WHERE saga_id = ?", (execution,)
        ).fetchall()
    assert rows == [(None, "canceled")]  # the hotel never reserved: a tombstone
    assert_consistent(saga)


def test_resolve_closes_a_stuck_execution_with_the_note_in_the_log(saga: SagaCli) -> None:
    booked = saga(
        "book", *BOOKING, "--fail", "car", "--fail-compensation", "hotel:always", "--json"
    )
    assert booked.code == 4
    execution = booked.json()["id"]
    resolved = saga("resolve", execution[:6], "--note", "hotel cancelled by phone")
    assert resolved.code == 0, resolved.stderr
    shown = show_json(saga, execution)
    assert shown["status"] == "compensated"
    assert shown["events"][-1]["type"] == "saga_resolved"
    assert shown["events"][-1]["detail"]["note"] == "hotel cancelled by phone"
    # the hotel really is still held, and check says so: a resolution is a claim
    check = saga("check", "--json")
    assert check.code == 1
    assert any("pending hotel" in v for v in check.json()["violations"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--note", "x"), "only a stuck execution"),
        (("--note", "  "), "needs a note"),
    ],
)
def test_resolve_refuses_what_it_cannot_resolve(
    saga: SagaCli, args: tuple[str, ...], message: str
) -> None:
    booked = saga("book", *BOOKING, "--json")
    assert booked.code == 0
    before = saga("list", "--json").stdout
    refused = saga("resolve", booked.json()["id"], *args)
    assert refused.code == 2
    assert refused.stderr.startswith("Error: ") and message in refused.stderr
    assert refused.stderr.count("\n") == 1
    assert saga("list", "--json").stdout == before


def test_a_slow_step_takes_at_least_its_delay(saga: SagaCli) -> None:
    booked = saga("book", *BOOKING, "--slow", "car:0.2", "--json")
    assert booked.code == 0, booked.stderr
    assert _steps(saga, booked.json()["id"])["car"]["duration"] >= 0.2


@pytest.mark.parametrize(
    "args",
    [
        ("--flaky", "boat"),
        ("--flaky", "hotel:0"),
        ("--fail-compensation", "confirm:1"),
        ("--fail-compensation", "hotel:sometimes"),
        ("--slow", "car"),
        ("--slow", "car:-1"),
        ("--outage", "bank"),
    ],
)
def test_malformed_fault_options_are_refused_with_one_line(
    saga: SagaCli, args: tuple[str, ...]
) -> None:
    for command in (("book", *BOOKING), ("simulate", "--count", "2")):
        refused = saga(*command, *args)
        assert refused.code == 2, (command, args, refused.stderr)
        assert refused.stderr.startswith("Error: ") and refused.stderr.count("\n") == 1
        assert "Traceback" not in refused.stderr


def test_simulate_with_flaky_steps_and_failing_compensations_endsassert_consistent(
    saga: SagaCli,
) -> None:
    assert saga("inventory", "--restock", "500").code == 0
    ran = saga(
        "simulate",
        "--count",
        "60",
        "--seed",
        "3",
        "--fail-rate",
        "0.3",
        "--flaky",
        "hotel:2",
        "--fail-compensation",
        "flight:1",
        "--json",
    )
    assert ran.code == 0, ran.stderr
    summary = ran.json()
    assert summary["stuck"] == 0 and summary["interrupted"] == 0
    assert summary["completed"] + summary["compensated"] == 60
    assert summary["compensated"] > 0
    assert_consistent(saga)


def test_a_step_past_its_timeout_is_compensated_and_its_late_arrival_is_refused(
    saga: SagaCli,
) -> None:
    booked = saga("book", *BOOKING, "--timeout", "car", "--json")
    assert booked.code == 3, booked.stderr
    execution = booked.json()["id"]
    assert "did not answer within" in booked.json()["error"]
    # the process waited for the late call before exiting: it hit the tombstone
    with closing(sqlite3.connect(saga.db)) as db:
        car = db.execute(
            "SELECT resource, status FROM car_reservation WHERE saga_id = ?", (execution,)
        ).fetchall()
    assert car == [(None, "canceled")]
    assert_consistent(saga)


def test_a_pivot_past_its_timeout_is_stuck_then_resumed_forward_and_charged_once(
    saga: SagaCli,
) -> None:
    booked = saga("book", *BOOKING, "--timeout", "payment", "--json")
    assert booked.code == 4, booked.stderr
    execution = booked.json()["id"]
    assert not [e for e in show_json(saga, execution)["events"] if "compensation" in e["type"]]
    resumed = saga("resume", execution)
    assert resumed.code == 0, resumed.stderr
    with closing(sqlite3.connect(saga.db)) as db:
        charges = db.execute(
            "SELECT key FROM payment_charge WHERE saga_id = ?", (execution,)
        ).fetchall()
    assert charges == [(f"{execution}:payment",)]
    assert_consistent(saga)
