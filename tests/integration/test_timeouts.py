"""Step timeouts: a step that does not answer in time is compensated.

Its late arrival cannot leak capacity: the compensation leaves a tombstone, or
releases what arrived first.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from saga_cli import SagaDefinition, SagaRunner, SagaStatus, Step, StepContext, open_store, registry
from saga_cli.errors import DefinitionError
from saga_cli.services.travel import TravelServices, audit, open_services


def _definition(services: TravelServices, *, reserve_lands_first: bool) -> SagaDefinition:
    """A flight, then a hotel whose reserve is still on its way when its timeout fires.

    Events, not sleeps, order the hotel's late reserve and its cancel (however
    loaded the machine): the reserve waits for the cancel to be sent (and the
    cancel for the reserve to land) when `reserve_lands_first`, and for the
    cancel to land otherwise.
    """
    cancel_sent, cancel_done, reserve_done = threading.Event(), threading.Event(), threading.Event()

    def reserve_flight(ctx: StepContext) -> Any:
        return services.flight.reserve(ctx.key, ctx.execution_id, "FL100", "ada")

    def cancel_flight(ctx: StepContext) -> Any:
        return services.flight.cancel(ctx.action_key, ctx.execution_id)

    def reserve_hotel_late(ctx: StepContext) -> Any:
        # the request is still on its way when the caller gives up
        assert (cancel_sent if reserve_lands_first else cancel_done).wait(60)
        try:
            return services.hotel.reserve(ctx.key, ctx.execution_id, "GRAND", "ada")
        finally:
            reserve_done.set()

    def cancel_hotel(ctx: StepContext) -> Any:
        cancel_sent.set()
        if reserve_lands_first:
            assert reserve_done.wait(60)
        try:
            return services.hotel.cancel(ctx.action_key, ctx.execution_id)
        finally:
            cancel_done.set()

    return SagaDefinition(
        "trip",
        (
            Step("flight", reserve_flight, cancel_flight),
            Step("hotel", reserve_hotel_late, cancel_hotel, timeout=0.1),
        ),
    )


def _held(services: TravelServices, service: str) -> dict[str, str | None]:
    return {
        key: (status if resource is not None else "tombstone")
        for key, _saga, resource, status in services.by_name[service].reservations()
    }


def _wait_for_late_arrival() -> None:
    """Join the abandoned call's thread, so that its late effect (if any) has landed."""
    for thread in threading.enumerate():
        if thread.name.startswith("saga-step-"):
            thread.join(timeout=10)
            assert not thread.is_alive()


@pytest.mark.parametrize(
    ("reserve_lands_first", "hotel_ends"),
    [
        (False, "tombstone"),  # the cancel comes first: the late reserve is refused
        (True, "canceled"),  # the late reserve lands first: the cancel releases it
    ],
)
def test_a_step_past_its_timeout_is_compensated_and_its_late_arrival_leaks_nothing(
    tmp_path: Path, reserve_lands_first: bool, hotel_ends: str
) -> None:
    store = open_store(str(tmp_path / "saga.db"))
    services = open_services(store)
    definition = _definition(services, reserve_lands_first=reserve_lands_first)
    outcome = SagaRunner(store, registry(definition)).run(definition, {})
    assert outcome.status is SagaStatus.COMPENSATED
    assert "did not answer within 0.1s" in (outcome.error or "")
    events = [(e.type.value, e.step) for e in store.events(outcome.execution_id)]
    assert ("step_failed", "hotel") in events
    compensations = [step for kind, step in events if kind == "compensation_succeeded"]
    assert compensations == ["hotel", "flight"]
    _wait_for_late_arrival()
    assert set(_held(services, "hotel").values()) == {hotel_ends}
    report = audit({outcome.execution_id: (outcome.status, {})}, services)
    assert report.consistent, report.violations
    grand = next(r for r in services.inventory() if r.resource == "GRAND")
    assert grand.available == grand.capacity
    services.close()
    store.close()


def test_a_timeout_is_not_retried_even_with_attempts_left(tmp_path: Path) -> None:
    from saga_cli import RetryPolicy

    calls: list[int] = []
    release = threading.Event()

    def hang(ctx: StepContext) -> Any:
        calls.append(ctx.attempt)
        release.wait(60)  # answers only once the runner is done with it

    saga = SagaDefinition(
        "hang",
        (Step("a", hang, lambda ctx: None, timeout=0.05, retry=RetryPolicy(max_attempts=5)),),
    )
    store = open_store(str(tmp_path / "saga.db"))
    try:
        outcome = SagaRunner(store, registry(saga)).run(saga, {})
    finally:
        release.set()
    assert outcome.status is SagaStatus.COMPENSATED
    assert calls == [1]
    store.close()


@pytest.mark.parametrize("timeout", [0.0, -1.0, float("inf"), float("nan")])
def test_a_timeout_must_be_a_positive_number_of_seconds(timeout: float) -> None:
    with pytest.raises(DefinitionError, match="timeout"):
        SagaDefinition("t", (Step("a", lambda ctx: None, lambda ctx: None, timeout=timeout),))
