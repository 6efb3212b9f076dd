"""Several `saga worker` processes on one log: draining, SIGKILL at random, SIGSTOP fencing."""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
from conftest import cli_env, saga_executable
from crash.logdb import (
    LogDb,
    LoggedEvent,
    Reservation,
    assert_capacity_conserved,
    assert_terminal_and_consistent,
    compensation_plan,
)
from support import SERVICES, submit_bookings, wait_for

pytestmark = pytest.mark.slow

# The services commit with synchronous=NORMAL under any log; the log does too
# here, to keep a few thousand sagas quick: the coordination is the same.
QUERY = "?synchronous=NORMAL"
SEED = 20261127


def submit(db: Path, count: int, *, fail_rate: float = 0.2) -> list[str]:
    """Submit `count` bookings in one commit (a share of them declined at the car)."""
    return submit_bookings(f"sqlite:///{db}{QUERY}", count, fail_rate=fail_rate, seed=SEED)


def start_worker(db: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [saga_executable(), "--db", f"sqlite:///{db}{QUERY}", "worker", "--json", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
        stdin=subprocess.DEVNULL,
    )


def finish(worker: subprocess.Popen[str], timeout: float = 120) -> dict[str, object]:
    out, err = worker.communicate(timeout=timeout)
    assert worker.returncode == 0, err
    report: dict[str, object] = json.loads(out)
    return report


@pytest.fixture
def reaper() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes a test started; any still running at the end are killed."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.send_signal(signal.SIGCONT)
            process.kill()
            process.communicate()


def assert_saga_check_consistent(path: Path) -> None:
    check = subprocess.run(
        [saga_executable(), "--db", str(path), "check", "--json"],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=120,
    )
    assert json.loads(check.stdout)["consistent"] is True, check


def claimers(events: list[LoggedEvent]) -> list[str]:
    return [str((e.detail or {})["by"]) for e in events if e.type == "saga_resumed"]


def whole_log(db: LogDb) -> dict[str, list[LoggedEvent]]:
    """Every execution's events, read in one query (thousands of executions)."""
    found: dict[str, list[LoggedEvent]] = {}
    for saga_id, seq, step, kind, attempt, detail in db.rows(
        "SELECT saga_id, seq, step, type, attempt, detail FROM saga_event ORDER BY saga_id, seq"
    ):
        parsed = None if detail is None else json.loads(detail)
        found.setdefault(saga_id, []).append(LoggedEvent(seq, step, kind, attempt, parsed))
    return found


def all_reservations(db: LogDb) -> dict[str, list[Reservation]]:
    found: dict[str, list[Reservation]] = {}
    for service in SERVICES:
        for key, saga_id, resource, status in db.rows(
            f"SELECT key, saga_id, resource, status FROM {service}_reservation"
        ):
            found.setdefault(saga_id, []).append(
                Reservation(service, key, saga_id, resource, status)
            )
    return found


def assert_every_execution_consistent(db: LogDb, ids: list[str]) -> dict[str, list[LoggedEvent]]:
    """What crash.logdb.assert_terminal_and_consistent checks, for all executions at once.

    Terminal, sequence numbers 1..n, each action and each compensation
    succeeded at most once, compensations in exact reverse order, at most one
    reservation per service per execution, all confirmed (completed) or none
    held (compensated).

    Returns:
        Every execution's events.
    """
    statuses = dict(db.rows("SELECT id, status FROM saga_execution"))
    logs = whole_log(db)
    held = all_reservations(db)
    assert sorted(statuses) == sorted(ids)
    for execution_id in ids:
        status, events = statuses[execution_id], logs[execution_id]
        assert status in ("completed", "compensated"), (execution_id, status)
        assert events[-1].type == f"saga_{status}"
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        succeeded = [e.step for e in events if e.type == "step_succeeded"]
        compensated = [e.step for e in events if e.type == "compensation_succeeded"]
        assert len(set(succeeded)) == len(succeeded), (execution_id, succeeded)
        assert len(set(compensated)) == len(compensated), (execution_id, compensated)
        if status == "compensated":
            assert compensated == compensation_plan(events), execution_id
        reservations = held.get(execution_id, [])
        per_service = Counter(r.service for r in reservations)
        assert all(n == 1 for n in per_service.values()), (execution_id, per_service)
        wanted = {"confirmed"} if status == "completed" else {"canceled"}
        assert {r.status for r in reservations} <= wanted, (execution_id, reservations)
        if status == "completed":
            assert reservations, execution_id
    return logs


def test_three_workers_drain_two_thousand_submitted_bookings(
    tmp_path: Path, reaper: list[subprocess.Popen[str]]
) -> None:
    path = tmp_path / "saga.db"
    ids = submit(path, 2000)
    db = LogDb(path)

    workers = [
        start_worker(path, "--concurrency", "8", "--exit-when-idle", "--poll", "0.05")
        for _ in range(3)
    ]
    reaper += workers
    reports = [finish(worker) for worker in workers]

    assert sum(int(str(r["completed"])) + int(str(r["compensated"])) for r in reports) == 2000
    assert all(r["lost"] == [] and r["failed"] == {} for r in reports), reports
    assert db.statuses() == Counter(
        {
            "completed": sum(int(str(r["completed"])) for r in reports),
            "compensated": sum(int(str(r["compensated"])) for r in reports),
        }
    )
    logs = assert_every_execution_consistent(db, ids)
    by_worker: Counter[str] = Counter()
    for execution_id in ids:
        (claimer,) = claimers(logs[execution_id])  # claimed once, by one worker, never again
        by_worker[claimer] += 1
        started = [e.step for e in logs[execution_id] if e.type == "step_started"]
        assert len(started) == len(set(started)), started  # no step called twice
    # Several workers drained the queue (a worker that started late may find it empty).
    assert len(by_worker) >= 2, by_worker
    assert_capacity_conserved(db)
    assert_saga_check_consistent(path)


def test_workers_killed_at_random_lose_nothing_and_do_nothing_twice(
    tmp_path: Path, reaper: list[subprocess.Popen[str]]
) -> None:
    path = tmp_path / "saga.db"
    ids = submit(path, 400, fail_rate=0.3)
    db = LogDb(path)
    rng = random.Random(SEED)
    args = ("--concurrency", "4", "--lease", "1", "--poll", "0.05")
    live = [start_worker(path, *args) for _ in range(3)]
    reaper += live
    killed = 0
    for _round in range(4):
        grown = db.event_count() + rng.randint(100, 600)
        wait_for(lambda: db.event_count() >= grown, "the workers to make progress")  # noqa: B023
        victim = live.pop(rng.randrange(len(live)))
        victim.send_signal(signal.SIGKILL)
        victim.communicate(timeout=30)
        assert victim.returncode == -signal.SIGKILL
        killed += 1
        replacement = start_worker(path, *args)
        reaper.append(replacement)
        live.append(replacement)
    # Let the survivors drain what is ready, then stop them (SIGTERM: a clean exit).
    wait_for(
        lambda: db.statuses()["pending"] == 0, "the pending executions to be taken", timeout=120
    )
    # A worker registers after it installs its signal handlers: only then is SIGTERM a clean
    # exit (a replacement started a moment ago may not be there yet).
    wait_for(
        lambda: {w.pid for w in live} <= {r[0] for r in db.rows("SELECT pid FROM saga_worker")},
        "the live workers to register",
    )
    for worker in live:
        worker.send_signal(signal.SIGTERM)
    reports = [finish(worker) for worker in live]
    assert all(r["failed"] == {} for r in reports), reports

    # The dead workers' executions come back once their leases expire.
    wait_for(
        lambda: (
            not db.rows(
                "SELECT id FROM saga_execution WHERE status IN ('pending','running','compensating')"
                " AND lease_expires_at >= ?",
                (time.time(),),
            )
        ),
        "the dead workers' leases to expire",
    )
    last = finish(start_worker(path, "--exit-when-idle", "--concurrency", "8"))
    assert last["lost"] == [] and last["failed"] == {}, last

    assert killed == 4
    assert set(db.statuses()) <= {"completed", "compensated"}, db.statuses()
    logs = assert_every_execution_consistent(db, ids)
    assert_capacity_conserved(db)
    taken_over = [i for i in ids if len(claimers(logs[i])) > 1]
    assert taken_over, "no execution was interrupted by a kill: the test proved nothing"
    assert_saga_check_consistent(path)


def write_lock_is_free(path: Path) -> bool:
    with closing(sqlite3.connect(path, timeout=0.2, isolation_level=None)) as connection:
        try:
            connection.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:
            return False
        connection.execute("ROLLBACK")
        return True


def test_a_worker_paused_past_its_lease_is_fenced_when_it_wakes(
    tmp_path: Path, reaper: list[subprocess.Popen[str]]
) -> None:
    path = tmp_path / "saga.db"
    (execution_id,) = submit(path, 1, fail_rate=0.0)
    db = LogDb(path)
    paused = start_worker(path, "--lease", "1", "--poll", "0.05", "--slow", "hotel:2")
    reaper.append(paused)
    wait_for(
        lambda: any(e.step == "hotel" for e in db.events(execution_id)),
        "the first worker to start the hotel step",
    )
    assert f":{paused.pid}:" in str(db.owner(execution_id)[0])
    # Pause it inside the hotel call, never inside a transaction (a stopped SQLite
    # writer would hold the file's write lock and block everyone).
    while True:
        paused.send_signal(signal.SIGSTOP)
        if write_lock_is_free(path):
            break
        paused.send_signal(signal.SIGCONT)
        time.sleep(0.01)
    events_before = db.events(execution_id)
    wait_for(lambda: (db.owner(execution_id)[1] or 0) < time.time(), "its lease to expire")

    taker = finish(start_worker(path, "--exit-when-idle"))
    assert taker["completed"] == 1, taker
    after_takeover = db.events(execution_id)
    assert after_takeover[: len(events_before)] == events_before
    assert after_takeover[-1].type == "saga_completed"

    paused.send_signal(signal.SIGCONT)
    # Its hotel call returns; the outcome it then tries to write is refused.
    wait_for(
        lambda: "lost execution" in (paused.stderr.readline() if paused.stderr else "x"),
        "the woken worker to report the refused write",
    )
    paused.send_signal(signal.SIGTERM)
    report = finish(paused)

    assert report["lost"] == [execution_id], report
    assert report["completed"] == 0
    assert db.events(execution_id) == after_takeover  # its late writes left no trace
    pausing, taking = claimers(db.events(execution_id))
    assert f":{paused.pid}:" in pausing and pausing != taking
    # The hotel was called twice under one key (by the paused worker, then by the
    # one that took over): it took effect once, and every step succeeded once.
    assert assert_terminal_and_consistent(db, execution_id) == "completed"
    assert_capacity_conserved(db)
    assert_saga_check_consistent(path)
