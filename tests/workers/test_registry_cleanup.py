"""The registry cleans up after dead workers, and dead owners' executions are ready at once.

On both backends: prune_workers and SagaStore.remove_workers (rows dead or
stale long enough go, live ones and ones that beat again stay), and
lease.end_dead_leases (only owners of this host whose process is gone lose
their leases early). Through the CLI: ``saga workers --prune``, the last-seen
column, and a worker pruning on its own at start.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time

from conftest import SagaCli
from support import assert_one_line_error, dead_owner, make_execution

from saga_cli import lease
from saga_cli.domain import SagaStatus
from saga_cli.store import SagaStore, WorkerRecord, open_store
from saga_cli.worker import prune_workers

HOUR = 3600.0


def worker_row(worker_id: str, heartbeat_at: float, lease_seconds: float = 30.0) -> WorkerRecord:
    host, pid, _start = worker_id.split(":")
    return WorkerRecord(
        worker_id, host, int(pid), heartbeat_at - 10, heartbeat_at, 2, lease_seconds, None
    )


def test_prune_removes_dead_and_stale_rows_older_than_the_age_on_both_backends(
    any_store: SagaStore,
) -> None:
    now = time.time()
    rows = {
        "live": worker_row("far:1:1", now - 1),
        "stale long": worker_row("far:2:1", now - 2 * HOUR),
        "stale lately": worker_row("far:3:1", now - 120),
        "dead long": worker_row(dead_owner(), now - 2 * HOUR),
        # a lease longer than the age: its row is still live
        "slow beat": worker_row("far:4:1", now - 2 * HOUR, lease_seconds=3 * HOUR),
    }
    for row in rows.values():
        any_store.save_worker(row)

    removed = prune_workers(any_store, HOUR, now)

    assert removed == 2
    left = {r.id for r in any_store.workers()}
    assert left == {rows[k].id for k in ("live", "stale lately", "slow beat")}
    assert prune_workers(any_store, HOUR, now) == 0  # nothing more to do
    # By hand (no age): every dead or stale row goes, the live ones stay.
    assert prune_workers(any_store, 0.0, now) == 1
    assert {r.id for r in any_store.workers()} == {rows["live"].id, rows["slow beat"].id}


def test_a_row_that_beat_since_it_was_looked_at_is_not_removed(any_store: SagaStore) -> None:
    row = worker_row("far:9:1", 1000.0)
    any_store.save_worker(row)
    any_store.save_worker(dataclasses.replace(row, heartbeat_at=2000.0))  # it woke up

    assert any_store.remove_workers({row.id: 1000.0}) == 0
    assert [r.heartbeat_at for r in any_store.workers()] == [2000.0]
    assert any_store.remove_workers({row.id: 2000.0, "far:10:1": 5.0}) == 1
    assert any_store.workers() == []


def test_only_dead_owners_of_this_host_lose_their_leases_early(any_store: SagaStore) -> None:
    now = time.time()
    far_future = now + HOUR
    alive = lease.current_owner()
    made = {
        "dead": make_execution(
            any_store, "a" * 32, status=SagaStatus.RUNNING, owner=dead_owner(),
            lease_expires_at=far_future,
        ),
        "dead but done": make_execution(
            any_store, "b" * 32, status=SagaStatus.COMPLETED, owner=dead_owner(),
            lease_expires_at=far_future,
        ),
        "alive": make_execution(
            any_store, "c" * 32, status=SagaStatus.RUNNING, owner=alive,
            lease_expires_at=far_future,
        ),
        "other host": make_execution(
            any_store, "d" * 32, status=SagaStatus.COMPENSATING, owner="elsewhere:1:1",
            lease_expires_at=far_future,
        ),
    }  # fmt: skip

    assert any_store.claim_ready("w:1:1", now + 30, now, limit=10) == []
    assert lease.end_dead_leases(any_store, now) == 1
    assert lease.end_dead_leases(any_store, now) == 0  # ended already
    taken = any_store.claim_ready("w:1:1", now + 30, now + 0.001, limit=10)

    assert [r.id for r in taken] == [made["dead"].id]
    for key in ("alive", "other host"):
        assert any_store.get(made[key].id).lease_expires_at == far_future


def test_workers_prune_by_hand_and_last_seen(migrated: SagaCli) -> None:
    now = time.time()
    store = open_store(str(migrated.db))
    try:
        store.save_worker(worker_row("far:1:1", now - 1))
        store.save_worker(worker_row("far:2:1", now - 90))
        store.save_worker(worker_row(dead_owner(), now - 5))
    finally:
        store.close()

    listed = {w["id"]: w for w in migrated("workers", "--json").json()}
    pruned = migrated("workers", "--prune", "--json")
    table = migrated("workers")

    assert set(listed) == {"far:1:1", "far:2:1", dead_owner()}
    seen = dt.datetime.fromisoformat(listed["far:2:1"]["last_seen"])
    assert seen.utcoffset() == dt.timedelta(0)
    assert abs(seen.timestamp() - listed["far:2:1"]["heartbeat_at"]) < 0.001
    assert pruned.code == 0, pruned
    assert [w["id"] for w in pruned.json()] == ["far:1:1"]
    assert "removed 2 dead or stale worker(s)" in pruned.stderr
    assert table.code == 0, table
    assert "last seen" in table.stdout
    assert dt.datetime.fromtimestamp(now - 1, dt.UTC).strftime("%Y-%m-%d %H:%M:%S") in table.stdout


def test_a_worker_prunes_rows_older_than_prune_after_when_it_starts(migrated: SagaCli) -> None:
    now = time.time()
    store = open_store(str(migrated.db))
    try:
        store.save_worker(worker_row("far:1:1", now - 2 * HOUR))
        store.save_worker(worker_row("far:2:1", now - 120))
    finally:
        store.close()

    kept = migrated("worker", "--exit-when-idle", "--prune-after", "3h")
    after_kept = [w["id"] for w in migrated("workers", "--json").json()]
    pruned = migrated("worker", "--exit-when-idle")  # the default: 1h
    after_pruned = [w["id"] for w in migrated("workers", "--json").json()]
    both = migrated("worker", "--exit-when-idle", "--prune-after", "1m")

    assert kept.code == 0 and pruned.code == 0 and both.code == 0, (kept, pruned, both)
    assert after_kept == ["far:1:1", "far:2:1"]
    assert after_pruned == ["far:2:1"]
    assert migrated("workers", "--json").json() == []
    assert_one_line_error(migrated("worker", "--prune-after", "0"), 2, "duration")
