"""The runner on the travel saga through TravelBooking: outcomes, resume, compensate, leases."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from support import TRAVEL_STEPS

from saga_cli.booking import TravelBooking
from saga_cli.domain import Event, EventType, SagaStatus
from saga_cli.errors import (
    ExecutionBusyError,
    InvalidInputError,
    LeaseLostError,
    UnknownExecutionError,
)
from saga_cli.services.travel import BookingRequest, ReservationRefusedError
from saga_cli.store import ExecutionRecord, SagaStore

E = EventType
TRIP = BookingRequest(flight="FL100", hotel="GRAND", car="ECONOMY", customer="ada")


class Crash(BaseException):
    """The process dies in the middle of a participant call."""


@pytest.fixture
def booking(store: SagaStore) -> Iterator[TravelBooking]:
    opened = TravelBooking(store)
    opened.runner.sleep = lambda seconds: None  # retries without waiting
    try:
        yield opened
    finally:
        opened.close()


def trail(store: SagaStore, execution_id: str) -> list[tuple[str, str | None]]:
    return [(e.type.value, e.step) for e in store.events(execution_id)]


def statuses(booking: TravelBooking, execution_id: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for name, service in booking.services.by_name.items():
        for _key, saga_id, _resource, status in service.reservations():
            if saga_id == execution_id:
                found[name] = status
    return found


def held(booking: TravelBooking) -> dict[str, int]:
    """Units taken (capacity - available) per resource that has any taken."""
    return {
        f"{r.service}:{r.resource}": r.capacity - r.available
        for r in booking.inventory()
        if r.capacity != r.available
    }


def interrupt(
    booking: TravelBooking,
    monkeypatch: pytest.MonkeyPatch,
    service: str,
    *,
    after: bool,
    request: BookingRequest = TRIP,
) -> str:
    """Book `request` and die inside `service`'s reserve (before or after it took effect)."""
    target = booking.services.by_name[service]
    original = target.reserve_async  # the saga's steps are async: they await this

    async def dying(key: str, saga_id: str, resource: str, customer: str) -> dict[str, Any]:
        if after:
            await original(key, saga_id, resource, customer)
        raise Crash

    monkeypatch.setattr(target, "reserve_async", dying)
    with pytest.raises(Crash):
        booking.book(request)
    monkeypatch.setattr(target, "reserve_async", original)
    (record,) = booking.store.list_executions(limit=1)
    assert record.status is SagaStatus.RUNNING
    return record.id


def process_start(pid: int) -> str:
    with open(f"/proc/{pid}/stat", "rb") as handle:
        stat = handle.read()
    return stat[stat.rfind(b")") + 2 :].split()[19].decode()


def take_lease(store: SagaStore, execution_id: str, owner: str, seconds: float = 600.0) -> None:
    record = store.get(execution_id)
    now = time.time()
    store.claim(execution_id, record.version, owner, now + seconds, None, now)


# -- outcomes ---------------------------------------------------------------------------------


def test_booking_completes_and_confirms_every_reservation(
    booking: TravelBooking, store: SagaStore
) -> None:
    outcome = booking.book(TRIP)
    assert outcome.status is SagaStatus.COMPLETED
    assert outcome.error is None
    assert outcome.results["confirm"] == {"confirmed": ["car", "flight", "hotel"]}
    # the pivot charged the three fares once, and the customer was notified once
    assert outcome.results["payment"]["amount"] == 300 + 200 + 80
    assert [row[1] for row in booking.services.payment.charges()] == [outcome.execution_id]
    assert [row[1] for row in booking.services.notification.sent()] == [outcome.execution_id]
    assert statuses(booking, outcome.execution_id) == {
        "flight": "confirmed",
        "hotel": "confirmed",
        "car": "confirmed",
    }
    assert held(booking) == {"flight:FL100": 1, "hotel:GRAND": 1, "car:ECONOMY": 1}
    expected: list[tuple[str, str | None]] = [("saga_started", None)]
    for step in TRAVEL_STEPS:
        expected += [("step_started", step), ("step_succeeded", step)]
    expected.append(("saga_completed", None))
    assert trail(store, outcome.execution_id) == expected
    record = store.get(outcome.execution_id)
    assert record.status is SagaStatus.COMPLETED
    assert (record.owner, record.lease_expires_at) == (None, None)
    assert booking.check().consistent


