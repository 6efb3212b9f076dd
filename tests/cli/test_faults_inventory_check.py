"""`saga faults`, `saga inventory` and `saga check` (including real violations)."""

from __future__ import annotations

import pytest
from conftest import SagaCli
from support import BOOKING, CATALOGUE, execute

from saga_cli.faults import FAULT_OPTIONS

# (service, resource) -> capacity, as the migrations put them in the catalogue.
CAPACITY = {(s, r): n for s, resources in CATALOGUE.items() for r, n in resources.items()}
INVENTORY_KEYS = {"service", "resource", "capacity", "available", "pending", "confirmed"}


def test_faults_lists_every_failure_injection_option(saga: SagaCli) -> None:
    result = saga("faults")

    assert result.code == 0, result
    for option in FAULT_OPTIONS:
        assert option.option in result.stdout, option
    for point in ("STEP:before", "STEP:after", "compensate-STEP:before|after"):
        assert point in result.stdout
    assert not saga.db.exists()


def test_inventory_json_lists_the_catalogue_untouched_on_a_fresh_log(migrated: SagaCli) -> None:
    result = migrated("inventory", "--json")

    assert result.code == 0, result
    rows = result.json()
    assert isinstance(rows, list)
    for row in rows:
        assert INVENTORY_KEYS <= set(row), row
        assert row["available"] == row["capacity"]
        assert row["pending"] == row["confirmed"] == 0
    assert {(r["service"], r["resource"]): r["capacity"] for r in rows} == CAPACITY


def test_inventory_counts_a_completed_booking_as_confirmed(migrated: SagaCli) -> None:
    assert migrated("book", *BOOKING).code == 0

    rows = {(r["service"], r["resource"]): r for r in migrated("inventory", "--json").json()}

    for key in (("flight", "FL100"), ("hotel", "GRAND"), ("car", "ECONOMY")):
        assert rows[key]["confirmed"] == 1
        assert rows[key]["available"] == CAPACITY[key] - 1
    assert rows["flight", "FL200"]["available"] == CAPACITY["flight", "FL200"]


def test_inventory_restock_sets_every_capacity_and_keeps_reservations(migrated: SagaCli) -> None:
    assert migrated("book", *BOOKING).code == 0

    result = migrated("inventory", "--restock", "50", "--json")

    assert result.code == 0, result
    rows = {(r["service"], r["resource"]): r for r in result.json()}
    assert {r["capacity"] for r in rows.values()} == {50}
    assert rows["car", "ECONOMY"]["available"] == 49
    assert rows["car", "ECONOMY"]["confirmed"] == 1
    table = migrated("inventory")
    assert table.code == 0, table
    for _service, resource in CAPACITY:
        assert resource in table.stdout


def test_check_on_a_consistent_log_exits_0(migrated: SagaCli) -> None:
    assert migrated("book", *BOOKING).code == 0
    assert migrated("book", *BOOKING, "--fail", "car").code == 3

    result = migrated("check", "--json")

    assert result.code == 0, result
    assert result.json() == {"consistent": True, "violations": []}
    table = migrated("check")
    assert table.code == 0, table
    assert "consistent" in table.stdout


@pytest.mark.parametrize(
    ("tamper", "expected"),
    [
        pytest.param(
            "UPDATE car_resource SET available = available - 1 WHERE code = 'SUV'",
            "car SUV: capacity 1 != available 0",
            id="capacity-leaked",
        ),
        pytest.param(
            "UPDATE hotel_reservation SET status = 'canceled'",
            "has hotel reservation canceled, expected confirmed",
            id="completed-booking-lost-its-hotel",
        ),
        pytest.param(
            "INSERT INTO flight_reservation VALUES"
            " ('orphan:flight', 'orphan', 'FL300', 'x', 'pending', 0, 0)",
            "flight reservation orphan:flight belongs to no execution",
            id="orphan-reservation",
        ),
        pytest.param(
            "UPDATE saga_execution SET status = 'compensated'",
            "still holds a confirmed flight reservation",
            id="compensated-execution-holds-reservations",
        ),
    ],
)
def test_check_reports_a_violation_made_in_the_services_tables_with_exit_1(
    migrated: SagaCli, tamper: str, expected: str
) -> None:
    assert migrated("book", *BOOKING).code == 0
    execute(migrated.db, tamper)

    result = migrated("check", "--json")

    assert result.code == 1, result
    body = result.json()
    assert body["consistent"] is False
    assert any(expected in violation for violation in body["violations"]), body
    table = migrated("check")
    assert table.code == 1, table
    assert "violation(s)" in table.stdout
    assert expected in table.stdout
