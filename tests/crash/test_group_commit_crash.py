"""SIGKILL while concurrent executions group-commit their log writes.

The write-ahead rule must hold batch or no batch: whatever a participant did
(a reservation, a cancellation) has its `started` record in the log, and
`saga resume --all` then finishes every execution consistently.
"""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import time
from contextlib import closing
from pathlib import Path

import pytest
from conftest import SagaCli

SERVICES = ("flight", "hotel", "car")


def _rows(db: Path, sql: str) -> list[tuple[object, ...]]:
    with closing(sqlite3.connect(db, timeout=30)) as connection:
        return list(connection.execute(sql))


def _event_count(db: Path) -> int:
    try:
        (count,) = _rows(db, "SELECT COUNT(*) FROM saga_event")[0]
        assert isinstance(count, int)
        return count
    except sqlite3.OperationalError:
        return 0  # not migrated yet


def _wait_for_events(db: Path, at_least: int, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while _event_count(db) < at_least:
        assert time.monotonic() < deadline, f"the log never reached {at_least} events"
        assert process.poll() is None, "simulate exited before the kill"
        time.sleep(0.005)


def _unlogged_effects(db: Path) -> list[str]:
    """Participant effects with no durable `started` record before them."""
    started = {
        (saga_id, step, kind)
        for saga_id, step, kind in _rows(
            db,
            "SELECT saga_id, step, type FROM saga_event"
            " WHERE type IN ('step_started', 'compensation_started')",
        )
    }
    problems = []
    for service in SERVICES:
        for key, saga_id, resource, status in _rows(
            db, f"SELECT key, saga_id, resource, status FROM {service}_reservation"
        ):
            if resource is not None and (saga_id, service, "step_started") not in started:
                problems.append(f"{service} reservation {key} was made with no step_started")
            if status == "canceled" and (saga_id, service, "compensation_started") not in started:
                problems.append(f"{service} reservation {key} was cancelled unlogged")
            if status == "confirmed" and (saga_id, "confirm", "step_started") not in started:
                problems.append(f"{service} reservation {key} was confirmed unlogged")
    return problems


@pytest.mark.slow
def test_sigkill_during_group_commit_loses_no_started_record(saga: SagaCli) -> None:
    rng = random.Random(20261127)
    assert saga("inventory", "--restock", "100000").code == 0
    for round_number in range(4):
        before = _event_count(saga.db)
        process = saga.popen(
            "simulate",
            "--count",
            "400",
            "--concurrency",
            "8",
            "--fail-rate",
            "0.3",
            "--seed",
            str(round_number),
            "--json",
        )
        _wait_for_events(saga.db, before + rng.randint(50, 1500), process)
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=30) == -signal.SIGKILL
        assert _unlogged_effects(saga.db) == []

    resumed = saga("resume", "--all", "--json")
    assert resumed.code == 0, resumed.stderr
    statuses = {row[0] for row in _rows(saga.db, "SELECT DISTINCT status FROM saga_execution")}
    assert statuses <= {"completed", "compensated"}
    assert _unlogged_effects(saga.db) == []
    check = saga("check", "--json")
    assert check.code == 0 and check.json() == {"consistent": True, "violations": []}, check.stdout
