"""`--submit`, `saga worker` and `saga workers` through the real CLI, one worker at a time."""

from __future__ import annotations

import json
import signal
import socket
import textwrap
import time
from pathlib import Path

import pytest
from conftest import SagaCli
from crash.logdb import LogDb, assert_capacity_conserved, assert_terminal_and_consistent
from support import BOOKING, assert_one_line_error, execute, query, wait_for

from saga_cli.store import WorkerRecord, open_store

SHOP = '''
"""A user's saga with a concurrency key; effects are rows keyed by idempotency key."""
import os
import sqlite3

from saga_cli import Saga, StepContext


def record(ctx: StepContext):
    with sqlite3.connect(os.environ["SHOP_DB"], isolation_level=None, timeout=10) as db:
        db.execute("CREATE TABLE IF NOT EXISTS effect (key TEXT PRIMARY KEY, step TEXT)")
        db.execute("INSERT OR IGNORE INTO effect VALUES (?, ?)", (ctx.key, ctx.step))
    return ctx.step


order = Saga("shop-order", concurrency_key=lambda p: "sku:" + p["sku"])
order.step("reserve", compensation=record)(record)
order.step("charge", compensation=record)(record)
'''
BOOKING_PAYLOAD = {
    "flight": "FL100",
    "hotel": "GRAND",
    "car": "ECONOMY",
    "customer": "guest",
    "fail": [],
}


def test_book_submit_writes_a_pending_execution_and_prints_its_id(migrated: SagaCli) -> None:
    db = LogDb(migrated.db)
    ran = migrated("book", *BOOKING, "--json").json()

    result = migrated("book", *BOOKING, "--customer", "ann", "--submit")

    assert result.code == 0, result
    execution_id = result.stdout.strip()
    assert len(execution_id) == 32 and result.stderr == ""
    (row,) = db.rows(
        "SELECT status, owner, lease_expires_at, version, definition_version, payload"
        " FROM saga_execution WHERE id=?",
        (execution_id,),
    )
    (normal_version,) = db.rows(
        "SELECT definition_version FROM saga_execution WHERE id=?", (ran["id"],)
    )[0]
    assert row[:4] == ("pending", None, None, 1)
    assert row[4] == normal_version  # the same definition version as a normal run writes
    assert json.loads(row[5])["customer"] == "ann"
    assert [e.type for e in db.events(execution_id)] == ["saga_started"]
    assert db.reservations(execution_id) == []  # nothing was called
    as_json = migrated("book", *BOOKING, "--submit", "--json").json()
    assert as_json["status"] == "pending" and db.status(as_json["id"]) == "pending"


def test_run_submit_takes_the_key_and_a_worker_loads_the_saga_from_the_log(
    migrated: SagaCli, tmp_path: Path
) -> None:
    shop = tmp_path / "shop.py"
    shop.write_text(textwrap.dedent(SHOP))
    effects = str(tmp_path / "effects.db")
    db = LogDb(migrated.db)

    submitted = migrated("run", f"{shop}:order", "--payload", '{"sku": "K"}', "--submit")
    busy = migrated("run", f"{shop}:order", "--payload", '{"sku": "K"}', "--submit")

    assert submitted.code == 0, submitted
    execution_id = submitted.stdout.strip()
    assert_one_line_error(busy, 1, "concurrency key 'sku:K' is held by unfinished execution")
    assert db.rows("SELECT key, execution_id FROM saga_key_lock") == [("sku:K", execution_id)]
    assert db.rows("SELECT concurrency_key FROM saga_execution") == [("sku:K",)]
    # No --load: the worker imports shop-order from the source the log recorded.
    worker = migrated(
        "worker", "--saga", "shop-order", "--exit-when-idle", "--json", SHOP_DB=effects
    )
    assert worker.code == 0, worker
    assert worker.json()["completed"] == 1
    assert db.status(execution_id) == "completed"
    assert db.rows("SELECT key FROM saga_key_lock") == []  # released at the end
    assert LogDb(Path(effects)).rows("SELECT step FROM effect ORDER BY step") == [
        ("charge",),
        ("reserve",),
    ]


def test_submit_refuses_options_that_act_on_the_running_process(migrated: SagaCli) -> None:
    assert_one_line_error(
        migrated("book", *BOOKING, "--submit", "--slow", "hotel:1"), 2, "--slow", "saga worker"
    )
    assert_one_line_error(
        migrated("book", *BOOKING, "--submit", "--crash-at", "car:before"), 2, "--crash-at"
    )
    assert LogDb(migrated.db).execution_ids() == []


def test_a_worker_drains_submitted_bookings_and_exits_when_idle(migrated: SagaCli) -> None:
    db = LogDb(migrated.db)
    assert migrated("inventory", "--restock", "50").code == 0
    ids = [migrated("book", *BOOKING, "--submit").stdout.strip() for _ in range(6)]
    ids += [
        migrated("book", *BOOKING, "--fail", "car", "--submit").stdout.strip() for _ in range(3)
    ]

    result = migrated("worker", "--concurrency", "4", "--exit-when-idle", "--json")

    assert result.code == 0, result
    assert result.json() == {
        "completed": 6,
        "compensated": 3,
        "stuck": 0,
        "released": 0,
        "lost": [],
        "failed": {},
    }
    for execution_id in ids:
        assert_terminal_and_consistent(db, execution_id)
        resumed = [e for e in db.events(execution_id) if e.type == "saga_resumed"]
        assert len(resumed) == 1 and resumed[0].detail is not None  # claimed exactly once
        assert resumed[0].detail["by"].split(":")[1].isdigit()
    assert db.rows("SELECT COUNT(*) FROM saga_worker") == [(0,)]  # removed on a clean exit
    assert_capacity_conserved(db)
    assert migrated("check", "--json").json()["consistent"] is True


