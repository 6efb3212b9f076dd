"""The Worker class and Orchestrator.submit as a Python program uses them, in one process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from saga_cli import Saga, StepContext
from saga_cli.domain import EventType, SagaStatus
from saga_cli.orchestrator import Orchestrator
from saga_cli.store import open_store
from saga_cli.worker import Worker, list_workers


def make_saga(calls: list[tuple[str, str]], hook: Any = None) -> Saga[Any]:
    saga: Saga[Any] = Saga("counter")

    @saga.step()
    def first(ctx: StepContext[Any]) -> str:
        calls.append((ctx.execution_id, "first"))
        if hook is not None:
            hook(ctx)
        return "one"

    @first.compensation
    def undo_first(ctx: StepContext[Any]) -> None:
        calls.append((ctx.execution_id, "undo"))

    @saga.step(kind="pivot")
    def second(ctx: StepContext[Any]) -> str:
        calls.append((ctx.execution_id, "second"))
        return "two"

    return saga


def test_submitted_executions_are_run_once_each_by_a_worker(db_path: Path) -> None:
    calls: list[tuple[str, str]] = []
    saga = make_saga(calls)
    with Orchestrator(str(db_path), [saga]) as engine:
        ids = engine.submit_many(saga, [{"n": n} for n in range(10)])
        assert all(engine.store.get(str(i)).status is SagaStatus.PENDING for i in ids)
        assert calls == []

        report = Worker(engine, concurrency=3, exit_when_idle=True, poll=0.01).run()

        assert report.completed == 10 and report.lost == [] and report.failed == {}
        for execution_id in ids:
            assert engine.store.get(str(execution_id)).status is SagaStatus.COMPLETED
            assert [c for c in calls if c[0] == execution_id] == [
                (execution_id, "first"),
                (execution_id, "second"),
            ]
        assert engine.store.workers() == []


def test_stop_finishes_the_step_in_flight_and_releases_the_leases(db_path: Path) -> None:
    calls: list[tuple[str, str]] = []
    worker: Worker | None = None

    def stop_during_the_call(_ctx: StepContext[Any]) -> None:
        assert worker is not None
        worker.stop()  # as the SIGTERM handler does

    saga = make_saga(calls, stop_during_the_call)
    with Orchestrator(str(db_path), [saga]) as engine:
        (execution_id,) = [str(i) for i in engine.submit_many(saga, [{"n": 1}])]
        worker = Worker(engine, concurrency=2, poll=0.01)

        report = worker.run()

        record = engine.store.get(execution_id)
        events = engine.store.events(execution_id)
        assert report.released == 1 and report.completed == 0
        assert (record.owner, record.lease_expires_at) == (None, None)
        assert record.status is SagaStatus.RUNNING
        # submitted 1, claimed 2, `first` started 3, its outcome and the release 4:
        # one commit, and a version bump that fences this worker off
        assert record.version == 4
        assert (events[-1].type, events[-1].step) == (EventType.STEP_SUCCEEDED, "first")
        assert calls == [(execution_id, "first")]
        # Released, so claimable at once, even with a long lease.
        (again,) = engine.store.claim_ready("other:1:1", 9e9, record.updated_at, limit=5)
        assert again.id == execution_id


def test_a_worker_registers_itself_while_it_runs(db_path: Path) -> None:
    seen: list[list[str]] = []
    saga_store = open_store(str(db_path))

    def look(_ctx: StepContext[Any]) -> None:
        seen.append([view.state for view in list_workers(saga_store)])

    calls: list[tuple[str, str]] = []
    saga = make_saga(calls, look)
    try:
        with Orchestrator(str(db_path), [saga]) as engine:
            engine.submit(saga, {"n": 1})
            Worker(engine, exit_when_idle=True, sagas=["counter"]).run()
        assert seen == [["live"]]
        assert list_workers(saga_store) == []
    finally:
        saga_store.close()


def test_a_worker_only_takes_the_sagas_it_was_given(db_path: Path) -> None:
    calls: list[tuple[str, str]] = []
    saga = make_saga(calls)
    other: Saga[Any] = Saga("other")
    other.step(kind="pivot")(lambda ctx: None)
    with Orchestrator(str(db_path), [saga, other]) as engine:
        mine = engine.submit(saga, {})
        theirs = engine.submit(other, {})
        report = Worker(engine, sagas=["counter"], exit_when_idle=True).run()
        assert report.completed == 1
        assert engine.store.get(mine).status is SagaStatus.COMPLETED
        assert engine.store.get(theirs).status is SagaStatus.PENDING


def test_submit_refuses_a_payload_that_is_not_an_object(db_path: Path) -> None:
    from saga_cli.errors import InvalidInputError

    with Orchestrator(str(db_path), [make_saga([])]) as engine:
        with pytest.raises(InvalidInputError):
            engine.submit("counter", [1, 2])
        assert engine.executions() == []