def test_a_declined_payment_compensates_every_reservation_and_charges_nothing(
    booking: TravelBooking, store: SagaStore
) -> None:
    outcome = booking.book(BookingRequest("FL100", "GRAND", "ECONOMY", fail=("payment",)))
    assert outcome.status is SagaStatus.COMPENSATED
    compensated = [
        e.step for e in store.events(outcome.execution_id) if e.type is E.COMPENSATION_SUCCEEDED
    ]
    assert compensated == ["car", "hotel", "flight"]
    assert booking.services.payment.charges() == []
    assert booking.check().consistent


def test_a_failure_after_the_pivot_is_retried_forward_and_never_compensated(
    booking: TravelBooking, store: SagaStore
) -> None:
    outcome = booking.book(BookingRequest("FL100", "GRAND", "ECONOMY", fail=("notify",)))
    assert outcome.status is SagaStatus.STUCK
    events = store.events(outcome.execution_id)
    assert not any(e.type is E.COMPENSATION_STARTED for e in events)
    assert [r[1] for r in booking.services.payment.charges()] == [outcome.execution_id]
    with pytest.raises(InvalidInputError, match="pivot"):
        booking.compensate(outcome.execution_id)
    assert booking.check().consistent


def test_booking_without_a_car_skips_the_car_service(booking: TravelBooking) -> None:
    outcome = booking.book(BookingRequest(flight="FL200", hotel="PLAZA"))
    assert outcome.status is SagaStatus.COMPLETED
    assert outcome.results["car"] == {"skipped": True}
    assert statuses(booking, outcome.execution_id) == {"flight": "confirmed", "hotel": "confirmed"}
    assert booking.check().consistent


def test_failing_car_compensates_hotel_then_flight(
    booking: TravelBooking, store: SagaStore
) -> None:
    outcome = booking.book(BookingRequest("FL100", "GRAND", "ECONOMY", fail=("car",)))
    assert outcome.status is SagaStatus.COMPENSATED
    assert outcome.error is not None and "car" in outcome.error
    assert trail(store, outcome.execution_id)[5:] == [
        ("step_started", "car"),
        ("step_failed", "car"),
        ("compensation_started", "hotel"),
        ("compensation_succeeded", "hotel"),
        ("compensation_started", "flight"),
        ("compensation_succeeded", "flight"),
        ("saga_compensated", None),
    ]
    assert statuses(booking, outcome.execution_id) == {"flight": "canceled", "hotel": "canceled"}
    assert held(booking) == {}
    assert booking.check().consistent


def test_sold_out_car_compensates_like_an_injected_failure(booking: TravelBooking) -> None:
    outcomes = [booking.book(BookingRequest("FL100", "GRAND", "SUV")) for _ in range(2)]
    assert [o.status for o in outcomes] == [SagaStatus.COMPLETED, SagaStatus.COMPENSATED]
    assert held(booking) == {"flight:FL100": 1, "hotel:GRAND": 1, "car:SUV": 1}
    assert booking.check().consistent


def test_failing_confirm_is_retried_then_stuck_without_compensating(
    booking: TravelBooking, store: SagaStore
) -> None:
    outcome = booking.book(BookingRequest("FL100", "GRAND", "ECONOMY", fail=("confirm",)))
    assert outcome.status is SagaStatus.STUCK
    events = store.events(outcome.execution_id)
    confirm_attempts = [
        e.attempt for e in events if e.type is E.STEP_STARTED and e.step == "confirm"
    ]
    assert confirm_attempts == list(range(1, booking.definition.steps[4].retry.max_attempts + 1))
    assert not any(e.type is E.COMPENSATION_STARTED for e in events)
    assert events[-1].type is E.SAGA_STUCK
    # past the point of no return the reservations stay held for an operator
    assert set(statuses(booking, outcome.execution_id).values()) == {"pending"}
    with pytest.raises(InvalidInputError, match="pivot"):
        booking.compensate(outcome.execution_id)


