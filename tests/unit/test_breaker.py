"""The circuit breaker's state machine, on a fake clock."""

from __future__ import annotations

import pytest

from saga_cli.breaker import (
    BreakerPolicy,
    BreakerSnapshot,
    BreakerState,
    CircuitBreaker,
    CircuitOpenError,
)
from saga_cli.errors import BusinessError, DefinitionError, TransientError


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def boom() -> None:
    raise TransientError("down")


def fine() -> str:
    return "ok"


def declined() -> None:
    raise BusinessError("no rooms")


def make(threshold: int = 3, cooldown: float = 10.0) -> tuple[CircuitBreaker, Clock, list[str]]:
    clock = Clock()
    changes: list[str] = []
    breaker = CircuitBreaker(
        BreakerSnapshot("hotel"),
        BreakerPolicy(threshold, cooldown),
        lambda s: changes.append(f"{s.state}:{s.failures}"),
        clock,
    )
    return breaker, clock, changes


def test_it_opens_after_the_threshold_and_then_fails_fast_without_calling() -> None:
    breaker, _clock, changes = make()
    for _ in range(3):
        with pytest.raises(TransientError, match="down"):
            breaker.call(boom)
    assert breaker.snapshot.state is BreakerState.OPEN
    called: list[int] = []
    with pytest.raises(CircuitOpenError, match="failing fast"):
        breaker.call(lambda: called.append(1))
    assert called == []
    assert changes == ["closed:1", "closed:2", "open:3"]


def test_after_the_cooldown_one_trial_call_closes_it_on_success() -> None:
    breaker, clock, changes = make()
    for _ in range(3):
        with pytest.raises(TransientError):
            breaker.call(boom)
    clock.now += 10.5
    assert breaker.call(fine) == "ok"
    assert breaker.snapshot.state is BreakerState.CLOSED
    assert breaker.snapshot.failures == 0
    assert changes[-2:] == ["half_open:3", "closed:0"]


def test_a_failed_trial_opens_it_again_for_a_new_cooldown() -> None:
    breaker, clock, _changes = make()
    for _ in range(3):
        with pytest.raises(TransientError):
            breaker.call(boom)
    clock.now += 10.5
    with pytest.raises(TransientError, match="down"):
        breaker.call(boom)
    assert breaker.snapshot.state is BreakerState.OPEN
    assert breaker.snapshot.opened_at == clock.now
    clock.now += 5
    with pytest.raises(CircuitOpenError):
        breaker.call(fine)


def test_business_refusals_are_answers_and_reset_the_count() -> None:
    breaker, _clock, _changes = make()
    for _ in range(2):
        with pytest.raises(TransientError):
            breaker.call(boom)
    with pytest.raises(BusinessError):
        breaker.call(declined)
    assert breaker.snapshot.failures == 0
    assert breaker.snapshot.state is BreakerState.CLOSED


def test_successes_while_closed_write_nothing() -> None:
    breaker, _clock, changes = make()
    for _ in range(5):
        breaker.call(fine)
    assert changes == []


def test_reset_closes_an_open_breaker() -> None:
    breaker, _clock, _changes = make()
    for _ in range(3):
        with pytest.raises(TransientError):
            breaker.call(boom)
    breaker.reset()
    assert breaker.call(fine) == "ok"


def test_a_breaker_starts_from_a_stored_open_state() -> None:
    clock = Clock()
    stored = BreakerSnapshot("hotel", BreakerState.OPEN, 5, opened_at=clock.now - 1)
    breaker = CircuitBreaker(stored, BreakerPolicy(5, 10.0), None, clock)
    with pytest.raises(CircuitOpenError):
        breaker.call(fine)


@pytest.mark.parametrize(("threshold", "cooldown"), [(0, 1.0), (3, 0.0), (3, float("nan"))])
def test_a_breaker_policy_is_validated(threshold: int, cooldown: float) -> None:
    with pytest.raises(DefinitionError):
        BreakerPolicy(threshold, cooldown)


def test_awaited_calls_go_through_the_same_breaker() -> None:
    import asyncio

    breaker, clock, _changes = make(threshold=2)

    async def down() -> None:
        raise TransientError("down")

    async def hangs() -> None:
        await asyncio.sleep(10)

    async def up() -> str:
        return "ok"

    async def scenario() -> None:
        with pytest.raises(TransientError):
            await breaker.call_async(down)
        with pytest.raises(TimeoutError):  # no answer in time counts as a failure
            async with asyncio.timeout(0.01):
                await breaker.call_async(hangs)
        opened = breaker.snapshot.state
        with pytest.raises(CircuitOpenError):
            await breaker.call_async(up)
        clock.now += 11  # past the cool-down: one trial call closes it
        assert await breaker.call_async(up) == "ok"
        assert (opened, breaker.snapshot.state) == (BreakerState.OPEN, BreakerState.CLOSED)

    asyncio.run(scenario())
