"""SIGKILL `saga simulate` at random moments, then `saga resume --all`: all consistent."""

from __future__ import annotations

import random
import signal

import pytest
from conftest import SagaCli
from support import wait_for

from .logdb import LogDb, assert_capacity_conserved, assert_terminal_and_consistent

pytestmark = pytest.mark.slow

ROUNDS = 4
SEED = 20261127


def kill_simulate_after(saga: SagaCli, grown_by: int, seed: int) -> int:
    """Start `saga simulate`, SIGKILL it once the log grew by `grown_by` events.

    Returns:
        The process's return code.
    """
    db = LogDb(saga.db)
    start = db.event_count()
    simulate = saga.popen(
        "simulate", "--count", "300", "--fail-rate", "0.3", "--seed", str(seed), "--json"
    )
    try:
        wait_for(
            lambda: db.event_count() >= start + grown_by or simulate.poll() is not None,
            f"simulate to log {grown_by} events",
            timeout=120,
        )
        if simulate.poll() is None:
            simulate.send_signal(signal.SIGKILL)
    finally:
        if simulate.poll() is None:
            simulate.kill()
        simulate.communicate(timeout=60)
    return simulate.returncode


def test_simulate_killed_at_random_moments_is_resumed_to_a_consistent_log(
    migrated: SagaCli,
) -> None:
    rng = random.Random(SEED)
    db = LogDb(migrated.db)
    assert migrated("inventory", "--restock", "1000").code == 0
    for round_number in range(ROUNDS):
        grown_by = rng.randint(5, 1500)  # 300 bookings log about 3000 events
        returncode = kill_simulate_after(migrated, grown_by, SEED + round_number)
        assert returncode == -signal.SIGKILL, f"round {round_number} ended by itself"
    statuses = db.statuses()
    unfinished = sum(n for s, n in statuses.items() if s not in ("completed", "compensated"))
    assert unfinished <= ROUNDS, statuses  # at most one booking in flight per killed batch
    assert set(statuses) <= {"pending", "running", "compensating", "completed", "compensated"}

    result = migrated("resume", "--all", "--json")

    assert result.code == 0, result
    report = result.json()
    assert report["busy"] == []
    assert report["resumed"] == unfinished
    ids = db.execution_ids()
    outcomes = {
        execution_id: assert_terminal_and_consistent(db, execution_id) for execution_id in ids
    }
    assert set(outcomes.values()) == {"completed", "compensated"}
    assert_capacity_conserved(db)
    check = migrated("check", "--json")
    assert check.code == 0, check
    assert check.json() == {"consistent": True, "violations": []}
    keys = [r.key for r in db.reservations()]
    assert len(keys) == len(set(keys))
    assert {r.saga_id for r in db.reservations()} <= set(ids)
