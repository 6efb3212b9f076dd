"""The classic saga test scenarios on the travel booking, through the CLI on a real log.

All steps succeed; each step fails in turn; a failure after the pivot is
retried forward, never compensated; concurrent sagas compete for the last car;
a crash between retry attempts keeps the attempt count. (Compensation failures
and timeouts are in test_failure_policies.py.)
"""

from __future__ import annotations

import sqlite3
from contextlib import closing

import pytest
from conftest import SagaCli
from support import BOOKING, TRAVEL_STEPS, assert_consistent, show_json


def test_all_steps_succeed(saga: SagaCli) -> None:
    booked = saga("book", *BOOKING, "--json")
    assert booked.code == 0, booked.stderr
    steps = show_json(saga, booked.json()["id"])["steps"]
    assert [(s["name"], s["status"]) for s in steps] == [(n, "succeeded") for n in TRAVEL_STEPS]
    assert_consistent(saga)


@pytest.mark.parametrize(
    ("failing", "compensated"),
    [
        ("flight", []),
        ("hotel", ["flight"]),
        ("car", ["hotel", "flight"]),
        ("payment", ["car", "hotel", "flight"]),
    ],
)
def test_each_step_before_the_pivot_fails_in_turn_and_the_rest_is_undone_in_reverse(
    saga: SagaCli, failing: str, compensated: list[str]
) -> None:
    booked = saga("book", *BOOKING, "--fail", failing, "--json")
    assert booked.code == 3, booked.stderr
    events = show_json(saga, booked.json()["id"])["events"]
    assert [e["step"] for e in events if e["type"] == "compensation_succeeded"] == compensated
    with closing(sqlite3.connect(saga.db)) as db:
        assert db.execute("SELECT COUNT(*) FROM payment_charge").fetchone() == (0,)
    assert_consistent(saga)


@pytest.mark.parametrize("step", ["confirm", "notify"])
def test_a_failure_after_the_pivot_is_retried_forward_and_never_compensated(
    saga: SagaCli, step: str
) -> None:
    booked = saga("book", *BOOKING, "--flaky", f"{step}:3", "--json")
    assert booked.code == 0, booked.stderr
    shown = show_json(saga, booked.json()["id"])
    assert {s["name"]: s["attempts"] for s in shown["steps"]}[step] == 4
    assert not [e for e in shown["events"] if e["type"].startswith("compensation")]
    assert_consistent(saga)


def test_concurrent_sagas_compete_for_the_last_car_and_none_is_overbooked(
    saga: SagaCli,
) -> None:
    assert saga("db", "upgrade").code == 0  # migrate once, before the race
    racers = [
        saga.popen("book", "--flight", "FL100", "--hotel", "GRAND", "--car", "SUV", "--json")
        for _ in range(4)
    ]
    codes = sorted(p.wait(timeout=120) for p in racers)
    assert codes == [0, 3, 3, 3]  # one SUV: one booking completes, three compensate
    stock = {r["resource"]: r for r in saga("inventory", "--json").json()}
    assert (stock["SUV"]["available"], stock["SUV"]["confirmed"]) == (0, 1)
    assert_consistent(saga)


def test_a_crash_between_retry_attempts_resumes_with_the_same_budget(saga: SagaCli) -> None:
    crashed = saga("book", *BOOKING, "--flaky", "hotel:1", "--crash-at", "hotel:before@2")
    assert crashed.code == -9
    execution = saga("list", "--json").json()[0]["id"]
    hotel = [e for e in show_json(saga, execution)["events"] if e["step"] == "hotel"]
    assert [(e["type"], e["attempt"]) for e in hotel] == [
        ("step_started", 1),
        ("step_failed", 1),
        ("step_started", 2),
    ]
    assert hotel[1]["detail"]["retry_at"] >= hotel[1]["at"]
    resumed = saga("resume", execution)
    assert resumed.code == 0, resumed.stderr
    hotel = [e for e in show_json(saga, execution)["events"] if e["step"] == "hotel"]
    assert [e["attempt"] for e in hotel if e["type"] == "step_started"] == [1, 2]
    assert hotel[-1]["type"] == "step_succeeded" and hotel[-1]["attempt"] == 2
    assert_consistent(saga)
