"""The decorator form of a saga: what it declares, what it refuses, and its version."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from saga_cli import DefinitionError, RetryPolicy, Saga, SagaDefinition, Step, StepContext, StepKind
from saga_cli.domain import (
    DEFAULT_RETRIABLE_RETRY,
    NO_RETRY,
    definition_changes,
    recorded_steps,
    shape_of,
)
from saga_cli.saga import as_definition


class Order(BaseModel):
    sku: str


def act(ctx: StepContext[Any]) -> str:
    return ctx.step


def test_steps_run_in_declaration_order_with_their_compensations() -> None:
    order = Saga("order", payload=Order, description="d")

    @order.step(retry=RetryPolicy(max_attempts=3), timeout=2.5)
    def reserve(ctx: StepContext[Order]) -> str:
        return ctx.payload.sku

    @reserve.compensation
    def release(ctx: StepContext[Order]) -> None:
        return None

    @order.step(kind="pivot")
    def charge(ctx: StepContext[Order]) -> None:
        return None

    @order.step(kind=StepKind.RETRIABLE)
    def email(ctx: StepContext[Order]) -> None:
        return None

    definition = order.definition
    assert definition.step_names == ("reserve", "charge", "email")
    first = definition.steps[0]
    assert first.action is reserve.action and first.compensation is release
    assert first.retry.max_attempts == 3 and first.timeout == 2.5
    assert [s.kind for s in definition.steps] == [
        StepKind.COMPENSATABLE,
        StepKind.PIVOT,
        StepKind.RETRIABLE,
    ]
    assert definition.steps[1].retry == NO_RETRY
    assert definition.steps[2].retry == DEFAULT_RETRIABLE_RETRY  # retriable: retried by default
    assert definition.payload is Order and definition.description == "d"
    # the handle is still the function, for users' unit tests
    context = StepContext("id", "reserve", "id:reserve", "id:reserve", 1, Order(sku="A"), {})
    assert reserve(context) == "A"


def test_a_module_level_saga_knows_where_it_was_declared() -> None:
    assert MODULE_SAGA.definition.source == f"{__name__}:MODULE_SAGA"


MODULE_SAGA = Saga("module-level")
MODULE_SAGA.step("only", kind="pivot")(act)


def test_parallel_blocks_group_consecutive_steps() -> None:
    trip = Saga("trip")
    trip.step("flight", compensation=act)(act)
    with trip.parallel():
        trip.step("hotel", compensation=act)(act)
        trip.step("car", compensation=act)(act)
    with trip.parallel("extras"):
        trip.step("insurance", compensation=act)(act)
    trip.step("pay", kind="pivot")(act)
    definition = trip.definition
    assert [s.group for s in definition.steps] == [None, "parallel-1", "parallel-1", "extras", None]
    assert list(definition.members(1)) == [1, 2] == list(definition.members(2))
    assert list(definition.members(0)) == [0] and list(definition.members(3)) == [3]


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda s: s.step("a")(act), "compensatable step 'a' has no compensation"),
        (
            lambda s: s.step("a", kind="retriable", compensation=act)(act),
            "cannot have a compensation",
        ),
        (
            lambda s: (s.step("a", kind="pivot")(act), s.step("b", compensation=act)(act)),
            "comes after the pivot",
        ),
    ],
)
def test_invalid_sagas_are_refused_when_built(build: Any, message: str) -> None:
    saga = Saga("bad")
    build(saga)
    with pytest.raises(DefinitionError, match=message):
        _ = saga.definition


def test_parallel_groups_are_validated() -> None:
    mixed = Saga("mixed")
    with mixed.parallel():
        mixed.step("a", compensation=act)(act)
        mixed.step("b", kind="pivot")(act)
    with pytest.raises(DefinitionError, match="all compensatable or all retriable"):
        _ = mixed.definition
    split = (
        Step("a", act, act, group="g"),
        Step("b", act, act),
        Step("c", act, act, group="g"),
    )
    with pytest.raises(DefinitionError, match="must be consecutive"):
        SagaDefinition("split", split)
    nested = Saga("nested")
    with nested.parallel(), pytest.raises(DefinitionError, match="cannot be nested"):
        with nested.parallel():
            pass


def test_a_compensation_is_attached_once() -> None:
    saga = Saga("once")
    handle = saga.step("a")(act)
    handle.compensation(act)
    with pytest.raises(DefinitionError, match="already has a compensation"):
        handle.compensation(act)


def test_the_version_follows_names_kinds_and_groups_only() -> None:
    def build(retries: int, group: str | None = None, kind: StepKind = StepKind.PIVOT) -> str:
        return SagaDefinition(
            "v",
            (
                Step("a", act, act, retry=RetryPolicy(max_attempts=retries), group=group),
                Step("b", act, act, group=group),
                Step("c", act, kind=kind),
            ),
        ).version

    assert build(1) == build(5)  # policies and code may change freely
    assert build(1) != build(1, group="g")
    assert build(1) != build(1, kind=StepKind.RETRIABLE)
    assert len(build(1)) == 12


def test_definition_changes_name_what_breaks_a_resume() -> None:
    old = shape_of(as_definition(MODULE_SAGA).steps)
    assert definition_changes(old, old) == []
    assert definition_changes(old, [*old, ["later", "retriable", None]]) == []
    assert definition_changes(old, [["first", "compensatable", None], *old]) == [
        "step(s) inserted before old ones: first"
    ]
    assert definition_changes(old, []) == ["step(s) removed: only"]


def test_the_log_records_each_steps_shape_then_its_policies() -> None:
    steps = (
        Step("a", act, act, retry=RetryPolicy(max_attempts=3, initial_delay=0.5), timeout=2.0),
        Step("b", act, kind=StepKind.PIVOT),
    )

    recorded = recorded_steps(steps)

    assert [step[:3] for step in recorded] == shape_of(steps)
    assert recorded[0][3]["retry"]["max_attempts"] == 3
    assert recorded[0][3]["compensation_retry"]["max_attempts"] > 1
    assert recorded[0][3]["timeout"] == 2.0
    assert recorded[1][3] == {
        "retry": {
            "max_attempts": 1,
            "initial_delay": 0.0,
            "multiplier": 2.0,
            "max_delay": 30.0,
            "jitter": 0.0,
        },
        "compensation_retry": None,
        "timeout": None,
    }
    # A resume compares the recorded version (policies and all) with the code's shape.
    assert definition_changes(recorded, shape_of(steps)) == []


def test_as_definition_refuses_anything_else() -> None:
    with pytest.raises(DefinitionError, match="expected a Saga or a SagaDefinition"):
        as_definition("order")  # type: ignore[arg-type]
