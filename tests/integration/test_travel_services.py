"""The demo travel services: idempotent reserve/cancel/confirm, tombstones, capacity, audit."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from saga_cli.domain import SagaStatus
from saga_cli.errors import InvalidInputError, StoreError, TransientError
from saga_cli.services.travel import (
    BookingRequest,
    InventoryRow,
    NoAvailabilityError,
    ReservationRefusedError,
    TravelServices,
    audit,
    open_services,
)
from saga_cli.store import Participant, SagaStore, open_store


@pytest.fixture
def store(any_store: SagaStore) -> SagaStore:
    """The services run on SQLite and on PostgreSQL alike."""
    return any_store


@contextmanager
def tampering(store: SagaStore) -> Iterator[Participant]:
    """A connection to the log's database whose statements commit one by one."""
    store.upgrade_branch("demo")
    db = store.participant()
    try:
        yield db
    finally:
        db.close()


@pytest.fixture
def services(store: SagaStore) -> Iterator[TravelServices]:
    opened = open_services(store)
    try:
        yield opened
    finally:
        opened.close()


def row(services: TravelServices, service: str, resource: str) -> InventoryRow:
    (found,) = [r for r in services.by_name[service].inventory() if r.resource == resource]
    return found


def reservation_statuses(services: TravelServices, service: str) -> dict[str, str]:
    return {key: status for key, _, _, status in services.by_name[service].reservations()}


def test_reserve_holds_one_unit_as_pending(services: TravelServices) -> None:
    result = services.flight.reserve("k1", "s1", "FL100", "ada")
    assert result == {"reservation": "k1", "resource": "FL100"}
    assert row(services, "flight", "FL100") == InventoryRow(
        "flight", "FL100", "London -> New York", 8, 7, 1, 0
    )
    assert reservation_statuses(services, "flight") == {"k1": "pending"}


def test_reserving_twice_with_a_key_returns_the_first_result_and_takes_capacity_once(
    services: TravelServices,
) -> None:
    first = services.hotel.reserve("k1", "s1", "GRAND", "ada")
    again = services.hotel.reserve("k1", "s1", "GRAND", "ada")
    # even a retry that asks for something else is answered from the first call
    other = services.hotel.reserve("k1", "s1", "PLAZA", "bob")
    assert again == first
    assert other == first
    assert row(services, "hotel", "GRAND").available == 5
    assert row(services, "hotel", "PLAZA").available == 6
    assert len(services.hotel.reservations()) == 1


def test_cancelling_twice_releases_the_capacity_once(services: TravelServices) -> None:
    services.car.reserve("k1", "s1", "ECONOMY", "ada")
    services.car.reserve("k2", "s2", "ECONOMY", "bob")
    assert row(services, "car", "ECONOMY").available == 1
    first = services.car.cancel("k1", "s1")
    second = services.car.cancel("k1", "s1")
    assert first == {"canceled": "k1"}
    assert second == {"canceled": "k1", "already": True}
    assert row(services, "car", "ECONOMY").available == 2
    assert reservation_statuses(services, "car") == {"k1": "canceled", "k2": "pending"}


def test_cancel_before_reserve_leaves_a_tombstone_that_refuses_the_late_reserve(
    services: TravelServices,
) -> None:
    assert services.car.cancel("late", "s1") == {"canceled": "late", "tombstone": True}
    with pytest.raises(ReservationRefusedError, match="late"):
        services.car.reserve("late", "s1", "SUV", "ada")
    suv = row(services, "car", "SUV")
    assert (suv.available, suv.pending, suv.confirmed) == (1, 0, 0)
    assert services.car.reservations() == [("late", "s1", None, "canceled")]
    # cancelling the tombstone again changes nothing
    assert services.car.cancel("late", "s1") == {"canceled": "late", "already": True}
    assert row(services, "car", "SUV").available == 1


def test_no_availability_is_a_business_error_and_takes_nothing(services: TravelServices) -> None:
    services.car.reserve("k1", "s1", "SUV", "ada")
    with pytest.raises(NoAvailabilityError, match="SUV"):
        services.car.reserve("k2", "s2", "SUV", "bob")
    assert reservation_statuses(services, "car") == {"k1": "pending"}
    assert row(services, "car", "SUV").available == 0


