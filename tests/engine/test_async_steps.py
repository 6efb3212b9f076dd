"""``async def`` steps and compensations: awaited on the loop, mixed with plain ones, timed out."""

from __future__ import annotations

import asyncio
import datetime
import math
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from saga_cli import Orchestrator, Saga, SagaStatus, StepContext
from saga_cli.domain import EventType, SagaDefinition, Step, StepKind
from saga_cli.errors import BusinessError
from saga_cli.services.travel import open_services
from saga_cli.store import SagaStore, open_store


def events(store: SagaStore, execution_id: str) -> list[tuple[str, str | None]]:
    return [(e.type.value, e.step) for e in store.events(execution_id)]


def test_async_steps_are_awaited_and_their_results_recorded(store: SagaStore) -> None:
    effects: list[str] = []
    saga: Saga[Any] = Saga("async-order")

    @saga.step()
    async def reserve(ctx: StepContext) -> dict[str, int]:
        await asyncio.sleep(0.01)
        effects.append("reserve")
        return {"n": 1}

    @reserve.compensation
    async def release(ctx: StepContext) -> None:
        effects.append("release")

    @saga.step(kind="pivot")
    def charge(ctx: StepContext) -> int:
        assert ctx.results["reserve"] == {"n": 1}  # the async result, as the log holds it
        effects.append("charge")
        return 2

    with Orchestrator(store, [saga]) as orchestrator:
        outcome = orchestrator.run(saga, {})
    assert outcome.status is SagaStatus.COMPLETED
    assert effects == ["reserve", "charge"]
    assert outcome.results == {"reserve": {"n": 1}, "charge": 2}
    (succeeded,) = [
        e for e in store.events(outcome.execution_id) if e.type is EventType.STEP_SUCCEEDED
    ][:1]
    assert succeeded.detail == {"result": {"n": 1}}


def test_an_async_compensation_runs_when_a_later_step_refuses(store: SagaStore) -> None:
    effects: list[str] = []
    saga: Saga[Any] = Saga("async-refused")

    @saga.step()
    async def reserve(ctx: StepContext) -> str:
        effects.append("reserve")
        return "held"

    @reserve.compensation
    async def release(ctx: StepContext) -> None:
        await asyncio.sleep(0.01)
        assert ctx.result == "held"
        effects.append("release")

    @saga.step(kind="pivot")
    async def charge(ctx: StepContext) -> None:
        raise BusinessError("card declined")

    with Orchestrator(store, [saga]) as orchestrator:
        outcome = orchestrator.run(saga, {})
    assert outcome.status is SagaStatus.COMPENSATED
    assert effects == ["reserve", "release"]
    assert ("compensation_succeeded", "reserve") in events(store, outcome.execution_id)


def test_a_parallel_group_mixes_sync_and_async_members_that_run_at_once(
    store: SagaStore,
) -> None:
    # Each member waits for the other to have started: run one after the
    # other, they would time out instead of both succeeding.
    sync_started = threading.Event()
    async_started = threading.Event()
    saga: Saga[Any] = Saga("mixed-group")
    with saga.parallel():

        @saga.step(timeout=5)
        def by_thread(ctx: StepContext) -> str:
            sync_started.set()
            assert async_started.wait(5)
            return "thread"

        @by_thread.compensation
        def undo_thread(ctx: StepContext) -> None:
            return None

        @saga.step(timeout=5)
        async def by_loop(ctx: StepContext) -> str:
            async_started.set()
            while not sync_started.is_set():
                await asyncio.sleep(0.005)
            return "loop"

        @by_loop.compensation
        async def undo_loop(ctx: StepContext) -> None:
            return None

    @saga.step(kind="pivot")
    def finish(ctx: StepContext) -> None:
        return None

    with Orchestrator(store, [saga]) as orchestrator:
        outcome = orchestrator.run(saga, {})
    assert outcome.status is SagaStatus.COMPLETED
    assert outcome.results["by_thread"] == "thread" and outcome.results["by_loop"] == "loop"


