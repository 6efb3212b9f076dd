"""Parallel groups on the real runner and log: concurrency, compensation, collected errors."""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from saga_cli import BusinessError, Orchestrator, RetryPolicy, Saga, SagaStatus, StepContext
from saga_cli.domain import EventType, SagaDefinition, Step, StepKind, replay
from saga_cli.store import SagaStore, open_store

NO_WAIT = RetryPolicy(max_attempts=2)


def rendezvous(parties: int) -> threading.Barrier:
    """A barrier that only opens if `parties` calls are in flight at the same time."""
    return threading.Barrier(parties, timeout=5)


def trip(barrier: threading.Barrier | None, fail: str | None = None) -> tuple[Saga, list[str]]:
    calls: list[str] = []
    lock = threading.Lock()
    saga = Saga("parallel-trip")

    def act(ctx: StepContext) -> str:
        with lock:
            calls.append(ctx.step if not ctx.compensating else f"undo {ctx.step}")
        if barrier is not None and ctx.step in ("hotel", "car"):
            barrier.wait()  # raises BrokenBarrierError unless the sibling runs concurrently
        if ctx.step == fail and not ctx.compensating:
            raise BusinessError(f"{ctx.step} refused")
        return ctx.step

    saga.step("flight", compensation=act)(act)
    with saga.parallel("stay"):
        saga.step("hotel", compensation=act)(act)
        saga.step("car", compensation=act)(act)
    saga.step("pay", kind="pivot")(act)
    return saga, calls


def test_a_group_runs_its_steps_concurrently_and_logs_each(store: SagaStore) -> None:
    saga, calls = trip(rendezvous(2))
    with Orchestrator(store, [saga]) as orchestrator:
        outcome = orchestrator.run(saga, {})
    assert outcome.status is SagaStatus.COMPLETED
    assert calls[0] == "flight" and set(calls[1:3]) == {"hotel", "car"} and calls[3] == "pay"
    events = store.events(outcome.execution_id)
    kinds = [(e.type, e.step) for e in events if e.step in ("hotel", "car")]
    # both started records are durable before either member runs (one commit)
    assert {k for k in kinds[:2]} == {
        (EventType.STEP_STARTED, "hotel"),
        (EventType.STEP_STARTED, "car"),
    }
    assert set(kinds[2:]) == {
        (EventType.STEP_SUCCEEDED, "hotel"),
        (EventType.STEP_SUCCEEDED, "car"),
    }
    assert outcome.results == {"flight": "flight", "hotel": "hotel", "car": "car", "pay": "pay"}


def test_a_failing_member_compensates_its_sibling_and_the_steps_before(store: SagaStore) -> None:
    saga, calls = trip(None, fail="car")
    with Orchestrator(store, [saga]) as orchestrator:
        outcome = orchestrator.run(saga, {})
    assert outcome.status is SagaStatus.COMPENSATED
    assert outcome.error == "car refused"
    assert calls[-2:] == ["undo hotel", "undo flight"]
    assert "undo car" not in calls  # refused: nothing to undo


def test_a_groups_compensations_run_concurrently(store: SagaStore) -> None:
    barrier = rendezvous(2)
    saga = Saga("undo-together")
    undone: list[str] = []

    def act(ctx: StepContext) -> None:
        if ctx.compensating:
            barrier.wait()  # both compensations must be in flight at once
            undone.append(ctx.step)

    def refuse(ctx: StepContext) -> None:
        raise BusinessError("no")

    with saga.parallel():
        saga.step("a", compensation=act)(act)
        saga.step("b", compensation=act)(act)
    saga.step("c", kind="pivot")(refuse)
    with Orchestrator(store, [saga]) as orchestrator:
        outcome = orchestrator.run(saga, {})
    assert outcome.status is SagaStatus.COMPENSATED
    assert sorted(undone) == ["a", "b"]


def test_every_compensation_error_of_a_group_is_collected(store: SagaStore) -> None:
    saga = Saga("stuck-together")
    attempts: dict[str, int] = {}
    lock = threading.Lock()

    def ok(ctx: StepContext) -> None:
        return None

    def broken(ctx: StepContext) -> None:
        with lock:
            attempts[ctx.step] = attempts.get(ctx.step, 0) + 1
        raise RuntimeError(f"{ctx.step} backend down")

    saga.step("first", compensation=ok)(ok)
    with saga.parallel():
        saga.step("a", compensation=broken, compensation_retry=NO_WAIT)(ok)
        saga.step("b", compensation=ok)(ok)
        saga.step("c", compensation=broken, compensation_retry=NO_WAIT)(ok)
    saga.step("pay", kind="pivot")(lambda ctx: (_ for _ in ()).throw(BusinessError("declined")))
    with Orchestrator(store, [saga]) as orchestrator:
        outcome = orchestrator.run(saga, {})
    assert outcome.status is SagaStatus.STUCK
    assert attempts == {"a": 2, "c": 2}  # both tried to the end, not stopped at the first
    assert outcome.error is not None
    assert "compensation 'a' gave up after 2 attempt(s): a backend down" in outcome.error
    assert "compensation 'c' gave up after 2 attempt(s): c backend down" in outcome.error
    events = store.events(outcome.execution_id)
    undone = [e.step for e in events if e.type is EventType.COMPENSATION_SUCCEEDED]
    assert undone == ["b"]  # `first` waits: the group before it is not undone yet


