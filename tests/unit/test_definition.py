"""Saga definitions are validated when built; retry policies compute bounded delays."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from saga_cli.domain import RetryPolicy, SagaDefinition, Step, StepContext, StepKind
from saga_cli.errors import DefinitionError, InvalidInputError

C = StepKind.COMPENSATABLE
P = StepKind.PIVOT
R = StepKind.RETRIABLE


def noop(ctx: StepContext) -> Any:
    return None


def undo(ctx: StepContext) -> Any:
    return None


def comp(name: str) -> Step:
    return Step(name, noop, undo)


def pivot(name: str) -> Step:
    return Step(name, noop, kind=P)


def retriable(name: str) -> Step:
    return Step(name, noop, kind=R)


# (case id, steps, name of the step the message must name, phrase the message must hold)
INVALID_DEFINITIONS: list[tuple[str, tuple[Step, ...], str, str]] = [
    ("repeated-name", (comp("flight"), comp("flight")), "flight", "repeated"),
    ("repeated-name-across-kinds", (comp("a"), pivot("b"), retriable("b")), "b", "repeated"),
    ("empty-name", (comp("a"), comp("")), "", "empty"),
    ("compensatable-without-compensation", (comp("a"), Step("hotel", noop)), "hotel", "no comp"),
    (
        "compensation-on-pivot",
        (comp("a"), Step("charge", noop, undo, kind=P)),
        "charge",
        "cannot have a compensation",
    ),
    (
        "compensation-on-retriable",
        (comp("a"), Step("notify", noop, undo, kind=R)),
        "notify",
        "cannot have a compensation",
    ),
    ("two-pivots", (comp("a"), pivot("p1"), pivot("p2")), "p2", "pivot"),
    ("pivot-after-retriable", (retriable("r"), pivot("p")), "p", "pivot"),
    ("compensatable-after-pivot", (pivot("p"), comp("late")), "late", "after the pivot"),
    ("compensatable-after-retriable", (retriable("r"), comp("late")), "late", "after the pivot"),
    (
        "compensatable-after-pivot-and-retriable",
        (comp("a"), pivot("p"), retriable("r"), comp("late")),
        "late",
        "could never be compensated",
    ),
]


@pytest.mark.parametrize(
    ("steps", "offender", "phrase"),
    [pytest.param(s, o, p, id=i) for i, s, o, p in INVALID_DEFINITIONS],
)
def test_invalid_definition_is_rejected_naming_the_offending_step(
    steps: tuple[Step, ...], offender: str, phrase: str
) -> None:
    with pytest.raises(DefinitionError) as caught:
        SagaDefinition("trip", steps)
    message = str(caught.value)
    assert repr(offender) in message
    assert phrase in message
    assert "'trip'" in message


def test_definition_error_is_bad_input() -> None:
    with pytest.raises(InvalidInputError):
        SagaDefinition("trip", (Step("a", noop),))
    assert DefinitionError.bad_input is True


@pytest.mark.parametrize(
    ("name", "steps", "phrase"),
    [
        pytest.param("", (comp("a"),), "needs a name", id="empty-saga-name"),
        pytest.param("trip", (), "has no steps", id="no-steps"),
    ],
)
def test_saga_needs_a_name_and_steps(name: str, steps: tuple[Step, ...], phrase: str) -> None:
    with pytest.raises(DefinitionError, match=phrase):
        SagaDefinition(name, steps)


@pytest.mark.parametrize(
    "kinds",
    [
        pytest.param("c", id="one-compensatable"),
        pytest.param("p", id="pivot-alone"),
        pytest.param("r", id="retriable-alone"),
        pytest.param("ccc", id="compensatables"),
        pytest.param("ccp", id="compensatables-then-pivot"),
        pytest.param("ccprr", id="full-shape"),
        pytest.param("crr", id="compensatable-then-retriables"),
        pytest.param("pr", id="pivot-then-retriable"),
        pytest.param("rrr", id="retriables"),
    ],
)
def test_valid_shapes_are_accepted_and_indexed(kinds: str) -> None:
    make = {"c": comp, "p": pivot, "r": retriable}
    steps = tuple(make[k](f"s{i}") for i, k in enumerate(kinds))
    definition = SagaDefinition("trip", steps)
    assert definition.step_names == tuple(f"s{i}" for i in range(len(kinds)))
    assert dict(definition.index) == {f"s{i}": i for i in range(len(kinds))}


# -- retry policies -------------------------------------------------------------


def test_delays_grow_exponentially_from_the_first_retry() -> None:
    policy = RetryPolicy(max_attempts=6, initial_delay=0.5, multiplier=3.0, max_delay=1000.0)
    assert [policy.delay_before(a) for a in range(2, 7)] == [0.5, 1.5, 4.5, 13.5, 40.5]


def test_delays_are_capped_at_max_delay() -> None:
    policy = RetryPolicy(max_attempts=20, initial_delay=1.0, multiplier=2.0, max_delay=5.0)
    delays = [policy.delay_before(a) for a in range(2, 21)]
    assert delays[:3] == [1.0, 2.0, 4.0]
    assert delays[3:] == [5.0] * (len(delays) - 3)


def test_zero_initial_delay_means_no_wait_even_with_jitter() -> None:
    policy = RetryPolicy(max_attempts=5, initial_delay=0.0, jitter=1.0)
    assert [policy.delay_before(a, random.Random(1)) for a in range(2, 6)] == [0.0] * 4


class FixedRandom(random.Random):
    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


@pytest.mark.parametrize(
    ("draw", "expected"),
    [(0.0, 8.0), (0.5, 6.0), (0.999999, 4.000004)],
)
def test_jitter_removes_a_drawn_fraction_of_the_delay(draw: float, expected: float) -> None:
    policy = RetryPolicy(max_attempts=5, initial_delay=2.0, multiplier=2.0, jitter=0.5)
    assert policy.delay_before(4, FixedRandom(draw)) == pytest.approx(expected)


@given(
    attempt=st.integers(min_value=2, max_value=40),
    initial=st.floats(min_value=0.0, max_value=10.0),
    multiplier=st.floats(min_value=1.0, max_value=4.0),
    cap=st.floats(min_value=0.0, max_value=60.0),
    jitter=st.floats(min_value=0.0, max_value=1.0),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_jittered_delay_stays_within_bounds(
    attempt: int, initial: float, multiplier: float, cap: float, jitter: float, seed: int
) -> None:
    policy = RetryPolicy(
        max_attempts=50, initial_delay=initial, multiplier=multiplier, max_delay=cap, jitter=jitter
    )
    base = min(cap, initial * multiplier ** (attempt - 2))
    delay = policy.delay_before(attempt, random.Random(seed))
    assert base * (1 - jitter) - 1e-9 <= delay <= base + 1e-9
    assert 0.0 <= delay <= cap + 1e-9


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"max_attempts": 0}, id="zero-attempts"),
        pytest.param({"max_attempts": -3}, id="negative-attempts"),
        pytest.param({"initial_delay": -0.1}, id="negative-initial-delay"),
        pytest.param({"max_delay": -1.0}, id="negative-max-delay"),
        pytest.param({"multiplier": 0.5}, id="shrinking-multiplier"),
        pytest.param({"jitter": -0.01}, id="negative-jitter"),
        pytest.param({"jitter": 1.01}, id="jitter-above-one"),
        pytest.param({"jitter": math.nan}, id="nan-jitter"),
    ],
)
def test_invalid_retry_policy_is_rejected(kwargs: dict[str, Any]) -> None:
    with pytest.raises(DefinitionError):
        RetryPolicy(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"initial_delay": math.nan}, id="nan-initial-delay"),
        pytest.param({"max_delay": math.nan}, id="nan-max-delay"),
        pytest.param({"multiplier": math.nan}, id="nan-multiplier"),
    ],
)
def test_nan_retry_delays_are_rejected(kwargs: dict[str, Any]) -> None:
    # NaN compares false with everything, so `value < 0` lets it through and
    # the backoff turns nonsensical: NaN initial_delay waits max_delay every
    # time, NaN max_delay yields NaN delays (stored as retry_at=NaN, not JSON).
    with pytest.raises(DefinitionError):
        RetryPolicy(max_attempts=3, **kwargs)


def test_default_policy_makes_one_attempt() -> None:
    step = Step("a", noop, undo)
    assert step.retry.max_attempts == 1
    assert step.compensation_retry.max_attempts > 1
