"""examples/ecommerce_order.py through `saga run` in subprocesses, checked in the shop's tables."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from conftest import CliResult, SagaCli, cli_env
from support import load_example

from saga_cli.testing import check_crash_points

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "ecommerce_order.py"
SAGA = f"{EXAMPLE}:order"
SEED = {"MUG": 5, "POSTER": 2, "TSHIRT": 3}
PRICES = {"MUG": 1200, "POSTER": 800, "TSHIRT": 2500}
SHIPPING_FEE = 499
# The journal entries (service, entry) of an order that completes, in order.
COMPLETED = [
    ("inventory", "reserve"),
    ("payment", "charge"),
    ("shipping", "create"),
    ("mail", "send"),
    ("inventory", "commit"),
    ("shipping", "release"),
]


def order(**changes: Any) -> dict[str, Any]:
    """A valid order (two mugs and a poster to London), with `changes` applied."""
    base: dict[str, Any] = {
        "customer": "ada",
        "email": "ada@example.com",
        "items": [{"sku": "MUG", "quantity": 2}, {"sku": "POSTER", "quantity": 1}],
        "address": "1 Analytical Row, London",
        "country": "GB",
    }
    return {**base, **changes}


@pytest.fixture
def shop_db(tmp_path: Path) -> Path:
    """The shop's SQLite file (created by the example on first use)."""
    return tmp_path / "shop.db"


def run(saga: SagaCli, shop_db: Path, payload: dict[str, Any], *options: str) -> CliResult:
    """`saga run` the example with `payload`, the shop in `shop_db`, JSON output."""
    return saga(
        "run",
        SAGA,
        "--payload",
        json.dumps(payload),
        "--json",
        *options,
        SAGA_EXAMPLE_DB=str(shop_db),
    )


