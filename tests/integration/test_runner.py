"""SagaRunner on small hand-written sagas and a real SQLite log: resume, backoff, locks."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from saga_cli.domain import (
    EventType,
    RetryPolicy,
    SagaDefinition,
    SagaStatus,
    Step,
    StepContext,
    StepKind,
    compensation_order,
    replay,
)
from saga_cli.engine import SagaRunner, registry
from saga_cli.errors import (
    BusinessError,
    DatabaseLockedError,
    InvalidInputError,
    TransientError,
    UnknownSagaError,
)
from saga_cli.store import SagaStore, open_store

E = EventType


class Crash(BaseException):
    """The process dies; the runner must not catch this."""


def no_sleep(seconds: float) -> None:
    return None


class Participants:
    """Records calls; each step's behaviour per call is scripted by a list of callables."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, int, str]] = []
        self.script: dict[str, list[Callable[[StepContext], Any]]] = {}

    def plan(self, name: str, *behaviours: Callable[[StepContext], Any]) -> None:
        self.script[name] = list(behaviours)

    def fn(self, name: str) -> Callable[[StepContext], Any]:
        def call(ctx: StepContext) -> Any:
            self.calls.append((name, ctx.step, ctx.attempt, ctx.key))
            behaviours = self.script.get(name)
            if behaviours:
                return behaviours.pop(0)(ctx)
            return {"done": name}

        return call

    def names(self) -> list[str]:
        return [name for name, _, _, _ in self.calls]


def ok(ctx: StepContext) -> Any:
    return {"ok": ctx.step}


def transient(ctx: StepContext) -> Any:
    raise TransientError(f"{ctx.step} timed out")


def business(ctx: StepContext) -> Any:
    raise BusinessError(f"{ctx.step} declined")


def crash(ctx: StepContext) -> Any:
    raise Crash


def step(p: Participants, name: str, kind: str = "c", **kwargs: Any) -> Step:
    if kind == "c":
        return Step(name, p.fn(name), p.fn(f"undo-{name}"), **kwargs)
    real = StepKind.PIVOT if kind == "p" else StepKind.RETRIABLE
    return Step(name, p.fn(name), kind=real, **kwargs)


def types(store: SagaStore, execution_id: str) -> list[tuple[str, str | None]]:
    return [(e.type.value, e.step) for e in store.events(execution_id)]


def test_stuck_forward_execution_resumes_forward_and_completes(store: SagaStore) -> None:
    p = Participants()
    saga = SagaDefinition(
        "order",
        (
            step(p, "reserve"),
            step(p, "charge", "p"),
            step(p, "ship", "r", retry=RetryPolicy(max_attempts=2)),
        ),
    )
    p.plan("ship", transient, transient)
    runner = SagaRunner(store, registry(saga), sleep=no_sleep)
    outcome = runner.run(saga, {})
    assert outcome.status is SagaStatus.STUCK
    assert outcome.error is not None and "ship" in outcome.error
    assert p.names() == ["reserve", "charge", "ship", "ship"]
    resumed = runner.resume(outcome.execution_id)
    assert resumed.status is SagaStatus.COMPLETED
    assert p.names() == ["reserve", "charge", "ship", "ship", "ship"]
    events = types(store, outcome.execution_id)
    assert ("saga_stuck", "ship") in events
    assert events[-4:] == [
        ("saga_resumed", None),
        ("step_started", "ship"),
        ("step_succeeded", "ship"),
        ("saga_completed", None),
    ]
    assert not any(kind.startswith("compensation") for kind, _ in events)


def test_stuck_compensation_resumes_backward_and_finishes_in_reverse(store: SagaStore) -> None:
    p = Participants()
    once = RetryPolicy(max_attempts=1)
    saga = SagaDefinition(
        "order",
        (
            step(p, "a", compensation_retry=once),
            step(p, "b", compensation_retry=once),
            step(p, "c", compensation_retry=once),
        ),
    )
    p.plan("c", business)
    p.plan("undo-b", transient)
    runner = SagaRunner(store, registry(saga), sleep=no_sleep)
    outcome = runner.run(saga, {})
    assert outcome.status is SagaStatus.STUCK
    assert outcome.error is not None and "'b'" in outcome.error
    assert store.get(outcome.execution_id).status is SagaStatus.STUCK
    assert store.unfinished() == []  # stuck waits for an operator, not for resume --all
    resumed = runner.resume(outcome.execution_id)
    assert resumed.status is SagaStatus.COMPENSATED
    assert p.names() == ["a", "b", "c", "undo-b", "undo-b", "undo-a"]
    assert compensation_order(saga, store.events(outcome.execution_id)) == ["b", "a"]


