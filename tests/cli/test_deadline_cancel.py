"""Deadlines and `saga cancel`, through the real CLI."""

from __future__ import annotations

import sqlite3
import time
from contextlib import closing
from typing import Any

import pytest
from conftest import SagaCli
from support import BOOKING, assert_consistent, show_json


def _log(saga: SagaCli, sql: str) -> list[tuple[Any, ...]]:
    try:
        with closing(sqlite3.connect(saga.db, timeout=30)) as db:
            return list(db.execute(sql))
    except sqlite3.OperationalError:
        return []  # not created yet


def test_a_deadline_that_passes_before_the_pivot_compensates(saga: SagaCli) -> None:
    booked = saga("book", *BOOKING, "--slow", "hotel:0.4", "--deadline", "200ms", "--json")
    assert booked.code == 3, booked.stderr
    events = show_json(saga, booked.json()["id"])["events"]
    requested = [e for e in events if e["type"] == "compensation_requested"]
    assert len(requested) == 1 and requested[0]["detail"]["reason"] == "the saga's deadline passed"
    assert [e["step"] for e in events if e["type"] == "compensation_succeeded"] == [
        "hotel",
        "flight",
    ]
    assert_consistent(saga)


def test_a_deadline_that_passes_after_the_pivot_changes_nothing(saga: SagaCli) -> None:
    booked = saga("book", *BOOKING, "--slow", "confirm:0.4", "--deadline", "200ms", "--json")
    assert booked.code == 0, booked.stderr
    events = show_json(saga, booked.json()["id"])["events"]
    assert not [e for e in events if e["type"].startswith("compensation")]
    assert_consistent(saga)


def test_a_deadline_is_kept_in_the_log_and_applies_on_resume(saga: SagaCli) -> None:
    crashed = saga("book", *BOOKING, "--deadline", "1s", "--crash-at", "hotel:before")
    assert crashed.code == -9
    execution = saga("list", "--json").json()[0]["id"]
    started = show_json(saga, execution)["events"][0]
    assert started["type"] == "saga_started" and started["detail"]["deadline_at"] > 0
    # let the deadline pass while the execution lies interrupted
    time.sleep(max(0.0, started["detail"]["deadline_at"] - time.time()) + 0.05)
    resumed = saga("resume", execution)
    assert resumed.code == 3, resumed.stderr
    with closing(sqlite3.connect(saga.db)) as db:
        hotel = db.execute(
            "SELECT resource, status FROM hotel_reservation WHERE saga_id = ?", (execution,)
        ).fetchall()
    assert hotel == [(None, "canceled")]  # the hotel call that never ran: a tombstone
    assert_consistent(saga)


@pytest.mark.parametrize("value", ["soon", "0", "-5s", "1y"])
def test_a_malformed_deadline_is_refused(saga: SagaCli, value: str) -> None:
    refused = saga("book", *BOOKING, "--deadline", value)
    assert refused.code == 2
    assert refused.stderr.startswith("Error: ") and refused.stderr.count("\n") == 1


@pytest.mark.slow
def test_cancel_takes_an_execution_from_its_live_owner_and_compensates_it(
    saga: SagaCli,
) -> None:
    owner = saga.popen("book", *BOOKING, "--slow", "car:2", "--json")
    deadline = time.monotonic() + 60
    while not _log(saga, "SELECT 1 FROM saga_event WHERE step = 'car' AND type = 'step_started'"):
        assert time.monotonic() < deadline and owner.poll() is None
        time.sleep(0.01)
    execution = _log(saga, "SELECT id FROM saga_execution")[0][0]

    cancelled = saga("cancel", execution[:10])

    assert cancelled.code == 3, cancelled.stderr
    _, stderr = owner.communicate(timeout=60)
    assert owner.returncode == 1
    assert "taken over" in stderr and stderr.count("\n") == 1
    compensated = [
        e["step"]
        for e in show_json(saga, execution)["events"]
        if e["type"] == "compensation_succeeded"
    ]
    assert compensated == ["car", "hotel", "flight"]
    assert_consistent(saga)


def test_cancel_is_refused_after_the_pivot_and_for_a_completed_booking(saga: SagaCli) -> None:
    crashed = saga("book", *BOOKING, "--crash-at", "confirm:before")
    assert crashed.code == -9
    execution = saga("list", "--json").json()[0]["id"]
    refused = saga("cancel", execution)
    assert refused.code == 2 and "pivot" in refused.stderr
    assert saga("resume", execution).code == 0
    refused = saga("cancel", execution)
    assert refused.code == 2 and "completed" in refused.stderr
    assert_consistent(saga)
