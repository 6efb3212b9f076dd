"""A call an open breaker never sent: fail fast before the pivot, wait it out after it."""

from __future__ import annotations

from saga_cli import Orchestrator, RetryPolicy, Saga, SagaStatus, StepContext
from saga_cli.domain import EventType
from saga_cli.errors import NotSentError
from saga_cli.store import SagaStore

QUICK = RetryPolicy(max_attempts=4, initial_delay=0.001)


def test_a_retriable_step_waits_out_an_open_breaker_and_completes(store: SagaStore) -> None:
    saga = Saga("breaker-after-pivot")
    calls: list[int] = []

    @saga.step(kind="pivot")
    def pay(ctx: StepContext) -> str:
        return "paid"

    @saga.step(kind="retriable", retry=QUICK)
    def confirm(ctx: StepContext) -> str:
        calls.append(ctx.attempt)
        if ctx.attempt < 3:
            raise NotSentError("breaker open", retry_after=0.02)
        return "confirmed"

    with Orchestrator(store, [saga]) as orchestrator:
        outcome = orchestrator.run(saga, {})
    assert outcome.status is SagaStatus.COMPLETED
    assert calls == [1, 2, 3]
    failures = [e for e in store.events(outcome.execution_id) if e.type is EventType.STEP_FAILED]
    # each retry was due no sooner than the breaker's retry_after (the failure's
    # timestamp is taken a moment after the due time is set: allow for a busy
    # machine), and the next attempt waited for it
    started = [e for e in store.events(outcome.execution_id) if e.type is EventType.STEP_STARTED]
    retries = [e for e in started if e.step == "confirm"][1:]
    assert all(e.detail and e.detail["retry_at"] - e.at >= 0.015 for e in failures)
    assert all(
        nxt.at >= failed.detail["retry_at"]
        for failed, nxt in zip(failures, retries, strict=True)
        if failed.detail
    )


def test_a_step_before_the_pivot_fails_fast_and_is_not_compensated(store: SagaStore) -> None:
    saga = Saga("breaker-before-pivot")
    undone: list[str] = []

    @saga.step(retry=QUICK)
    def reserve(ctx: StepContext) -> str:
        raise NotSentError("breaker open", retry_after=5.0)

    @reserve.compensation
    def release(ctx: StepContext) -> None:
        undone.append(ctx.step)

    @saga.step(kind="pivot")
    def pay(ctx: StepContext) -> str:
        return "paid"

    with Orchestrator(store, [saga]) as orchestrator:
        outcome = orchestrator.run(saga, {})
    assert outcome.status is SagaStatus.COMPENSATED
    assert undone == []  # never sent: nothing to undo
    attempts = [
        e.attempt for e in store.events(outcome.execution_id) if e.type is EventType.STEP_FAILED
    ]
    assert attempts == [1]  # no waiting for a 5 s cool-down before the pivot