def test_business_error_in_a_compensation_is_retried_not_escalated(store: SagaStore) -> None:
    p = Participants()
    saga = SagaDefinition(
        "order",
        (step(p, "a", compensation_retry=RetryPolicy(max_attempts=3)), step(p, "b")),
    )
    p.plan("b", business)
    p.plan("undo-a", business, business)
    runner = SagaRunner(store, registry(saga), sleep=no_sleep)
    outcome = runner.run(saga, {})
    assert outcome.status is SagaStatus.COMPENSATED
    assert [c for c in p.calls if c[0] == "undo-a"] == [
        ("undo-a", "a", attempt, f"{outcome.execution_id}:a:compensate") for attempt in (1, 2, 3)
    ]


def test_business_error_in_an_action_is_not_retried(store: SagaStore) -> None:
    p = Participants()
    saga = SagaDefinition("order", (step(p, "a", retry=RetryPolicy(max_attempts=5)),))
    p.plan("a", business)
    outcome = SagaRunner(store, registry(saga), sleep=no_sleep).run(saga, {})
    assert outcome.status is SagaStatus.COMPENSATED
    assert p.names() == ["a"]


def test_compensate_is_refused_while_the_pivot_is_in_flight(store: SagaStore) -> None:
    # The process died inside the pivot call: the pivot may have committed, and
    # it has no compensation. Undoing the steps before it would leave the
    # pivot's effect standing alone, so the operator must resume instead
    # (which repeats the pivot under its idempotency key and learns its outcome).
    p = Participants()
    saga = SagaDefinition("order", (step(p, "reserve"), step(p, "charge", "p")))
    p.plan("charge", crash)
    runner = SagaRunner(store, registry(saga), sleep=no_sleep)
    with pytest.raises(Crash):
        runner.run(saga, {}, execution_id="a" * 32)
    before = store.events("a" * 32)
    assert before[-1].type is E.STEP_STARTED and before[-1].step == "charge"
    with pytest.raises(InvalidInputError):
        runner.compensate("a" * 32)
    assert store.events("a" * 32) == before
    assert "undo-reserve" not in p.names()


def test_resume_repeats_the_pivot_in_flight_with_the_same_key(store: SagaStore) -> None:
    p = Participants()
    saga = SagaDefinition("order", (step(p, "reserve"), step(p, "charge", "p")))
    p.plan("charge", crash)
    runner = SagaRunner(store, registry(saga), sleep=no_sleep)
    with pytest.raises(Crash):
        runner.run(saga, {}, execution_id="b" * 32)
    assert runner.resume("b" * 32).status is SagaStatus.COMPLETED
    charges = [c for c in p.calls if c[0] == "charge"]
    assert charges == [("charge", "charge", 1, "b" * 32 + ":charge")] * 2


def test_a_crash_during_the_backoff_wait_keeps_the_attempt_count(store: SagaStore) -> None:
    p = Participants()
    policy = RetryPolicy(max_attempts=3, initial_delay=30.0, max_delay=30.0)
    saga = SagaDefinition("order", (step(p, "a", retry=policy),))
    p.plan("a", transient, transient)
    slept: list[float] = []

    def dying_sleep(seconds: float) -> None:
        slept.append(seconds)
        raise Crash

    with pytest.raises(Crash):
        SagaRunner(store, registry(saga), sleep=dying_sleep).run(saga, {}, execution_id="c" * 32)
    assert len(slept) == 1 and 0 < slept[0] <= 30.0
    failed = store.events("c" * 32)[-1]
    assert failed.type is E.STEP_FAILED and failed.detail is not None
    assert "retry_at" in failed.detail

    outcome = SagaRunner(store, registry(saga), sleep=slept.append).resume("c" * 32)
    assert outcome.status is SagaStatus.COMPLETED
    # attempt 1 before the crash, then 2 and 3 after it: the budget was not reset
    assert [attempt for name, _, attempt, _ in p.calls] == [1, 2, 3]
    assert all(0 < s <= 30.0 for s in slept)