# -- a property: any grouping, any failing step ------------------------------------------------


@st.composite
def grouped(draw: st.DrawFn) -> tuple[list[int], set[int], int | None]:
    """Group sizes of compensatable steps, the failing steps, and a crash event index."""
    sizes = draw(st.lists(st.integers(min_value=1, max_value=3), min_size=1, max_size=4))
    total = sum(sizes)
    # total+1 means nothing fails; total is the pivot
    failing = draw(st.sets(st.integers(min_value=0, max_value=total + 1), min_size=1, max_size=3))
    crash = draw(st.none() | st.integers(min_value=0, max_value=40))
    return sizes, failing, crash


class Crash(BaseException):
    """Stands in for the process dying mid-call: the runner must not catch it."""


def build(
    sizes: list[int], failing: set[int], crash_on: int | None
) -> tuple[SagaDefinition, dict[str, int]]:
    calls = {"n": 0}
    lock = threading.Lock()

    def act(ctx: StepContext) -> str:
        with lock:
            calls["n"] += 1
            if crash_on is not None and calls["n"] == crash_on:
                raise Crash()
        if not ctx.compensating and int(ctx.step[1:]) in failing:
            raise BusinessError("refused")
        return ctx.step

    steps = []
    number = 0
    for group, size in enumerate(sizes):
        for _ in range(size):
            name = f"s{number}"
            steps.append(Step(name, act, act, group=f"g{group}" if size > 1 else None))
            number += 1
    steps.append(Step(f"s{number}", act, kind=StepKind.PIVOT))
    return SagaDefinition("grouped", tuple(steps)), calls


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shape=grouped())
def test_any_grouping_compensates_exactly_what_succeeded_group_by_group(
    shape: tuple[list[int], set[int], int | None],
) -> None:
    sizes, failing, crash = shape
    with tempfile.TemporaryDirectory() as scratch:
        store = open_store(str(Path(scratch) / "log.db"))
        try:
            definition, _calls = build(sizes, failing, crash)
            orchestrator = Orchestrator(store, [definition])
            try:
                outcome = orchestrator.run(definition, {})
                execution_id = outcome.execution_id
            except Crash:
                (record,) = store.list_executions()
                execution_id = record.id
                orchestrator.runner.leases.leave(execution_id)  # the "process" died
                healthy, _ = build(sizes, failing, None)
                orchestrator = Orchestrator(store, [healthy], lease_seconds=0.001)
                outcome = orchestrator.resume(execution_id)
            events = store.events(execution_id)
        finally:
            store.close()
    total = sum(sizes)
    fails = min(failing) <= total
    assert outcome.status is (SagaStatus.COMPENSATED if fails else SagaStatus.COMPLETED)
    state = replay(definition, events)
    succeeded = {definition.steps[i].name for i in state.succeeded}
    undone = [e.step for e in events if e.type is EventType.COMPENSATION_SUCCEEDED]
    if outcome.status is SagaStatus.COMPENSATED:
        assert set(undone) == succeeded and len(undone) == len(set(undone))
        # reverse order by group: no step of an earlier group is undone before a later one
        group_of = {s.name: definition.spans[definition.index[s.name]][0] for s in definition.steps}
        starts = [group_of[name] for name in undone if name is not None]
        assert starts == sorted(starts, reverse=True)
    else:
        assert undone == [] and succeeded == set(definition.step_names)


def test_two_members_refusing_together_compensate_once(store: SagaStore) -> None:
    saga = Saga("both-refuse")
    undone: list[str] = []

    def act(ctx: StepContext) -> str:
        if ctx.compensating:
            undone.append(ctx.step)
        elif ctx.step in ("left", "right"):
            raise BusinessError(f"{ctx.step} refuses")
        return ctx.step

    saga.step("first", compensation=act)(act)
    with saga.parallel():
        saga.step("left", compensation=act)(act)
        saga.step("middle", compensation=act)(act)
        saga.step("right", compensation=act)(act)
    with Orchestrator(store, [saga]) as orchestrator:
        outcome = orchestrator.run(saga, {})
    assert outcome.status is SagaStatus.COMPENSATED
    assert outcome.error == "left refuses"  # the first failure recorded
    assert undone == ["middle", "first"]
    events = store.events(outcome.execution_id)
    failed = [str(e.step) for e in events if e.type is EventType.STEP_FAILED]
    assert sorted(failed) == ["left", "right"]  # each refusal recorded against its own call


def test_any_member_result_is_what_its_compensation_sees(store: SagaStore) -> None:
    saga = Saga("results")
    seen: dict[str, Any] = {}

    def act(ctx: StepContext) -> Any:
        if ctx.compensating:
            seen[ctx.step] = ctx.result
            return None
        if ctx.step == "z":
            raise BusinessError("no")
        return {"made": ctx.step}

    with saga.parallel():
        saga.step("x", compensation=act)(act)
        saga.step("y", compensation=act)(act)
    saga.step("z", compensation=act)(act)
    with Orchestrator(store, [saga]) as orchestrator:
        assert orchestrator.run(saga, {}).status is SagaStatus.COMPENSATED
    assert seen == {"x": {"made": "x"}, "y": {"made": "y"}}