def test_an_async_step_past_its_timeout_is_cancelled_compensated_and_its_late_arrival_refused(
    tmp_path: Path,
) -> None:
    store = open_store(str(tmp_path / "saga.db"))
    services = open_services(store)
    cancelled: list[bool] = []
    landed = threading.Event()

    async def late_reserve(ctx: StepContext) -> Any:
        # The request is on its way: cancelling the caller does not stop it.
        async def request() -> Any:
            await asyncio.sleep(0.3)
            try:
                return services.hotel.reserve(ctx.key, ctx.execution_id, "GRAND", "ada")
            finally:
                landed.set()

        sent = asyncio.ensure_future(request())
        try:
            return await asyncio.shield(sent)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    def cancel_hotel(ctx: StepContext) -> Any:
        return services.hotel.cancel(ctx.action_key, ctx.execution_id)

    definition = SagaDefinition(
        "late-trip",
        (
            Step("hotel", late_reserve, cancel_hotel, timeout=0.1),
            Step("pay", lambda ctx: None, kind=StepKind.PIVOT),
        ),
    )

    async def main() -> Any:
        with Orchestrator(store, [definition]) as orchestrator:
            outcome = await orchestrator.run_async(definition, {})
            # The late request lands on this loop, after the compensation.
            for _ in range(100):
                if landed.is_set():
                    break
                await asyncio.sleep(0.02)
            return outcome

    outcome = asyncio.run(main())
    assert outcome.status is SagaStatus.COMPENSATED
    assert "did not answer within 0.1s" in (outcome.error or "")
    assert cancelled == [True]
    assert landed.is_set()
    held = {key: (resource, status) for key, _s, resource, status in services.hotel.reservations()}
    # The compensation left a tombstone; the late reserve was refused by it.
    assert held == {f"{outcome.execution_id}:hotel": (None, "canceled")}
    grand = next(r for r in services.inventory() if r.resource == "GRAND")
    assert grand.available == grand.capacity
    services.close()
    store.close()


@pytest.mark.parametrize(
    ("value", "type_name"),
    [
        (object(), "object"),
        ({1, 2}, "set"),
        (b"bytes", "bytes"),
        (datetime.datetime(2026, 1, 1), "datetime"),
        (math.nan, "float"),
        ({"x": math.inf}, "dict"),
    ],
)
def test_a_step_returning_what_json_cannot_hold_fails_and_is_compensated(
    store: SagaStore, value: Any, type_name: str
) -> None:
    effects: list[str] = []
    saga: Saga[Any] = Saga("bad-result")

    @saga.step()
    def reserve(ctx: StepContext) -> Any:
        effects.append("reserve")
        return value

    @reserve.compensation
    def release(ctx: StepContext) -> None:
        effects.append("release")

    @saga.step(kind="pivot")
    def charge(ctx: StepContext) -> None:
        effects.append("charge")

    with Orchestrator(store, [saga]) as orchestrator:
        outcome = orchestrator.run(saga, {})
    assert outcome.status is SagaStatus.COMPENSATED
    assert effects == ["reserve", "release"]  # its effect may exist: undone, never "succeeded"
    assert f"step 'reserve' returned a {type_name}" in (outcome.error or "")
    kinds = events(store, outcome.execution_id)
    assert ("step_succeeded", "reserve") not in kinds
    assert ("step_failed", "reserve") in kinds


def test_a_non_json_result_past_the_pivot_leaves_the_execution_stuck(store: SagaStore) -> None:
    saga: Saga[Any] = Saga("bad-late-result")

    @saga.step(kind="pivot")
    def charge(ctx: StepContext) -> None:
        return None

    @saga.step(kind="retriable")
    async def notify(ctx: StepContext) -> Any:
        return {"sent": {1, 2}}

    with Orchestrator(store, [saga]) as orchestrator:
        outcome = orchestrator.run(saga, {})
    assert outcome.status is SagaStatus.STUCK
    assert "step 'notify' returned a dict" in (outcome.error or "")
    attempts = [e for e in store.events(outcome.execution_id) if e.type is EventType.STEP_STARTED]
    assert len(attempts) == 2  # the pivot, and notify once: the same code would return the same