def test_resuming_a_terminal_execution_changes_nothing(
    booking: TravelBooking, store: SagaStore
) -> None:
    done = booking.book(TRIP)
    undone = booking.book(BookingRequest("FL100", "GRAND", "ECONOMY", fail=("hotel",)))
    for outcome in (done, undone):
        before = (store.get(outcome.execution_id), store.events(outcome.execution_id))
        resumed = booking.resume(outcome.execution_id[:8])
        assert resumed.status is outcome.status
        assert (store.get(outcome.execution_id), store.events(outcome.execution_id)) == before
    assert booking.compensate(undone.execution_id).status is SagaStatus.COMPENSATED
    assert len(store.events(undone.execution_id)) == len(before[1])


def test_compensating_a_completed_execution_is_refused(
    booking: TravelBooking, store: SagaStore
) -> None:
    done = booking.book(TRIP)
    before = store.events(done.execution_id)
    with pytest.raises(InvalidInputError, match="completed"):
        booking.compensate(done.execution_id)
    assert store.events(done.execution_id) == before


def test_booking_an_unknown_resource_is_refused_before_anything_is_written(
    booking: TravelBooking, store: SagaStore
) -> None:
    with pytest.raises(InvalidInputError, match="'MARS'"):
        booking.book(BookingRequest(flight="MARS", hotel="GRAND"))
    assert store.list_executions() == []
    assert held(booking) == {}


def test_resume_of_an_unknown_id_is_refused(booking: TravelBooking) -> None:
    with pytest.raises(UnknownExecutionError):
        booking.resume("deadbeef")


# -- interrupted executions ---------------------------------------------------------------------


@pytest.mark.parametrize("after", [False, True], ids=["before-effect", "after-effect"])
def test_resume_of_an_interrupted_booking_completes_it_with_one_reservation_each(
    booking: TravelBooking, store: SagaStore, monkeypatch: pytest.MonkeyPatch, after: bool
) -> None:
    execution_id = interrupt(booking, monkeypatch, "hotel", after=after)
    outcome = booking.resume(execution_id)
    assert outcome.status is SagaStatus.COMPLETED
    # one started record; the resumed call repeats attempt 1 under it, then one outcome
    hotel = [(e.type, e.attempt) for e in store.events(execution_id) if e.step == "hotel"]
    assert hotel == [(E.STEP_STARTED, 1), (E.STEP_SUCCEEDED, 1)]
    assert statuses(booking, execution_id)["hotel"] == "confirmed"
    assert held(booking) == {"flight:FL100": 1, "hotel:GRAND": 1, "car:ECONOMY": 1}
    assert booking.check().consistent


def test_compensate_of_a_pending_execution_compensates_nothing(
    booking: TravelBooking, store: SagaStore
) -> None:
    execution_id = "0123456789abcdef" * 2
    now = time.time()
    store.create(
        ExecutionRecord(
            id=execution_id,
            saga="travel-booking",
            payload='{"flight":"FL100","hotel":"GRAND","car":null,"customer":"x","fail":[]}',
            status=SagaStatus.PENDING,
            step=None,
            created_at=now,
            updated_at=now,
            owner=None,
            lease_expires_at=None,
            version=1,
        ),
        [Event(1, E.SAGA_STARTED, at=now)],
    )
    outcome = booking.compensate(execution_id[:6])
    assert outcome.status is SagaStatus.COMPENSATED
    assert trail(store, execution_id) == [
        ("saga_started", None),
        ("compensation_requested", None),
        ("saga_compensated", None),
    ]
    assert held(booking) == {}