def test_backoff_waits_grow_between_attempts(store: SagaStore) -> None:
    p = Participants()
    policy = RetryPolicy(max_attempts=4, initial_delay=1.0, multiplier=3.0, max_delay=100.0)
    saga = SagaDefinition("order", (step(p, "a", "r", retry=policy),))
    p.plan("a", transient, transient, transient)
    now = [1000.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    runner = SagaRunner(store, registry(saga), clock=lambda: now[0], sleep=sleep)
    assert runner.run(saga, {}).status is SagaStatus.COMPLETED
    assert slept == [1.0, 3.0, 9.0]


def test_results_of_earlier_steps_reach_later_steps_after_a_resume(store: SagaStore) -> None:
    p = Participants()
    seen: list[Any] = []

    def use_results(ctx: StepContext) -> Any:
        seen.append(dict(ctx.results))
        return {"total": ctx.results["a"]["n"] + 1}

    saga = SagaDefinition("order", (step(p, "a"), step(p, "b")))
    p.plan("a", lambda ctx: {"n": 41})
    p.plan("b", crash, use_results)
    runner = SagaRunner(store, registry(saga), sleep=no_sleep)
    with pytest.raises(Crash):
        runner.run(saga, {"x": 1}, execution_id="d" * 32)
    outcome = SagaRunner(store, registry(saga), sleep=no_sleep).resume("d" * 32)
    assert outcome.status is SagaStatus.COMPLETED
    assert seen == [{"a": {"n": 41}}]
    assert dict(outcome.results) == {"a": {"n": 41}, "b": {"total": 42}}


def test_later_steps_see_the_same_results_whether_or_not_the_execution_was_resumed(
    store: SagaStore,
) -> None:
    # A result the log cannot hold verbatim (a datetime, a tuple) must not make a
    # resumed execution behave differently from one that never crashed: either
    # both see the stored form, or the result is refused in both.
    def run(execution_id: str, crash_first: bool) -> tuple[SagaStatus, list[Any], Any]:
        p = Participants()
        seen: list[Any] = []

        def look(ctx: StepContext) -> Any:
            seen.append(ctx.results.get("a"))
            return None

        saga = SagaDefinition("order", (step(p, "a"), step(p, "b")))
        p.plan("a", lambda ctx: {"at": datetime(2026, 1, 2, 3, 4, 5), "pair": (1, 2)})
        p.plan("b", *([crash] if crash_first else []), look)
        try:
            outcome = SagaRunner(store, registry(saga), sleep=no_sleep).run(
                saga, {}, execution_id=execution_id
            )
        except Crash:
            outcome = SagaRunner(store, registry(saga), sleep=no_sleep).resume(execution_id)
        replayed = replay(saga, store.events(execution_id))
        assert dict(replayed.results) == dict(outcome.results)
        return outcome.status, seen, replayed.results.get("a")

    straight = run("1" * 32, crash_first=False)
    resumed = run("2" * 32, crash_first=True)
    assert straight == resumed


def test_a_payload_the_log_cannot_store_is_refused_before_anything_runs(
    store: SagaStore,
) -> None:
    p = Participants()
    saga = SagaDefinition("order", (step(p, "a"),))
    with pytest.raises(InvalidInputError, match="payload"):
        SagaRunner(store, registry(saga)).run(saga, {"tags": {"a", "b"}})
    assert p.calls == []
    assert store.list_executions() == []


def test_a_failing_event_listener_does_not_break_the_saga(store: SagaStore) -> None:
    p = Participants()
    saga = SagaDefinition("order", (step(p, "a"), step(p, "b")))
    heard: list[str] = []

    def listener(_execution_id: str, event: Any) -> None:
        heard.append(event.type.value)
        raise RuntimeError("display broke")

    outcome = SagaRunner(store, registry(saga), on_event=listener).run(saga, {})
    assert outcome.status is SagaStatus.COMPLETED
    assert heard == [kind for kind, _ in types(store, outcome.execution_id)]


def test_resume_of_an_execution_of_an_unknown_saga_writes_nothing(store: SagaStore) -> None:
    p = Participants()
    saga = SagaDefinition("order", (step(p, "a"), step(p, "b")))
    p.plan("b", crash)
    with pytest.raises(Crash):
        SagaRunner(store, registry(saga)).run(saga, {}, execution_id="e" * 32)
    other = SagaDefinition("other", (step(p, "z"),))
    before = (store.get("e" * 32), store.events("e" * 32))
    with pytest.raises(UnknownSagaError, match="order"):
        SagaRunner(store, registry(other)).resume("e" * 32)
    assert (store.get("e" * 32), store.events("e" * 32)) == before


def test_resume_all_rejects_a_concurrency_below_one(store: SagaStore) -> None:
    saga = SagaDefinition("order", (step(Participants(), "a"),))
    with pytest.raises(InvalidInputError):
        SagaRunner(store, registry(saga)).resume_all(concurrency=0)


def test_a_locked_log_stops_the_runner_before_the_next_call_and_loses_nothing(
    db_path: Path,
) -> None:
    store = open_store(f"sqlite:///{db_path}?busy_timeout=100")
    # Plain steps run on the engine's threads, so the connection is shared with one.
    holder = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
    try:
        p = Participants()

        def lock_after(ctx: StepContext) -> Any:
            holder.execute("BEGIN IMMEDIATE")  # another writer grabs the file
            return {"n": 1}

        saga = SagaDefinition("order", (step(p, "a"), step(p, "b")))
        p.plan("a", lock_after)
        runner = SagaRunner(store, registry(saga), sleep=no_sleep)
        with pytest.raises(DatabaseLockedError):
            runner.run(saga, {}, execution_id="f" * 32)
        assert p.names() == ["a"]  # b was not called: its started record is not durable
        holder.execute("ROLLBACK")
        assert types(store, "f" * 32) == [("saga_started", None), ("step_started", "a")]
        outcome = runner.resume("f" * 32)
        assert outcome.status is SagaStatus.COMPLETED
        # a's outcome was never recorded, so a is asked again under the same key
        assert [(n, key) for n, _, _, key in p.calls] == [
            ("a", "f" * 32 + ":a"),
            ("a", "f" * 32 + ":a"),
            ("b", "f" * 32 + ":b"),
        ]
    finally:
        holder.close()
        store.close()
