"""SagaStore.claim_ready and the worker registry, on a real SQLite log."""

from __future__ import annotations

import dataclasses
import threading

import pytest
from support import make_execution as make

from saga_cli.domain import Event, EventType, SagaStatus
from saga_cli.errors import LeaseLostError
from saga_cli.store import ExecutionRecord, SagaStore, Transition, WorkerRecord


def test_claims_pending_and_expired_oldest_first_with_a_resumed_event(store: SagaStore) -> None:
    make(store, "c" * 32, created_at=103)
    make(store, "a" * 32, created_at=101)
    make(
        store,
        "b" * 32,
        status=SagaStatus.RUNNING,
        created_at=102,
        owner="dead:1:1",
        lease_expires_at=150.0,
    )
    make(store, "d" * 32, status=SagaStatus.COMPENSATING, created_at=99)  # no owner at all

    taken = store.claim_ready("w:1:1", 260.0, 200.0, limit=3)

    assert [r.id for r in taken] == ["d" * 32, "a" * 32, "b" * 32]
    for claimed in taken:
        assert (claimed.owner, claimed.lease_expires_at, claimed.updated_at) == (
            "w:1:1",
            260.0,
            200.0,
        )
        assert claimed.version == 2
        assert store.get(claimed.id) == claimed
        last = store.events(claimed.id)[-1]
        assert (last.type, last.step, last.attempt, last.detail, last.at) == (
            EventType.SAGA_RESUMED,
            None,
            0,
            {"by": "w:1:1"},
            200.0,
        )
        assert last.seq == len(store.events(claimed.id))
    assert store.get("c" * 32).owner is None  # beyond the limit: untouched


def test_never_takes_a_live_lease_or_a_resting_execution(store: SagaStore) -> None:
    make(store, "a" * 32, status=SagaStatus.RUNNING, owner="x:1:1", lease_expires_at=300.0)
    make(store, "b" * 32, owner="x:1:1", lease_expires_at=300.0)  # claimed, still pending
    for n, status in enumerate(
        (SagaStatus.COMPLETED, SagaStatus.COMPENSATED, SagaStatus.STUCK), start=1
    ):
        make(store, f"{n}" * 32, status=status)

    assert store.claim_ready("w:1:1", 260.0, 200.0, limit=10) == []
    assert [r.id for r in store.claim_ready("w:1:1", 400.0, 300.5, limit=10)] == [
        "a" * 32,
        "b" * 32,
    ]


def test_filters_by_saga_name(store: SagaStore) -> None:
    make(store, "a" * 32, saga="trip")
    make(store, "b" * 32, saga="transfer")

    assert [r.id for r in store.claim_ready("w:1:1", 9.0, 1.0, sagas=["transfer"])] == ["b" * 32]
    assert store.claim_ready("w:1:1", 9.0, 1.0, sagas=[]) == []
    assert store.claim_ready("w:1:1", 9.0, 1.0, sagas=["nothing"]) == []


def test_a_claim_fences_the_previous_owner(store: SagaStore) -> None:
    make(store, "a" * 32, status=SagaStatus.RUNNING, owner="old:1:1", lease_expires_at=10.0)
    (claimed,) = store.claim_ready("new:1:1", 80.0, 20.0)

    late = Transition(
        "a" * 32,
        1,
        [Event(3, EventType.STEP_SUCCEEDED, "s0", 1, at=21.0)],
        SagaStatus.RUNNING,
        "s0",
        "old:1:1",
        50.0,
        21.0,
    )
    with pytest.raises(LeaseLostError):
        store.append(late)
    store.renew_leases("old:1:1", {"a" * 32: 1}, 999.0)  # a renewal cannot take it back

    assert store.get("a" * 32) == claimed
    assert [e.type for e in store.events("a" * 32)][-1] is EventType.SAGA_RESUMED


def test_concurrent_claimers_never_take_the_same_execution(db_path: object) -> None:
    from saga_cli.store import open_store

    setup = open_store(str(db_path))
    for n in range(60):
        make(setup, f"{n:032x}", created_at=float(n))
    setup.close()
    taken: dict[str, list[str]] = {}

    def claimer(name: str) -> None:
        own = open_store(str(db_path))  # a connection (and write path) of its own
        try:
            mine = taken.setdefault(name, [])
            while batch := own.claim_ready(name, 1e9, 1.0, limit=3):
                mine += [r.id for r in batch]
        finally:
            own.close()

    threads = [threading.Thread(target=claimer, args=(f"w{i}:1:1",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    every = [i for ids in taken.values() for i in ids]
    assert sorted(every) == [f"{n:032x}" for n in range(60)]  # each exactly once


def test_worker_registry_upserts_lists_and_removes(store: SagaStore) -> None:
    worker = WorkerRecord("h:7:9", "h", 7, 10.0, 10.0, 4, 30.0, ("trip",))
    other = WorkerRecord("h:8:9", "h", 8, 11.0, 11.0, 1, 5.0, None)
    store.save_worker(worker)
    store.save_worker(other)
    store.save_worker(dataclasses.replace(worker, heartbeat_at=25.0))

    assert store.workers() == [dataclasses.replace(worker, heartbeat_at=25.0), other]
    store.remove_worker("h:7:9")
    store.remove_worker("h:7:9")  # already gone: no error
    assert store.workers() == [other]


def test_held_executions_are_the_live_leases_per_owner(store: SagaStore) -> None:
    make(store, "a" * 32, status=SagaStatus.RUNNING, owner="h:8:9", lease_expires_at=50.0)
    make(store, "b" * 32, status=SagaStatus.RUNNING, owner="h:8:9", lease_expires_at=5.0)
    make(store, "c" * 32, status=SagaStatus.COMPLETED, owner="h:8:9", lease_expires_at=50.0)

    assert store.held_executions(["h:8:9", "h:1:1"], 10.0) == {"h:8:9": ["a" * 32], "h:1:1": []}


def test_a_refused_candidate_is_left_untouched_and_an_excluded_one_is_never_read(
    store: SagaStore,
) -> None:
    make(store, "a" * 32, created_at=101)
    make(store, "b" * 32, created_at=102)
    make(store, "c" * 32, created_at=103)
    asked: list[str] = []

    def admit(record: ExecutionRecord) -> bool:
        asked.append(record.id)
        return record.id != "a" * 32

    taken = store.claim_ready("w:1:1", 260.0, 200.0, limit=3, exclude=["c" * 32], admit=admit)

    assert [r.id for r in taken] == ["b" * 32]
    assert asked == ["a" * 32, "b" * 32]
    refused = store.get("a" * 32)
    assert (refused.owner, refused.lease_expires_at, refused.version) == (None, None, 1)
    assert [e.type for e in store.events("a" * 32)] == [EventType.SAGA_STARTED]
    assert store.get("c" * 32).version == 1
