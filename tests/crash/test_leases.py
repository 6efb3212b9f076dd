"""Leases: a live owner keeps others out; a dead one (or an expired lease) lets resume in."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import SagaCli
from support import BOOKING, assert_one_line_error, wait_for

from .logdb import LogDb, assert_capacity_conserved, assert_terminal_and_consistent

pytestmark = pytest.mark.slow

HOLD_LEASE = Path(__file__).with_name("hold_lease.py")


def crash_booking(saga: SagaCli, point: str, *extra: str) -> str:
    result = saga("book", *BOOKING, "--crash-at", point, *extra)
    assert result.code == -9, result
    return LogDb(saga.db).newest_id()


def interrupted(saga: SagaCli, execution_id: str) -> bool:
    rows = {row["id"]: row for row in saga("list", "--json").json()}
    flag = rows[execution_id]["interrupted"]
    assert isinstance(flag, bool)
    return flag


@pytest.fixture
def lease_holder(
    migrated: SagaCli, tmp_path: Path
) -> Iterator[tuple[str, subprocess.Popen[str], Path]]:
    """An execution being resumed by a live process that provably holds its lease.

    The execution was interrupted before its hotel call; the helper process
    resumes it and its hotel call hangs until the yielded release file exists.
    """
    execution_id = crash_booking(migrated, "hotel:before")
    release = tmp_path / "release"
    holder = subprocess.Popen(
        [sys.executable, str(HOLD_LEASE), str(migrated.db), execution_id, str(release)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    db = LogDb(migrated.db)
    try:
        wait_for(
            lambda: (
                f":{holder.pid}:" in (db.owner(execution_id)[0] or "") or holder.poll() is not None
            ),
            "the helper to claim the lease",
        )
        assert holder.poll() is None, holder.communicate()
        yield execution_id, holder, release
    finally:
        release.touch()
        try:
            holder.wait(timeout=60)
        finally:
            if holder.poll() is None:
                holder.kill()
                holder.wait()


def test_a_second_resume_while_the_first_runs_is_refused_with_exit_1(
    migrated: SagaCli, lease_holder: tuple[str, subprocess.Popen[str], Path]
) -> None:
    execution_id, holder, release = lease_holder
    db = LogDb(migrated.db)
    events = db.events(execution_id)
    assert events[-1].type == "saga_resumed"

    second = migrated("resume", execution_id)
    aborted = migrated("compensate", execution_id)
    everything = migrated("resume", "--all", "--json")

    assert_one_line_error(second, 1, execution_id, "is being run by", f":{holder.pid}:")
    assert_one_line_error(aborted, 1, "is being run by")
    assert everything.code == 0, everything
    assert everything.json()["busy"] == [execution_id]
    assert everything.json()["resumed"] == 0
    assert interrupted(migrated, execution_id) is False
    assert db.events(execution_id) == events  # the refused commands wrote nothing

    release.touch()
    out, err = holder.communicate(timeout=60)
    assert holder.returncode == 0, err
    assert out.strip() == "completed"
    assert assert_terminal_and_consistent(db, execution_id) == "completed"
    assert migrated("check", "--json").json()["consistent"] is True


def test_a_resume_killed_while_it_holds_the_lease_is_resumed_again_at_once(
    migrated: SagaCli, lease_holder: tuple[str, subprocess.Popen[str], Path]
) -> None:
    execution_id, holder, _release = lease_holder
    db = LogDb(migrated.db)

    holder.send_signal(signal.SIGKILL)
    holder.communicate(timeout=60)
    assert holder.returncode == -signal.SIGKILL
    assert interrupted(migrated, execution_id) is True
    result = migrated("resume", execution_id)

    assert result.code == 0, result
    assert assert_terminal_and_consistent(db, execution_id) == "completed"
    assert [e.type for e in db.events(execution_id)].count("saga_resumed") == 2
    assert migrated("check", "--json").json()["consistent"] is True


def test_two_resume_all_at_once_drive_each_execution_exactly_once(migrated: SagaCli) -> None:
    db = LogDb(migrated.db)
    assert migrated("inventory", "--restock", "20").code == 0
    points = ["flight:after", "hotel:before", "car:after", "confirm:before"] * 2
    crashed = [crash_booking(migrated, point) for point in points]
    crashed.append(crash_booking(migrated, "compensate-hotel:before", "--fail", "car"))

    first = migrated.popen("resume", "--all", "--json", "--concurrency", "2")
    second = migrated.popen("resume", "--all", "--json", "--concurrency", "2")
    outputs = [process.communicate(timeout=120) for process in (first, second)]

    assert (first.returncode, second.returncode) == (0, 0), outputs
    resumed = [o["id"] for out, _ in outputs for o in json.loads(out)["outcomes"]]
    assert sorted(resumed) == sorted(crashed)  # each resumed by one of the two
    for execution_id in crashed:
        assert [e.type for e in db.events(execution_id)].count("saga_resumed") == 1
        assert_terminal_and_consistent(db, execution_id)
    assert_capacity_conserved(db)
    assert migrated("check", "--json").json()["consistent"] is True


def test_resume_right_after_a_crash_does_not_wait_for_the_lease_to_expire(
    migrated: SagaCli,
) -> None:
    db = LogDb(migrated.db)
    execution_id = crash_booking(migrated, "car:after")
    owner, lease_expires_at = db.owner(execution_id)
    assert owner is not None and lease_expires_at is not None
    assert lease_expires_at > time.time() + 5  # the dead owner's lease is still running

    assert interrupted(migrated, execution_id) is True
    result = migrated("resume", execution_id)

    assert result.code == 0, result
    assert assert_terminal_and_consistent(db, execution_id) == "completed"


def test_a_killed_owner_not_yet_reaped_counts_as_dead(migrated: SagaCli) -> None:
    db = LogDb(migrated.db)
    booking = migrated.popen("book", *BOOKING, "--crash-at", "hotel:after")
    try:
        # Wait for the exit without reaping it: the owner stays a zombie.
        os.waitid(os.P_PID, booking.pid, os.WEXITED | os.WNOWAIT)
        execution_id = db.newest_id()
        owner, _ = db.owner(execution_id)
        assert owner is not None and f":{booking.pid}:" in owner

        result = migrated("resume", execution_id)

        assert result.code == 0, result
    finally:
        booking.communicate(timeout=60)
    assert booking.returncode == -signal.SIGKILL
    assert assert_terminal_and_consistent(db, execution_id) == "completed"


def test_an_owner_on_another_host_keeps_its_lease_until_it_expires(migrated: SagaCli) -> None:
    db = LogDb(migrated.db)
    execution_id = crash_booking(migrated, "hotel:after")
    db.write(
        "UPDATE saga_execution SET owner='otherhost:1:1', lease_expires_at=? WHERE id=?",
        (time.time() + 60, execution_id),
    )
    events = db.events(execution_id)

    assert interrupted(migrated, execution_id) is False
    refused = migrated("resume", execution_id)
    skipped = migrated("resume", "--all", "--json")

    assert_one_line_error(refused, 1, "is being run by otherhost:1:1")
    assert skipped.code == 0, skipped
    assert skipped.json()["busy"] == [execution_id]
    assert db.events(execution_id) == events
    assert db.owner(execution_id)[0] == "otherhost:1:1"

    db.write(
        "UPDATE saga_execution SET lease_expires_at=? WHERE id=?", (time.time() - 1, execution_id)
    )
    assert interrupted(migrated, execution_id) is True
    resumed = migrated("resume", execution_id)

    assert resumed.code == 0, resumed
    assert assert_terminal_and_consistent(db, execution_id) == "completed"
    hotel = db.reservation(execution_id, "hotel")
    assert hotel is not None and hotel.status == "confirmed"
    assert_capacity_conserved(db)


def test_an_owner_whose_pid_was_reused_by_another_process_counts_as_dead(
    migrated: SagaCli,
) -> None:
    db = LogDb(migrated.db)
    execution_id = crash_booking(migrated, "flight:after")
    # This test's own pid is alive, but it started at another time than the owner.
    db.write(
        "UPDATE saga_execution SET owner=?, lease_expires_at=? WHERE id=?",
        (f"{socket.gethostname()}:{os.getpid()}:1", time.time() + 60, execution_id),
    )

    assert interrupted(migrated, execution_id) is True
    result = migrated("resume", execution_id)

    assert result.code == 0, result
    assert assert_terminal_and_consistent(db, execution_id) == "completed"


def test_a_worker_takes_at_once_what_a_sigkilled_worker_held_under_a_long_lease(
    migrated: SagaCli,
) -> None:
    db = LogDb(migrated.db)
    ids = [migrated("book", *BOOKING, "--submit").stdout.strip() for _ in range(2)]
    first = migrated.popen(
        "worker", "--lease", "600", "--slow", "hotel:60", "--concurrency", "2", "--poll", "0.05"
    )
    try:
        wait_for(
            lambda: all(any(e.step == "hotel" for e in db.events(i)) for i in ids),
            "the first worker to call the hotel for both bookings",
        )
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    for execution_id in ids:
        owner, lease_until = db.owner(execution_id)
        assert owner is not None and f":{first.pid}:" in owner
        assert lease_until is not None and lease_until > time.time() + 300  # still leased
        assert interrupted(migrated, execution_id)

    second = migrated("worker", "--exit-when-idle", "--json")

    assert second.code == 0, second
    assert second.json()["completed"] == 2, second
    for execution_id in ids:
        assert assert_terminal_and_consistent(db, execution_id) == "completed"
        resumed = [e for e in db.events(execution_id) if e.type == "saga_resumed"]
        assert len(resumed) == 2  # claimed by the first worker, then by the second
    assert_capacity_conserved(db)