def test_a_step_without_a_timeout_gets_the_default_one(store: SagaStore) -> None:
    release = threading.Event()
    saga: Saga[Any] = Saga("hangs")

    @saga.step()
    def hang(ctx: StepContext) -> None:
        release.wait(30)

    @hang.compensation
    def undo(ctx: StepContext) -> None:
        return None

    @saga.step(kind="pivot")
    def done(ctx: StepContext) -> None:
        return None

    started = time.monotonic()
    with Orchestrator(store, [saga], step_timeout=0.2) as orchestrator:
        outcome = orchestrator.run(saga, {})
    release.set()
    assert outcome.status is SagaStatus.COMPENSATED
    assert "did not answer within 0.2s" in (outcome.error or "")
    assert time.monotonic() - started < 10  # not the 30 s the call would have taken


def test_a_saga_wide_step_timeout_overrides_the_engine_default(store: SagaStore) -> None:
    release = threading.Event()
    saga: Saga[Any] = Saga("hangs-too", step_timeout=0.2)

    @saga.step()
    async def hang(ctx: StepContext) -> None:
        await asyncio.sleep(30)

    @hang.compensation
    def undo(ctx: StepContext) -> None:
        return None

    @saga.step(kind="pivot", timeout=None)  # explicitly unbounded
    def done(ctx: StepContext) -> None:
        return None

    with Orchestrator(store, [saga], step_timeout=60) as orchestrator:
        outcome = orchestrator.run(saga, {})
    release.set()
    assert outcome.status is SagaStatus.COMPENSATED
    assert "did not answer within 0.2s" in (outcome.error or "")


def test_async_api_runs_from_a_running_loop_and_the_sync_one_refuses_to(store: SagaStore) -> None:
    saga: Saga[Any] = Saga("from-a-loop")

    @saga.step(kind="pivot")
    async def only(ctx: StepContext) -> int:
        return 7

    async def main() -> None:
        with Orchestrator(store, [saga]) as orchestrator:
            outcomes = await asyncio.gather(*(orchestrator.run_async(saga, {}) for _ in range(20)))
            assert {o.status for o in outcomes} == {SagaStatus.COMPLETED}
            assert len({o.execution_id for o in outcomes}) == 20
            with pytest.raises(RuntimeError, match="_async"):
                orchestrator.run(saga, {})

    asyncio.run(main())


def test_a_slow_call_holds_up_only_its_own_execution(store: SagaStore) -> None:
    # One execution's call takes up to 5 s; 200 fast ones run beside it. Each
    # fast one finishes while the slow call is still running, and the slow
    # one finishes last: nothing waits for "the round".
    released = threading.Event()
    slow_returned = threading.Event()
    saga: Saga[Any] = Saga("head-of-line")

    @saga.step(kind="pivot", timeout=30)
    def work(ctx: StepContext) -> str:
        if ctx.payload["slow"]:
            released.wait(5)
            slow_returned.set()
            return "slow"
        return "fast"

    finished: list[tuple[bool, bool]] = []  # (was it slow, had the slow call returned)

    def progress(outcome: Any) -> None:
        finished.append((outcome.results["work"] == "slow", slow_returned.is_set()))
        if len(finished) == 200:
            released.set()

    payloads = [{"slow": True}] + [{"slow": False}] * 200
    with Orchestrator(store, [saga]) as orchestrator:
        outcomes = orchestrator.run_many(saga, payloads, concurrency=8, progress=progress)
    assert len(outcomes) == 201
    assert finished[:200] == [(False, False)] * 200
    assert finished[200] == (True, True)


def test_a_slow_async_call_holds_up_only_its_own_execution(store: SagaStore) -> None:
    saga: Saga[Any] = Saga("head-of-line-async")
    release: dict[str, asyncio.Event] = {}

    @saga.step(kind="pivot", timeout=30)
    async def work(ctx: StepContext) -> str:
        if ctx.payload["slow"]:
            release["slow"] = asyncio.Event()
            try:
                async with asyncio.timeout(5):
                    await release["slow"].wait()
            except TimeoutError:
                pass
            return "slow"
        await asyncio.sleep(0.001)
        return "fast"

    order: list[str] = []

    def progress(outcome: Any) -> None:
        order.append(outcome.results["work"])
        if len(order) == 200:
            release["slow"].set()

    payloads = [{"slow": True}] + [{"slow": False}] * 200
    with Orchestrator(store, [saga]) as orchestrator:
        orchestrator.run_many(saga, payloads, concurrency=8, progress=progress)
    assert order == ["fast"] * 200 + ["slow"]