def example_cli(shop_db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the example's own command line (`python examples/ecommerce_order.py ...`)."""
    return subprocess.run(
        [sys.executable, str(EXAMPLE), "--db", str(shop_db), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=cli_env(),
        check=True,
    )


@pytest.fixture(scope="module")
def example() -> ModuleType:
    return load_example(EXAMPLE)


def reset_shop(example: ModuleType, shop_db: Path, stock: int | None = None) -> None:
    """Create (or empty) the shop's tables and seed them, in this process (no subprocess)."""
    db = example.ShopDb(str(shop_db))
    try:
        example.reset(db, stock)
    finally:
        db.close()


def rows(shop_db: Path, sql: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(shop_db)) as connection:
        return list(connection.execute(sql, params))


def stock(shop_db: Path) -> dict[str, tuple[int, int, int, int]]:
    """(available, reserved, committed, stock) per SKU."""
    found = rows(
        shop_db, "SELECT sku, available, reserved, committed, stock FROM shop_product ORDER BY sku"
    )
    return {sku: (a, r, c, s) for sku, a, r, c, s in found}


def journal(shop_db: Path, execution_id: str) -> list[tuple[str, str]]:
    """The (service, entry) effects of one execution, in the order they happened."""
    return [
        (service, entry)
        for service, entry in rows(
            shop_db,
            "SELECT service, entry FROM shop_journal WHERE execution_id=? ORDER BY seq",
            (execution_id,),
        )
    ]


def untouched(initial: dict[str, int]) -> dict[str, tuple[int, int, int, int]]:
    return {sku: (units, 0, 0, units) for sku, units in sorted(initial.items())}


def test_an_order_completes_and_every_service_shows_it(migrated: SagaCli, shop_db: Path) -> None:
    result = run(migrated, shop_db, order())

    assert result.code == 0, result
    outcome = result.json()
    assert outcome["status"] == "completed"
    execution_id = outcome["id"]
    assert stock(shop_db) == {
        "MUG": (3, 0, 2, 5),
        "POSTER": (1, 0, 1, 2),
        "TSHIRT": (3, 0, 0, 3),
    }
    amount = 2 * PRICES["MUG"] + PRICES["POSTER"] + SHIPPING_FEE
    assert rows(
        shop_db, "SELECT execution_id, customer, card_last4, amount, status FROM shop_payment"
    ) == [(execution_id, "ada", "4242", amount, "charged")]
    assert rows(shop_db, "SELECT COUNT(*) FROM shop_refund") == [(0,)]
    assert rows(shop_db, "SELECT execution_id, country, status FROM shop_shipment") == [
        (execution_id, "GB", "ready")
    ]
    assert rows(shop_db, "SELECT status FROM shop_reservation") == [("committed",)]
    [(recipient, subject, body)] = rows(shop_db, "SELECT recipient, subject, body FROM shop_outbox")
    assert recipient == "ada@example.com"
    assert subject == f"Order {execution_id[:8]} confirmed"
    assert "2 x Saga mug, 1 x Pivot poster" in body and "£36.99" in body
    assert journal(shop_db, execution_id) == COMPLETED


# What each failure leaves in the journal: the actions that succeeded, then
# their compensations in reverse order.
RESERVED = [("inventory", "reserve")]
CHARGED = [*RESERVED, ("payment", "charge")]
SHIPPED = [*CHARGED, ("shipping", "create")]
REFUNDED = [("payment", "refund"), ("inventory", "release")]
FAILURES = {
    "--fail reserve_inventory": (order(), ["--fail", "reserve_inventory"], "declined", []),
    "--fail charge_payment": (
        order(),
        ["--fail", "charge_payment"],
        "declined",
        [*RESERVED, ("inventory", "release")],
    ),
    "--fail create_shipment": (
        order(),
        ["--fail", "create_shipment"],
        "declined",
        [*CHARGED, *REFUNDED],
    ),
    "--fail send_confirmation (the pivot)": (
        order(),
        ["--fail", "send_confirmation"],
        "declined",
        [*SHIPPED, ("shipping", "cancel"), *REFUNDED],
    ),
    "more units than in stock": (
        order(items=[{"sku": "MUG", "quantity": 1}, {"sku": "POSTER", "quantity": 3}]),
        [],
        "only 2 POSTER in stock",
        [],
    ),
    "an unknown SKU": (order(items=[{"sku": "HAT", "quantity": 1}]), [], "sells no 'HAT'", []),
    "a declined card": (
        order(card="4000000000000002"),
        [],
        "card declined",
        [*RESERVED, ("inventory", "release")],
    ),
    "an address the carrier does not serve": (
        order(country="AQ"),
        [],
        "does not deliver to AQ",
        [*CHARGED, *REFUNDED],
    ),
    "a suppressed email address (the pivot refuses)": (
        order(email="bounce@example.com"),
        [],
        "suppression list",
        [*SHIPPED, ("shipping", "cancel"), *REFUNDED],
    ),
}


@pytest.mark.parametrize("case", list(FAILURES))
def test_each_failure_compensates_and_returns_the_shop_to_its_initial_state(
    migrated: SagaCli, shop_db: Path, example: ModuleType, case: str
) -> None:
    payload, options, message, expected = FAILURES[case]
    reset_shop(example, shop_db)  # the shop exists even if no service is ever called

    result = run(migrated, shop_db, payload, *options)

    assert result.code == 3, result
    outcome = result.json()
    assert outcome["status"] == "compensated"
    assert message in outcome["error"]
    assert journal(shop_db, outcome["id"]) == expected
    # Every unit is back where it was, nothing is held or sold.
    assert stock(shop_db) == untouched(SEED)
    assert rows(shop_db, "SELECT COUNT(*) FROM shop_reservation WHERE status != 'released'") == [
        (0,)
    ]
    # A charge that happened was refunded in full; nothing ships; no email went out.
    payments = rows(
        shop_db,
        "SELECT p.amount, p.status, r.amount FROM shop_payment p"
        " LEFT JOIN shop_refund r ON r.payment_key = p.key",
    )
    if ("payment", "charge") in expected:
        [(amount, status, refunded)] = payments
        assert (status, refunded) == ("refunded", amount)
    else:
        assert payments == []
    assert rows(shop_db, "SELECT COUNT(*) FROM shop_shipment WHERE status != 'cancelled'") == [(0,)]
    assert rows(shop_db, "SELECT COUNT(*) FROM shop_outbox") == [(0,)]


def test_a_flaky_step_is_retried_under_its_key_and_takes_effect_once(
    migrated: SagaCli, shop_db: Path
) -> None:
    result = run(migrated, shop_db, order(), "--flaky", "charge_payment:2")

    assert result.code == 0, result
    assert journal(shop_db, result.json()["id"]) == COMPLETED
    assert rows(shop_db, "SELECT COUNT(*) FROM shop_payment") == [(1,)]


def test_a_charge_cancelled_before_it_arrived_is_refused_by_its_tombstone(
    migrated: SagaCli, shop_db: Path, example: ModuleType
) -> None:
    # Killed after charge_payment's `started` record, before the payment service
    # saw anything; an operator then compensates the execution.
    crashed = run(migrated, shop_db, order(), "--crash-at", "charge_payment:before")
    assert crashed.code == -9, crashed
    [(execution_id,)] = rows(migrated.db, "SELECT id FROM saga_execution")

    compensated = migrated("compensate", execution_id, SAGA_EXAMPLE_DB=str(shop_db))

    assert compensated.code == 3, compensated
    assert journal(shop_db, execution_id) == [
        ("inventory", "reserve"),
        ("payment", "tombstone"),
        ("inventory", "release"),
    ]
    assert stock(shop_db) == untouched(SEED)
    # The charge request arrives late: the tombstone refuses it and nothing is charged.
    db = example.ShopDb(str(shop_db))
    try:
        with pytest.raises(example.RequestRefusedError, match="compensated before it arrived"):
            example.PaymentService(db).charge(
                f"{execution_id}:charge_payment", execution_id, "ada", "4242424242424242", 1
            )
    finally:
        db.close()
    assert rows(shop_db, "SELECT COUNT(*) FROM shop_payment") == [(0,)]


def test_the_example_cli_shows_and_resets_the_shop(migrated: SagaCli, shop_db: Path) -> None:
    execution_id = run(migrated, shop_db, order()).json()["id"]

    shown = json.loads(example_cli(shop_db, "show", "--json").stdout)

    assert {p["sku"]: p["committed"] for p in shown["products"]} == {
        "MUG": 2,
        "POSTER": 1,
        "TSHIRT": 0,
    }
    assert [(p["order"], p["status"]) for p in shown["payments"]] == [(execution_id, "charged")]
    assert [(s["order"], s["status"]) for s in shown["shipments"]] == [(execution_id, "ready")]
    assert [m["to"] for m in shown["outbox"]] == ["ada@example.com"]
    text = example_cli(shop_db, "show").stdout
    assert "MUG" in text and execution_id[:8] in text

    example_cli(shop_db, "reset")

    assert stock(shop_db) == untouched(SEED)
    for table in ("shop_payment", "shop_shipment", "shop_outbox", "shop_journal"):
        assert rows(shop_db, f"SELECT COUNT(*) FROM {table}") == [(0,)]
    example_cli(shop_db, "reset", "--stock", "7")
    assert stock(shop_db) == untouched(dict.fromkeys(SEED, 7))


def test_stock_is_conserved_across_a_batch_of_concurrent_orders(
    migrated: SagaCli, shop_db: Path
) -> None:
    # Ten orders at once. Even if every failing order holds its units at the same
    # moment, the good ones fit in the stock, so which ones complete is fixed.
    batch: list[tuple[dict[str, Any], list[str], str]] = [
        (order(items=[{"sku": "MUG", "quantity": 1}]), [], "completed"),
        (order(items=[{"sku": "MUG", "quantity": 1}]), ["--flaky", "charge_payment"], "completed"),
        (order(items=[{"sku": "TSHIRT", "quantity": 1}]), [], "completed"),
        (order(items=[{"sku": "POSTER", "quantity": 1}]), [], "completed"),
        (order(items=[{"sku": "MUG", "quantity": 1}], card="4000000000009995"), [], "compensated"),
        (order(items=[{"sku": "MUG", "quantity": 1}], card="4000000000000002"), [], "compensated"),
        (
            order(items=[{"sku": "MUG", "quantity": 1}]),
            ["--fail", "create_shipment"],
            "compensated",
        ),
        (order(items=[{"sku": "TSHIRT", "quantity": 1}], country="AQ"), [], "compensated"),
        (order(items=[{"sku": "TSHIRT", "quantity": 5}]), [], "compensated"),
        (
            order(items=[{"sku": "POSTER", "quantity": 1}], email="bounce@example.com"),
            [],
            "compensated",
        ),
    ]
    processes = [
        migrated.popen(
            "run",
            SAGA,
            "--payload",
            json.dumps(payload),
            "--json",
            *options,
            SAGA_EXAMPLE_DB=str(shop_db),
        )
        for payload, options, _ in batch
    ]
    outcomes = []
    for process in processes:
        stdout, stderr = process.communicate(timeout=120)
        assert process.returncode in (0, 3), stderr
        outcomes.append(json.loads(stdout))

    assert [o["status"] for o in outcomes] == [expected for _, _, expected in batch]
    sold: dict[str, int] = dict.fromkeys(SEED, 0)
    for (payload, _, _), outcome in zip(batch, outcomes, strict=True):
        if outcome["status"] == "completed":
            for item in payload["items"]:
                sold[item["sku"]] += item["quantity"]
    assert stock(shop_db) == {
        sku: (units - sold[sku], 0, sold[sku], units) for sku, units in sorted(SEED.items())
    }
    for sku, (available, reserved, committed, _) in stock(shop_db).items():
        assert available + reserved + committed == SEED[sku]
    assert rows(shop_db, "SELECT status, COUNT(*) FROM shop_payment GROUP BY status") == [
        ("charged", 4),
        ("refunded", 3),  # charged, then refused by shipping, --fail or the mail service
    ]
    assert rows(shop_db, "SELECT COUNT(*) FROM shop_outbox") == [(4,)]
    assert rows(shop_db, "SELECT status, COUNT(*) FROM shop_shipment GROUP BY status") == [
        ("cancelled", 1),  # the suppressed address: the pivot refused
        ("ready", 4),
    ]


def effect_counts(shop_db: Path, execution_id: str) -> dict[str, int]:
    """How many times each effect of `execution_id` happened, by idempotency key.

    fulfil_order makes two effects under its key (the inventory commits the
    units, shipping releases the parcel): it counts once when both happened
    once, and as the odd count when one of them is missing or doubled.
    """
    per_key: dict[str, list[int]] = {}
    for key, count in rows(
        shop_db,
        "SELECT key, COUNT(*) FROM shop_journal WHERE execution_id=? GROUP BY key, service",
        (execution_id,),
    ):
        per_key.setdefault(key, []).append(count)
    counts = {}
    for key, found in per_key.items():
        services = 2 if key.endswith(":fulfil_order") else 1
        if max(found) > 1:
            counts[key] = max(found)
        else:
            counts[key] = 1 if len(found) == services else 0
    return counts


@pytest.fixture
def stocked_shop(shop_db: Path, example: ModuleType) -> Path:
    """A shop with 50 units of every SKU, enough for every crash scenario's order."""
    reset_shop(example, shop_db, stock=50)
    return shop_db


@pytest.mark.slow
def test_every_crash_point_then_resume_leaves_each_effect_exactly_once(
    stocked_shop: Path, tmp_path: Path
) -> None:
    report = check_crash_points(
        SAGA,
        payload=order(items=[{"sku": "MUG", "quantity": 1}]),
        effects=lambda execution_id: effect_counts(stocked_shop, execution_id),
        workdir=tmp_path / "crash",
        env={"SAGA_EXAMPLE_DB": str(stocked_shop)},
    )

    assert report.ok, report.summary()
    # 5 steps x before/after, and the 3 compensations x before/after (reached
    # by failing the pivot).
    assert len(report.scenarios) == 16
    completed = sum(1 for s in report.scenarios if s.status == "completed")
    assert completed == 10
    # Stock is conserved: what completed is sold, the rest went back; nothing is held.
    assert stock(stocked_shop) == {
        "MUG": (50 - completed, 0, completed, 50),
        "POSTER": (50, 0, 0, 50),
        "TSHIRT": (50, 0, 0, 50),
    }
    assert rows(stocked_shop, "SELECT COUNT(*) FROM shop_outbox") == [(completed,)]
    assert rows(stocked_shop, "SELECT COUNT(*) FROM shop_refund") == [(16 - completed,)]
    assert rows(stocked_shop, "SELECT status, COUNT(*) FROM shop_shipment GROUP BY status") == [
        ("cancelled", 16 - completed),
        ("ready", completed),
    ]