def test_sigterm_finishes_the_step_releases_the_lease_and_exits_0(migrated: SagaCli) -> None:
    db = LogDb(migrated.db)
    execution_id = migrated("book", *BOOKING, "--submit").stdout.strip()
    worker = migrated.popen("worker", "--slow", "hotel:1.5", "--poll", "0.05", "--json")
    try:
        wait_for(
            lambda: any(e.step == "hotel" for e in db.events(execution_id)),
            "the worker to start the hotel step",
        )
        listed = wait_for(lambda: migrated("workers", "--json").json(), "the registry row")
        assert [w["pid"] for w in listed] == [worker.pid]
        assert listed[0]["state"] == "live" and listed[0]["executions"] == [execution_id]
        assert db.owner(execution_id)[0] == listed[0]["id"]

        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()

    assert worker.returncode == 0, err
    assert json.loads(out)["released"] == 1
    kinds = [(e.type, e.step) for e in db.events(execution_id)]
    assert kinds[-1] == ("step_succeeded", "hotel")  # the step in flight finished and was logged
    assert db.owner(execution_id) == (None, None)  # released: claimable at once
    assert db.status(execution_id) == "running"
    assert db.rows("SELECT COUNT(*) FROM saga_worker") == [(0,)]
    started = time.monotonic()
    second = migrated("worker", "--exit-when-idle", "--lease", "60", "--json")
    assert second.code == 0 and second.json()["completed"] == 1, second
    assert time.monotonic() - started < 30  # no waiting for a lease to expire
    assert assert_terminal_and_consistent(db, execution_id) == "completed"
    started_steps = [e.step for e in db.events(execution_id) if e.type == "step_started"]
    assert len(started_steps) == len(set(started_steps))  # no step was called twice


def test_workers_marks_stale_and_dead_rows(migrated: SagaCli) -> None:
    now = time.time()
    store = open_store(str(migrated.db))
    try:
        store.save_worker(WorkerRecord("far:1:1", "far", 1, now - 100, now - 1, 8, 30.0, None))
        store.save_worker(WorkerRecord("far:2:1", "far", 2, now - 100, now - 90, 2, 30.0, ("x",)))
        # pid 2**22 + 1 is above Linux's pid_max: a process of this host that is gone
        dead = f"{socket.gethostname()}:4194305:1"
        store.save_worker(WorkerRecord(dead, "here", 4194305, now - 50, now, 1, 30.0, None))
    finally:
        store.close()

    rows = {w["id"]: w for w in migrated("workers", "--json").json()}
    table = migrated("workers")

    assert {i: w["state"] for i, w in rows.items()} == {
        "far:1:1": "live",
        "far:2:1": "stale",
        dead: "dead",
    }
    assert rows["far:2:1"]["sagas"] == ["x"] and rows["far:1:1"]["sagas"] is None
    assert table.code == 0, table
    assert "stale" in table.stdout and "far:1:1" in table.stdout


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("--saga", "no-such-saga"), "no-such-saga"),
        (("--lease", "0"), "--lease"),
        (("--poll", "-1"), "--poll"),
    ],
)
def test_worker_bad_input_is_one_line_and_exit_2(
    migrated: SagaCli, args: tuple[str, ...], fragment: str
) -> None:
    assert_one_line_error(migrated("worker", "--exit-when-idle", *args), 2, fragment)


def test_an_execution_a_worker_refuses_is_left_exactly_as_it_was(migrated: SagaCli) -> None:
    refused = migrated("book", *BOOKING, "--submit").stdout.strip()
    fine = migrated("book", *BOOKING, "--submit").stdout.strip()
    # services this process can make no sense of: the travel saga's precondition refuses
    execute(
        migrated.db,
        "UPDATE saga_execution SET payload=? WHERE id=?",
        (json.dumps({**BOOKING_PAYLOAD, "services": {"boat": "http://x"}}), refused),
    )
    before = query(migrated.db, "SELECT * FROM saga_execution WHERE id=?", (refused,))
    events = query(migrated.db, "SELECT * FROM saga_event WHERE saga_id=?", (refused,))

    worked = migrated("worker", "--exit-when-idle", "--json")
    resumed = migrated("resume", refused)

    assert worked.code == 0, worked
    report = worked.json()
    assert report["completed"] == 1 and list(report["failed"]) == [refused], report
    assert "malformed booking payload" in report["failed"][refused]
    assert_one_line_error(resumed, 2, "malformed booking payload")
    # no version bump, no lease, no event: another worker may take it at once
    assert query(migrated.db, "SELECT * FROM saga_execution WHERE id=?", (refused,)) == before
    assert query(migrated.db, "SELECT * FROM saga_event WHERE saga_id=?", (refused,)) == events
    assert query(migrated.db, "SELECT status FROM saga_execution WHERE id=?", (fine,)) == [
        ("completed",)
    ]