def test_confirm_turns_pending_into_confirmed_and_is_idempotent(services: TravelServices) -> None:
    services.flight.reserve("k1", "s1", "FL200", "ada")
    assert services.flight.confirm("k1") == {"confirmed": "k1"}
    assert services.flight.confirm("k1") == {"confirmed": "k1", "already": True}
    fl = row(services, "flight", "FL200")
    assert (fl.available, fl.pending, fl.confirmed) == (7, 0, 1)


@pytest.mark.parametrize("cancelled", [False, True], ids=["missing", "cancelled"])
def test_confirm_of_a_reservation_not_held_is_refused(
    services: TravelServices, cancelled: bool
) -> None:
    if cancelled:
        services.hotel.reserve("k1", "s1", "PLAZA", "ada")
        services.hotel.cancel("k1", "s1")
    with pytest.raises(TransientError, match="canceled" if cancelled else "missing"):
        services.hotel.confirm("k1")
    assert row(services, "hotel", "PLAZA").confirmed == 0


def test_capacity_never_goes_negative_under_concurrent_reserves(store: SagaStore) -> None:
    workers = 8
    barrier = threading.Barrier(workers)
    results: list[str] = []
    errors: list[BaseException] = []
    guard = threading.Lock()

    def book(n: int) -> None:
        own_store = open_store(store.url)
        own = open_services(own_store)
        try:
            barrier.wait()
            own.car.reserve(f"key-{n}", f"saga-{n}", "ECONOMY", f"customer-{n}")
            outcome = "reserved"
        except NoAvailabilityError:
            outcome = "refused"
        except BaseException as exc:  # any other failure fails the test below
            with guard:
                errors.append(exc)
            return
        finally:
            own.close()
            own_store.close()
        with guard:
            results.append(outcome)

    threads = [threading.Thread(target=book, args=(n,)) for n in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert sorted(results) == ["refused"] * 5 + ["reserved"] * 3
    services = open_services(store)
    try:
        economy = row(services, "car", "ECONOMY")
        assert (economy.capacity, economy.available, economy.pending) == (3, 0, 3)
        for inventory in services.inventory():
            assert inventory.available >= 0
            assert inventory.available + inventory.pending + inventory.confirmed == (
                inventory.capacity
            )
    finally:
        services.close()


def test_the_database_refuses_negative_availability(store: SagaStore) -> None:
    with tampering(store) as db, pytest.raises(StoreError, match="(?i)check"):
        db.execute("UPDATE car_resource SET available = -1 WHERE code='SUV'")


def test_restock_keeps_what_is_reserved(services: TravelServices) -> None:
    services.car.reserve("k1", "s1", "SUV", "ada")
    services.restock(5)
    suv = row(services, "car", "SUV")
    assert (suv.capacity, suv.available, suv.pending) == (5, 4, 1)
    with pytest.raises(InvalidInputError):
        services.restock(0)


def test_validate_names_the_unknown_resource(services: TravelServices) -> None:
    with pytest.raises(InvalidInputError, match="'NOPE'.*FL100"):
        services.validate(BookingRequest(flight="NOPE", hotel="GRAND"))
    services.validate(BookingRequest(flight="FL100", hotel="GRAND", car="SUV"))


# -- the audit -----------------------------------------------------------------------------


def payload(car: str | None = "ECONOMY") -> dict[str, Any]:
    return BookingRequest(flight="FL100", hotel="GRAND", car=car).to_payload()


@pytest.fixture
def clean(services: TravelServices) -> dict[str, tuple[SagaStatus, dict[str, Any]]]:
    """One completed and one compensated booking, made directly against the services."""
    for name, code in (("flight", "FL100"), ("hotel", "GRAND"), ("car", "ECONOMY")):
        services.by_name[name].reserve(f"done:{name}", "done", code, "ada")
        services.by_name[name].confirm(f"done:{name}")
    services.flight.reserve("undone:flight", "undone", "FL100", "bob")
    services.flight.cancel("undone:flight", "undone")
    services.hotel.cancel("undone:hotel", "undone")  # a tombstone
    return {
        "done": (SagaStatus.COMPLETED, payload()),
        "undone": (SagaStatus.COMPENSATED, payload()),
    }


def test_audit_of_a_clean_log_is_consistent(
    services: TravelServices, clean: dict[str, tuple[SagaStatus, dict[str, Any]]]
) -> None:
    report = audit(clean, services)
    assert report.violations == []
    assert report.consistent
    assert report.executions == 2
    assert report.reservations == 5


def test_audit_detects_a_missing_confirmed_reservation(
    services: TravelServices,
    clean: dict[str, tuple[SagaStatus, dict[str, Any]]],
    store: SagaStore,
) -> None:
    with tampering(store) as db:
        db.execute("DELETE FROM hotel_reservation WHERE key='done:hotel'")
    report = audit(clean, services)
    assert not report.consistent
    assert any("done" in v and "hotel" in v and "missing" in v for v in report.violations)
    # the unit it held is now unaccounted for
    assert any("hotel GRAND" in v and "capacity" in v for v in report.violations)


def test_audit_detects_a_reservation_of_an_unknown_saga(
    services: TravelServices,
    clean: dict[str, tuple[SagaStatus, dict[str, Any]]],
    store: SagaStore,
) -> None:
    with tampering(store) as db:
        db.execute(
            "INSERT INTO car_reservation VALUES ('ghost:car','ghost','SUV','x','canceled',1,1)"
        )
    report = audit(clean, services)
    assert report.violations == ["car reservation ghost:car belongs to no execution"]


def test_audit_detects_a_compensated_execution_still_holding_a_reservation(
    services: TravelServices,
    clean: dict[str, tuple[SagaStatus, dict[str, Any]]],
    store: SagaStore,
) -> None:
    with tampering(store) as db:
        db.execute("UPDATE flight_reservation SET status='pending' WHERE key='undone:flight'")
        db.execute("UPDATE flight_resource SET available=available-1 WHERE code='FL100'")
    report = audit(clean, services)
    assert report.violations == [
        "compensated execution undone still holds a pending flight reservation"
    ]


def test_audit_detects_leaked_capacity(
    services: TravelServices,
    clean: dict[str, tuple[SagaStatus, dict[str, Any]]],
    store: SagaStore,
) -> None:
    with tampering(store) as db:
        db.execute("UPDATE car_resource SET available=available-1 WHERE code='SUV'")
    report = audit(clean, services)
    assert len(report.violations) == 1
    assert report.violations[0].startswith("car SUV: capacity 1 != available 0")


def test_audit_detects_a_completed_execution_with_a_pending_reservation(
    services: TravelServices,
    clean: dict[str, tuple[SagaStatus, dict[str, Any]]],
    store: SagaStore,
) -> None:
    with tampering(store) as db:
        db.execute("UPDATE car_reservation SET status='pending' WHERE key='done:car'")
    report = audit(clean, services)
    assert report.violations == [
        "completed execution done has car reservation pending, expected confirmed"
    ]


def test_each_execution_is_served_by_the_services_it_recorded_with_lent_credentials(
    store: SagaStore,
) -> None:
    from saga_cli.booking import TravelBooking
    from saga_cli.services.travel import BookingRequest

    booking = TravelBooking(store, services={"hotel": "http://ops:pw@127.0.0.1:9/"})
    try:
        payload = booking.payload_of(BookingRequest("FL100", "GRAND"))
        assert payload["services"] == {"hotel": "http://127.0.0.1:9"}  # never the password
        services = booking.services
        lent = services.of_execution("hotel", payload)
        assert lent is services.by_name["hotel"]
        assert getattr(lent, "url", None) == "http://ops:pw@127.0.0.1:9"
        elsewhere = {"services": {"hotel": "http://127.0.0.1:10"}}
        other = services.of_execution("hotel", elsewhere)
        assert getattr(other, "url", None) == "http://127.0.0.1:10"
        assert services.of_execution("hotel", elsewhere) is other  # one client per URL
        assert services.of_execution("flight", payload) is services.local["flight"]
        assert services.of_execution("hotel", {}) is services.local["hotel"]
        with pytest.raises(InvalidInputError, match="malformed booking payload"):
            services.of_execution("hotel", {"services": {"boat": "http://x"}})
    finally:
        booking.close()