@pytest.mark.parametrize("after", [False, True], ids=["before-effect", "after-effect"])
def test_compensate_of_a_running_execution_undoes_the_step_in_flight_too(
    booking: TravelBooking, store: SagaStore, monkeypatch: pytest.MonkeyPatch, after: bool
) -> None:
    execution_id = interrupt(booking, monkeypatch, "hotel", after=after)
    outcome = booking.compensate(execution_id)
    assert outcome.status is SagaStatus.COMPENSATED
    assert trail(store, execution_id)[-6:] == [
        ("compensation_requested", None),
        ("compensation_started", "hotel"),
        ("compensation_succeeded", "hotel"),
        ("compensation_started", "flight"),
        ("compensation_succeeded", "flight"),
        ("saga_compensated", None),
    ]
    assert held(booking) == {}
    assert statuses(booking, execution_id) == {"flight": "canceled", "hotel": "canceled"}
    # a hotel reserve still on its way is refused by the tombstone, taking nothing
    with pytest.raises(ReservationRefusedError):
        booking.services.hotel.reserve(f"{execution_id}:hotel", execution_id, "GRAND", "ada")
    assert held(booking) == {}
    assert booking.check().consistent


def test_resume_all_finishes_interrupted_executions_and_reports_busy_ones(
    booking: TravelBooking, store: SagaStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = interrupt(booking, monkeypatch, "car", after=True)
    second = interrupt(booking, monkeypatch, "flight", after=False)
    busy = interrupt(booking, monkeypatch, "hotel", after=False)
    take_lease(store, busy, "otherhost:1:1")
    report = booking.resume_all()
    assert sorted(o.execution_id for o in report.outcomes) == sorted([first, second])
    assert all(o.status is SagaStatus.COMPLETED for o in report.outcomes)
    assert report.busy == [busy]
    assert [r.id for r in store.unfinished()] == [busy]


# -- leases ----------------------------------------------------------------------------------------


def live_owners() -> list[str]:
    parent = os.getppid()
    return [f"{socket.gethostname()}:{parent}:{process_start(parent)}", "otherhost:1:1"]


@pytest.mark.parametrize("owner", live_owners(), ids=["parent-process", "other-host"])
def test_resume_is_refused_while_another_live_owner_holds_the_lease(
    booking: TravelBooking,
    store: SagaStore,
    monkeypatch: pytest.MonkeyPatch,
    owner: str,
) -> None:
    execution_id = interrupt(booking, monkeypatch, "hotel", after=False)
    take_lease(store, execution_id, owner)
    before = (store.get(execution_id), store.events(execution_id))
    with pytest.raises(ExecutionBusyError, match=owner):
        booking.resume(execution_id)
    with pytest.raises(ExecutionBusyError):
        booking.compensate(execution_id)
    assert (store.get(execution_id), store.events(execution_id)) == before


def test_an_expired_lease_of_another_host_can_be_taken_over(
    booking: TravelBooking, store: SagaStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    execution_id = interrupt(booking, monkeypatch, "hotel", after=False)
    take_lease(store, execution_id, "otherhost:1:1", seconds=-1.0)
    assert booking.resume(execution_id).status is SagaStatus.COMPLETED


def test_a_dead_owner_on_this_host_is_claimable_at_once(
    booking: TravelBooking, store: SagaStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    start = process_start(child.pid)
    child.wait()  # reaped: the pid no longer runs
    execution_id = interrupt(booking, monkeypatch, "hotel", after=True)
    take_lease(store, execution_id, f"{socket.gethostname()}:{child.pid}:{start}")
    outcome = booking.resume(execution_id)
    assert outcome.status is SagaStatus.COMPLETED
    assert store.get(execution_id).owner is None
    assert booking.check().consistent


def test_a_fenced_runner_cannot_write_after_another_claimed_the_execution(
    booking: TravelBooking, store: SagaStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Runner A's lease lapses at once, so runner B (another host) may take over
    # while A is still inside the hotel call; A must then stop writing.
    booking.runner.lease_seconds = 0.0
    rival = TravelBooking(store)
    rival.runner.owner = "otherhost:2:2"
    hotel = booking.services.hotel
    original = hotel.reserve_async
    taken_over: list[str] = []

    async def slow_reserve(key: str, saga_id: str, resource: str, customer: str) -> Any:
        result = await original(key, saga_id, resource, customer)
        if not taken_over:
            taken_over.append(saga_id)
            # the rival is another process: here, another thread with its own event loop
            resumed = await asyncio.to_thread(rival.resume, saga_id)
            assert resumed.status is SagaStatus.COMPLETED
        return result

    monkeypatch.setattr(hotel, "reserve_async", slow_reserve)
    try:
        with pytest.raises(LeaseLostError):
            booking.book(TRIP)
    finally:
        rival.close()
    (execution_id,) = taken_over
    events = store.events(execution_id)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert events[-1].type is E.SAGA_COMPLETED
    # exactly one hotel outcome, written by the rival
    assert [e.type for e in events if e.step == "hotel"] == [E.STEP_STARTED, E.STEP_SUCCEEDED]
    assert store.get(execution_id).status is SagaStatus.COMPLETED
    assert held(booking) == {"flight:FL100": 1, "hotel:GRAND": 1, "car:ECONOMY": 1}
    assert booking.check().consistent


def test_a_runner_whose_execution_was_claimed_stops_before_its_next_call(
    booking: TravelBooking, store: SagaStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    for name in ("hotel", "car"):
        service = booking.services.by_name[name]
        monkeypatch.setattr(service, "reserve_async", recorder(service.reserve_async, calls, name))
    flight = booking.services.flight
    original = flight.reserve_async

    async def stolen(key: str, saga_id: str, resource: str, customer: str) -> dict[str, Any]:
        result = await original(key, saga_id, resource, customer)
        take_lease(store, saga_id, "otherhost:3:3")
        return result

    monkeypatch.setattr(flight, "reserve_async", stolen)
    with pytest.raises(LeaseLostError):
        booking.book(TRIP)
    assert calls == []  # the hotel was never called by the fenced runner
    (record,) = store.list_executions()
    assert record.owner == "otherhost:3:3"
    assert [e.type for e in store.events(record.id)] == [E.SAGA_STARTED, E.STEP_STARTED]


def recorder(
    call: Callable[[str, str, str, str], Awaitable[dict[str, Any]]], calls: list[str], name: str
) -> Callable[[str, str, str, str], Awaitable[dict[str, Any]]]:
    async def wrapped(key: str, saga_id: str, resource: str, customer: str) -> dict[str, Any]:
        calls.append(name)
        return await call(key, saga_id, resource, customer)

    return wrapped


# -- many executions at once (threads sharing the log, group-committed) -------------------------


def test_concurrent_simulation_leaves_every_execution_at_rest_and_the_audit_clean(
    booking: TravelBooking, store: SagaStore
) -> None:
    booking.restock(4)
    report = booking.simulate(40, fail_rate=0.3, seed=7, concurrency=8)
    assert report.count == 40
    assert report.interrupted == 0
    assert report.completed + report.compensated + report.stuck == 40
    assert report.completed > 0 and report.compensated > 0
    assert len({o.execution_id for o in report.outcomes}) == 40
    assert store.unfinished() == []
    for outcome in report.outcomes:
        record = store.get(outcome.execution_id)
        assert record.status is outcome.status
        events = store.events(outcome.execution_id)
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
    audit = booking.check()
    assert audit.violations == []
    assert audit.executions == 40
    for row in booking.inventory():
        assert 0 <= row.available <= row.capacity == 4


def test_concurrent_resume_all_finishes_every_interrupted_execution(
    booking: TravelBooking, store: SagaStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    booking.restock(10)
    interrupted = [
        interrupt(booking, monkeypatch, service, after=after)
        for service in ("flight", "hotel", "car")
        for after in (False, True)
    ]
    resumed: list[str] = []
    report = booking.resume_all(concurrency=4, progress=lambda o: resumed.append(o.execution_id))
    assert report.busy == []
    assert sorted(o.execution_id for o in report.outcomes) == sorted(interrupted)
    assert sorted(resumed) == sorted(interrupted)
    assert {o.status for o in report.outcomes} == {SagaStatus.COMPLETED}
    assert store.unfinished() == []
    assert booking.check().consistent
    taken = sum(r.capacity - r.available for r in booking.inventory())
    assert taken == 3 * len(interrupted)
