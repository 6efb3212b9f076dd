"""An e-commerce order: reserve stock, charge the card, book a shipment, email the customer.

Four shop "services" (inventory, payment, shipping, mail) keep their own tables,
prefixed ``shop_``, in the SQLite file named by ``SAGA_EXAMPLE_DB`` (default
``./saga-examples.db``). The saga ``order`` runs:

1. ``reserve_inventory``: holds the units as *reserved* (a semantic lock: other
   orders cannot take them, nobody counts them as sold); undone by releasing them;
2. ``charge_payment``: charges the card; undone by a refund;
3. ``create_shipment``: books a *pending* shipment (the warehouse does not pick
   pending ones); undone by cancelling it;
4. ``send_confirmation``: the pivot, the point of no return: the confirmation
   email goes into the mail outbox;
5. ``fulfil_order``: after the pivot, retried until it succeeds and never
   compensated: the reserved units become *committed* and the shipment *ready*
   (the semantic locks are released).

Every call is idempotent by the key the orchestrator passes (a table of
processed keys answers a repeated call with the first answer), every effect
appends one row to ``shop_journal``, and a compensation that arrives before
its action leaves a tombstone, so the late action is refused.

Failure injection through the order itself: more units than in stock (the
inventory refuses), the declined test card ``4000000000000002`` or
``4000000000009995`` (the payment service refuses), a country the carrier does
not serve (``AQ``; it serves GB, IE, FR, DE, NL, BE, ES and IT) and an email
address on the mail service's suppression list (``bounce@example.com``, which
makes the pivot refuse). ``saga run --fail/--flaky/--crash-at...`` work too.

Run::

    saga run examples/ecommerce_order.py:order --payload '{"customer": "ada",
      "email": "ada@example.com", "items": [{"sku": "MUG", "quantity": 2}],
      "address": "1 Analytical Row, London", "country": "GB"}'
    python examples/ecommerce_order.py show      # stock, payments, shipments, outbox
    python examples/ecommerce_order.py reset     # back to the seeded catalogue
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pydantic import BaseModel, Field

from saga_cli import BusinessError, RetryPolicy, Saga, StepContext, TransientError

DEFAULT_DB = "saga-examples.db"
# sku, name, price in pence, units in stock when the shop opens
CATALOGUE = (
    ("MUG", "Saga mug", 1200, 5),
    ("TSHIRT", "Compensation T-shirt", 2500, 3),
    ("POSTER", "Pivot poster", 800, 2),
)
SHIPPING_FEE = 499
DECLINED_CARDS = {
    "4000000000000002": "card declined",
    "4000000000009995": "insufficient funds",
}
SERVED_COUNTRIES = ("GB", "IE", "FR", "DE", "NL", "BE", "ES", "IT")
SUPPRESSED = ("bounce@example.com",)

SCHEMA = (
    # stock = available + reserved + committed, always (the CHECK keeps it so)
    """CREATE TABLE IF NOT EXISTS shop_product (
        sku TEXT PRIMARY KEY, name TEXT NOT NULL, price INTEGER NOT NULL,
        stock INTEGER NOT NULL, available INTEGER NOT NULL,
        reserved INTEGER NOT NULL DEFAULT 0, committed INTEGER NOT NULL DEFAULT 0,
        CHECK (available >= 0 AND reserved >= 0 AND committed >= 0),
        CHECK (available + reserved + committed = stock))""",
    """CREATE TABLE IF NOT EXISTS shop_reservation (
        key TEXT PRIMARY KEY, execution_id TEXT NOT NULL, lines TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('reserved', 'released', 'committed')),
        created_at REAL NOT NULL, updated_at REAL NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS shop_payment (
        key TEXT PRIMARY KEY, execution_id TEXT NOT NULL, customer TEXT NOT NULL,
        card_last4 TEXT NOT NULL, amount INTEGER NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('charged', 'refunded')),
        created_at REAL NOT NULL, updated_at REAL NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS shop_refund (
        key TEXT PRIMARY KEY, payment_key TEXT NOT NULL UNIQUE, execution_id TEXT NOT NULL,
        amount INTEGER NOT NULL, created_at REAL NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS shop_shipment (
        key TEXT PRIMARY KEY, execution_id TEXT NOT NULL, address TEXT NOT NULL,
        country TEXT NOT NULL, tracking TEXT NOT NULL, lines TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('pending', 'cancelled', 'ready')),
        created_at REAL NOT NULL, updated_at REAL NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS shop_outbox (
        key TEXT PRIMARY KEY, execution_id TEXT NOT NULL, recipient TEXT NOT NULL,
        subject TEXT NOT NULL, body TEXT NOT NULL, created_at REAL NOT NULL)""",
    "CREATE TABLE IF NOT EXISTS shop_suppression (email TEXT PRIMARY KEY)",
    # What each service answered to each key it processed; a tombstone is an
    # answer ("refused") stored under an action's key before the action came.
    """CREATE TABLE IF NOT EXISTS shop_processed (
        service TEXT NOT NULL, key TEXT NOT NULL, execution_id TEXT NOT NULL,
        answer TEXT NOT NULL, at REAL NOT NULL, PRIMARY KEY (service, key))""",
    # One row per effect, never unique: a call that took effect twice shows twice.
    """CREATE TABLE IF NOT EXISTS shop_journal (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, service TEXT NOT NULL, key TEXT NOT NULL,
        execution_id TEXT NOT NULL, entry TEXT NOT NULL, detail TEXT NOT NULL, at REAL NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS shop_journal_execution ON shop_journal (execution_id)",
)
TABLES = (
    "shop_product",
    "shop_reservation",
    "shop_payment",
    "shop_refund",
    "shop_shipment",
    "shop_outbox",
    "shop_suppression",
    "shop_processed",
    "shop_journal",
)


class OutOfStockError(BusinessError):
    """Raised when an order asks for more units of a product than are available."""


class UnknownProductError(BusinessError):
    """Raised when an order names a SKU the shop does not sell."""


class CardDeclinedError(BusinessError):
    """Raised when the payment service declines the card."""


class UnservedAddressError(BusinessError):
    """Raised when the carrier does not deliver to the order's country."""


class RecipientSuppressedError(BusinessError):
    """Raised when the mail service refuses an address on its suppression list."""


class RequestRefusedError(BusinessError):
    """Raised when an action arrives after its compensation already ran (a tombstone)."""


class LineItem(BaseModel):
    """One line of an order."""

    sku: str = Field(min_length=1)
    quantity: int = Field(gt=0, le=1000)


class OrderRequest(BaseModel):
    """An order, the saga's payload."""

    customer: str = Field(min_length=1)
    email: str = Field(pattern=r"^[^@\s]+@[^@\s]+$")
    items: list[LineItem] = Field(min_length=1)
    card: str = Field(default="4242424242424242", pattern=r"^[0-9]{12,19}$")
    address: str = Field(min_length=1)
    country: str = Field(default="GB", pattern=r"^[A-Z]{2}$")


def _now() -> float:
    return time.time()


class ShopDb:
    """The example's SQLite file: a connection per thread, one short transaction per call."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._local = threading.local()

    def _connection(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(self.path, timeout=10, isolation_level=None)
            try:
                connection.execute("PRAGMA busy_timeout=10000")
                connection.execute("PRAGMA journal_mode=WAL")
                # A separate file from the saga log: its commits must be durable on
                # their own before the log records the outcome.
                connection.execute("PRAGMA synchronous=FULL")
                connection.execute("BEGIN IMMEDIATE")
                create(connection.cursor())
                connection.execute("COMMIT")
            except BaseException:
                connection.close()  # rolls back; the next call starts over
                raise
            self._local.connection = connection
        return connection

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Cursor]:
        """One write transaction (BEGIN IMMEDIATE), rolled back if the block raises."""
        cursor = self._connection().cursor()
        cursor.execute("BEGIN IMMEDIATE")
        try:
            yield cursor
        except BaseException:
            cursor.execute("ROLLBACK")
            raise
        cursor.execute("COMMIT")

    def close(self) -> None:
        """Close this thread's connection."""
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None


def create(cur: sqlite3.Cursor) -> None:
    """Create the tables if missing and seed the catalogue and suppression list (idempotent)."""
    for statement in SCHEMA:
        cur.execute(statement)
    cur.executemany(
        "INSERT OR IGNORE INTO shop_product (sku, name, price, stock, available)"
        " VALUES (?,?,?,?,?)",
        [(sku, name, price, stock, stock) for sku, name, price, stock in CATALOGUE],
    )
    cur.executemany(
        "INSERT OR IGNORE INTO shop_suppression (email) VALUES (?)", [(e,) for e in SUPPRESSED]
    )


def _answered(cur: sqlite3.Cursor, service: str, key: str) -> dict[str, Any] | None:
    """The answer `service` already gave to `key`, or None; a tombstone raises.

    Raises:
        RequestRefusedError: the key's compensation ran first (a tombstone).
    """
    row = cur.execute(
        "SELECT answer FROM shop_processed WHERE service=? AND key=?", (service, key)
    ).fetchone()
    if row is None:
        return None
    answer: dict[str, Any] = json.loads(row[0])
    if "refused" in answer:
        raise RequestRefusedError(f"{service}: {key} {answer['refused']}")
    return answer


def _processed(
    cur: sqlite3.Cursor,
    service: str,
    key: str,
    execution_id: str,
    answer: dict[str, Any],
    entry: str | None,
) -> dict[str, Any]:
    """Remember `answer` to `key` and journal the effect `entry`, in the caller's transaction."""
    now = _now()
    cur.execute(
        "INSERT INTO shop_processed (service, key, execution_id, answer, at) VALUES (?,?,?,?,?)",
        (service, key, execution_id, json.dumps(answer), now),
    )
    if entry is not None:
        cur.execute(
            "INSERT INTO shop_journal (service, key, execution_id, entry, detail, at)"
            " VALUES (?,?,?,?,?,?)",
            (service, key, execution_id, entry, json.dumps(answer), now),
        )
    return answer


def _tombstone(
    cur: sqlite3.Cursor, service: str, key: str, action_key: str, execution_id: str
) -> dict[str, Any]:
    """Compensate an action that never arrived: refuse it in advance, answer the compensation."""
    cur.execute(
        "INSERT INTO shop_processed (service, key, execution_id, answer, at) VALUES (?,?,?,?,?)",
        (
            service,
            action_key,
            execution_id,
            json.dumps({"refused": "was compensated before it arrived"}),
            _now(),
        ),
    )
    return _processed(
        cur, service, key, execution_id, {"undone": action_key, "tombstone": True}, "tombstone"
    )


class InventoryService:
    """Stock per SKU: available, reserved (pending orders) and committed (sold)."""

    name = "inventory"

    def __init__(self, db: ShopDb) -> None:
        self.db = db

    def reserve(self, key: str, execution_id: str, items: list[LineItem]) -> dict[str, Any]:
        """Reserve every line of the order, all or nothing.

        Raises:
            OutOfStockError: a line asks for more than is available.
            UnknownProductError: a line names an unknown SKU.
            RequestRefusedError: the reservation was released before it arrived.
        """
        wanted: dict[str, int] = {}
        for item in items:
            wanted[item.sku] = wanted.get(item.sku, 0) + item.quantity
        with self.db.transaction() as cur:
            done = _answered(cur, self.name, key)
            if done is not None:
                return done
            lines = []
            for sku, quantity in wanted.items():
                product = cur.execute(
                    "SELECT name, price, available FROM shop_product WHERE sku=?", (sku,)
                ).fetchone()
                if product is None:
                    raise UnknownProductError(f"the shop sells no {sku!r}")
                # Conditional update, never read-then-write: concurrent orders cannot oversell.
                taken = cur.execute(
                    "UPDATE shop_product SET available = available - ?, reserved = reserved + ?"
                    " WHERE sku=? AND available >= ?",
                    (quantity, quantity, sku, quantity),
                ).rowcount
                if taken != 1:  # the rollback returns the lines already taken
                    raise OutOfStockError(
                        f"only {product[2]} {sku} in stock, the order asks for {quantity}"
                    )
                lines.append(
                    {"sku": sku, "name": product[0], "quantity": quantity, "price": product[1]}
                )
            now = _now()
            cur.execute(
                "INSERT INTO shop_reservation (key, execution_id, lines, status, created_at,"
                " updated_at) VALUES (?,?,?,'reserved',?,?)",
                (key, execution_id, json.dumps(lines), now, now),
            )
            total = sum(line["quantity"] * line["price"] for line in lines)
            answer = {"reservation": key, "lines": lines, "total": total}
            return _processed(cur, self.name, key, execution_id, answer, "reserve")

    def release(self, key: str, action_key: str, execution_id: str) -> dict[str, Any]:
        """Give the units reserved under `action_key` back, once; tombstone a missing one.

        Raises:
            TransientError: the reservation was already committed (it is sold; an
                operator must look), so the compensation is retried, then stuck.
        """
        with self.db.transaction() as cur:
            done = _answered(cur, self.name, key)
            if done is not None:
                return done
            row = cur.execute(
                "SELECT lines, status FROM shop_reservation WHERE key=?", (action_key,)
            ).fetchone()
            if row is None:
                return _tombstone(cur, self.name, key, action_key, execution_id)
            if row[1] != "reserved":
                raise TransientError(f"reservation {action_key} is {row[1]}, cannot release it")
            for line in json.loads(row[0]):
                cur.execute(
                    "UPDATE shop_product SET available = available + ?, reserved = reserved - ?"
                    " WHERE sku=?",
                    (line["quantity"], line["quantity"], line["sku"]),
                )
            cur.execute(
                "UPDATE shop_reservation SET status='released', updated_at=? WHERE key=?",
                (_now(), action_key),
            )
            return _processed(
                cur, self.name, key, execution_id, {"released": action_key}, "release"
            )

    def commit(self, key: str, reservation: str, execution_id: str) -> dict[str, Any]:
        """Turn the reserved units into committed (sold) ones: release the semantic lock.

        Raises:
            TransientError: the reservation is missing or released (retried, then stuck).
        """
        with self.db.transaction() as cur:
            done = _answered(cur, self.name, key)
            if done is not None:
                return done
            row = cur.execute(
                "SELECT lines, status FROM shop_reservation WHERE key=?", (reservation,)
            ).fetchone()
            if row is None or row[1] != "reserved":
                state = "missing" if row is None else row[1]
                raise TransientError(f"reservation {reservation} is {state}, cannot commit it")
            for line in json.loads(row[0]):
                cur.execute(
                    "UPDATE shop_product SET reserved = reserved - ?, committed = committed + ?"
                    " WHERE sku=?",
                    (line["quantity"], line["quantity"], line["sku"]),
                )
            cur.execute(
                "UPDATE shop_reservation SET status='committed', updated_at=? WHERE key=?",
                (_now(), reservation),
            )
            return _processed(
                cur, self.name, key, execution_id, {"committed": reservation}, "commit"
            )


class PaymentService:
    """Card charges and their refunds."""

    name = "payment"

    def __init__(self, db: ShopDb) -> None:
        self.db = db

    def charge(
        self, key: str, execution_id: str, customer: str, card: str, amount: int
    ) -> dict[str, Any]:
        """Charge `amount` pence to `card`, once.

        Raises:
            CardDeclinedError: one of the declining test cards.
            RequestRefusedError: the charge was refunded before it arrived.
        """
        with self.db.transaction() as cur:
            done = _answered(cur, self.name, key)
            if done is not None:
                return done
            if card in DECLINED_CARDS:
                raise CardDeclinedError(f"card ending {card[-4:]}: {DECLINED_CARDS[card]}")
            now = _now()
            cur.execute(
                "INSERT INTO shop_payment (key, execution_id, customer, card_last4, amount,"
                " status, created_at, updated_at) VALUES (?,?,?,?,?,'charged',?,?)",
                (key, execution_id, customer, card[-4:], amount, now, now),
            )
            answer = {"payment": key, "amount": amount, "card": card[-4:]}
            return _processed(cur, self.name, key, execution_id, answer, "charge")

    def refund(self, key: str, payment: str, execution_id: str) -> dict[str, Any]:
        """Refund the charge made under `payment`, once; tombstone a missing one."""
        with self.db.transaction() as cur:
            done = _answered(cur, self.name, key)
            if done is not None:
                return done
            row = cur.execute("SELECT amount FROM shop_payment WHERE key=?", (payment,)).fetchone()
            if row is None:
                return _tombstone(cur, self.name, key, payment, execution_id)
            now = _now()
            cur.execute(
                "INSERT INTO shop_refund (key, payment_key, execution_id, amount, created_at)"
                " VALUES (?,?,?,?,?)",
                (key, payment, execution_id, row[0], now),
            )
            cur.execute(
                "UPDATE shop_payment SET status='refunded', updated_at=? WHERE key=?",
                (now, payment),
            )
            answer = {"refunded": payment, "amount": row[0]}
            return _processed(cur, self.name, key, execution_id, answer, "refund")


class ShippingService:
    """Shipments: pending until the order is confirmed, then ready for the warehouse."""

    name = "shipping"

    def __init__(self, db: ShopDb) -> None:
        self.db = db

    def create(
        self, key: str, execution_id: str, address: str, country: str, lines: list[Any]
    ) -> dict[str, Any]:
        """Book a pending shipment of `lines` to `address`, once.

        Raises:
            UnservedAddressError: the carrier does not deliver to `country`.
            RequestRefusedError: the shipment was cancelled before it arrived.
        """
        with self.db.transaction() as cur:
            done = _answered(cur, self.name, key)
            if done is not None:
                return done
            if country not in SERVED_COUNTRIES:
                raise UnservedAddressError(f"the carrier does not deliver to {country}")
            tracking = "TRK-" + execution_id[:10].upper()
            now = _now()
            cur.execute(
                "INSERT INTO shop_shipment (key, execution_id, address, country, tracking, lines,"
                " status, created_at, updated_at) VALUES (?,?,?,?,?,?,'pending',?,?)",
                (key, execution_id, address, country, tracking, json.dumps(lines), now, now),
            )
            answer = {"shipment": key, "tracking": tracking}
            return _processed(cur, self.name, key, execution_id, answer, "create")

    def cancel(self, key: str, shipment: str, execution_id: str) -> dict[str, Any]:
        """Cancel the pending shipment booked under `shipment`, once; tombstone a missing one.

        Raises:
            TransientError: the shipment is already released to the warehouse.
        """
        with self.db.transaction() as cur:
            done = _answered(cur, self.name, key)
            if done is not None:
                return done
            row = cur.execute(
                "SELECT status FROM shop_shipment WHERE key=?", (shipment,)
            ).fetchone()
            if row is None:
                return _tombstone(cur, self.name, key, shipment, execution_id)
            if row[0] != "pending":
                raise TransientError(f"shipment {shipment} is {row[0]}, cannot cancel it")
            cur.execute(
                "UPDATE shop_shipment SET status='cancelled', updated_at=? WHERE key=?",
                (_now(), shipment),
            )
            return _processed(cur, self.name, key, execution_id, {"cancelled": shipment}, "cancel")

    def release(self, key: str, shipment: str, execution_id: str) -> dict[str, Any]:
        """Hand the pending shipment to the warehouse (ready): release the semantic lock.

        Raises:
            TransientError: the shipment is missing or cancelled (retried, then stuck).
        """
        with self.db.transaction() as cur:
            done = _answered(cur, self.name, key)
            if done is not None:
                return done
            row = cur.execute(
                "SELECT status FROM shop_shipment WHERE key=?", (shipment,)
            ).fetchone()
            if row is None or row[0] != "pending":
                state = "missing" if row is None else row[0]
                raise TransientError(f"shipment {shipment} is {state}, cannot release it")
            cur.execute(
                "UPDATE shop_shipment SET status='ready', updated_at=? WHERE key=?",
                (_now(), shipment),
            )
            return _processed(cur, self.name, key, execution_id, {"ready": shipment}, "release")


class MailService:
    """The outbox: a message queued under a key is sent once, by a relay not shown here."""

    name = "mail"

    def __init__(self, db: ShopDb) -> None:
        self.db = db

    def send(
        self, key: str, execution_id: str, recipient: str, subject: str, body: str
    ) -> dict[str, Any]:
        """Queue the message under `key`, once.

        Raises:
            RecipientSuppressedError: `recipient` is on the suppression list.
        """
        with self.db.transaction() as cur:
            done = _answered(cur, self.name, key)
            if done is not None:
                return done
            suppressed = cur.execute(
                "SELECT 1 FROM shop_suppression WHERE email=?", (recipient.lower(),)
            ).fetchone()
            if suppressed:
                raise RecipientSuppressedError(f"{recipient} is on the suppression list")
            cur.execute(
                "INSERT INTO shop_outbox (key, execution_id, recipient, subject, body, created_at)"
                " VALUES (?,?,?,?,?,?)",
                (key, execution_id, recipient, subject, body, _now()),
            )
            answer = {"email": key, "to": recipient}
            return _processed(cur, self.name, key, execution_id, answer, "send")


class Shop:
    """The four services over one SQLite file."""

    def __init__(self, path: str) -> None:
        self.db = ShopDb(path)
        self.inventory = InventoryService(self.db)
        self.payment = PaymentService(self.db)
        self.shipping = ShippingService(self.db)
        self.mail = MailService(self.db)


_shops: dict[str, Shop] = {}
_shops_lock = threading.Lock()


def shop() -> Shop:
    """The services over the file named by ``SAGA_EXAMPLE_DB`` (read on each call)."""
    path = os.environ.get("SAGA_EXAMPLE_DB", DEFAULT_DB)
    with _shops_lock:
        if path not in _shops:
            _shops[path] = Shop(path)
        return _shops[path]


# -- the saga ----------------------------------------------------------------------------

order: Saga[OrderRequest] = Saga(
    "ecommerce-order",
    payload=OrderRequest,
    description="Reserve stock, charge the card, book the shipment; the confirmation "
    "email is the pivot",
)
# Transient failures (a busy database) are worth a few quick retries; refusals never are.
QUICK_RETRY = RetryPolicy(max_attempts=3, initial_delay=0.05, jitter=0.2)


@order.step(retry=QUICK_RETRY)
def reserve_inventory(ctx: StepContext[OrderRequest]) -> dict[str, Any]:
    """Reserve the order's units (pending until the order is fulfilled)."""
    return shop().inventory.reserve(ctx.key, ctx.execution_id, ctx.payload.items)


@reserve_inventory.compensation
def release_inventory(ctx: StepContext[OrderRequest]) -> dict[str, Any]:
    """Give the reserved units back to stock."""
    return shop().inventory.release(ctx.key, ctx.action_key, ctx.execution_id)


@order.step(retry=QUICK_RETRY)
def charge_payment(ctx: StepContext[OrderRequest]) -> dict[str, Any]:
    """Charge the goods plus the shipping fee."""
    amount = int(ctx.results["reserve_inventory"]["total"]) + SHIPPING_FEE
    order_ = ctx.payload
    return shop().payment.charge(ctx.key, ctx.execution_id, order_.customer, order_.card, amount)


@charge_payment.compensation
def refund_payment(ctx: StepContext[OrderRequest]) -> dict[str, Any]:
    """Refund the charge (a tombstone if it never arrived)."""
    return shop().payment.refund(ctx.key, ctx.action_key, ctx.execution_id)


@order.step(retry=QUICK_RETRY)
def create_shipment(ctx: StepContext[OrderRequest]) -> dict[str, Any]:
    """Book a pending shipment of the reserved lines."""
    lines = ctx.results["reserve_inventory"]["lines"]
    order_ = ctx.payload
    return shop().shipping.create(ctx.key, ctx.execution_id, order_.address, order_.country, lines)


@create_shipment.compensation
def cancel_shipment(ctx: StepContext[OrderRequest]) -> dict[str, Any]:
    """Cancel the pending shipment."""
    return shop().shipping.cancel(ctx.key, ctx.action_key, ctx.execution_id)


@order.step(kind="pivot", retry=QUICK_RETRY)
def send_confirmation(ctx: StepContext[OrderRequest]) -> dict[str, Any]:
    """Queue the confirmation email: once it is out, the order stands."""
    reservation = ctx.results["reserve_inventory"]
    payment = ctx.results["charge_payment"]
    shipment = ctx.results["create_shipment"]
    lines = ", ".join(f"{line['quantity']} x {line['name']}" for line in reservation["lines"])
    body = (
        f"Hello {ctx.payload.customer}, thank you for your order: {lines}. "
        f"We charged £{payment['amount'] / 100:.2f} to the card ending {payment['card']}; "
        f"your parcel's tracking number is {shipment['tracking']}."
    )
    subject = f"Order {ctx.execution_id[:8]} confirmed"
    return shop().mail.send(ctx.key, ctx.execution_id, ctx.payload.email, subject, body)


@order.step(kind="retriable")
def fulfil_order(ctx: StepContext[OrderRequest]) -> dict[str, Any]:
    """Release the semantic locks: the units are sold, the shipment goes to the warehouse."""
    services = shop()
    reservation = ctx.results["reserve_inventory"]["reservation"]
    shipment = ctx.results["create_shipment"]["shipment"]
    services.inventory.commit(ctx.key, reservation, ctx.execution_id)
    services.shipping.release(ctx.key, shipment, ctx.execution_id)
    return {"committed": reservation, "ready": shipment}


# -- the example's own command line: show and reset the shop's state ---------------------


def _pounds(pence: int) -> str:
    return f"£{pence / 100:.2f}"


def state(db: ShopDb) -> dict[str, Any]:
    """Everything the shop holds, as plain data (what ``show --json`` prints)."""
    with db.transaction() as cur:
        products = cur.execute(
            "SELECT sku, name, price, stock, available, reserved, committed FROM shop_product"
            " ORDER BY sku"
        ).fetchall()
        payments = cur.execute(
            "SELECT p.execution_id, p.customer, p.card_last4, p.amount, p.status, r.amount"
            " FROM shop_payment p LEFT JOIN shop_refund r ON r.payment_key = p.key"
            " ORDER BY p.created_at"
        ).fetchall()
        shipments = cur.execute(
            "SELECT execution_id, tracking, country, status FROM shop_shipment ORDER BY created_at"
        ).fetchall()
        outbox = cur.execute(
            "SELECT execution_id, recipient, subject FROM shop_outbox ORDER BY created_at"
        ).fetchall()
        tombstones = cur.execute(
            "SELECT service, key FROM shop_processed WHERE answer LIKE '{\"refused\"%'"
        ).fetchall()
    keys = ("sku", "name", "price", "stock", "available", "reserved", "committed")
    return {
        "products": [dict(zip(keys, row, strict=True)) for row in products],
        "payments": [
            dict(
                zip(
                    ("order", "customer", "card", "amount", "status", "refunded"),
                    row,
                    strict=True,
                )
            )
            for row in payments
        ],
        "shipments": [
            dict(zip(("order", "tracking", "country", "status"), row, strict=True))
            for row in shipments
        ],
        "outbox": [dict(zip(("order", "to", "subject"), row, strict=True)) for row in outbox],
        "tombstones": [dict(zip(("service", "key"), row, strict=True)) for row in tombstones],
    }


def show(db: ShopDb, as_json: bool) -> None:
    """Print the shop's state."""
    data = state(db)
    if as_json:
        print(json.dumps(data, indent=2))
        return
    print("stock         price  available  reserved  committed  total")
    for p in data["products"]:
        print(
            f"{p['sku']:<10}{_pounds(p['price']):>9}{p['available']:>11}{p['reserved']:>10}"
            f"{p['committed']:>11}{p['stock']:>7}"
        )
    print(f"\npayments ({len(data['payments'])})")
    for pay in data["payments"]:
        refund = f" {_pounds(pay['refunded'])}" if pay["refunded"] is not None else ""
        print(
            f"  {pay['order'][:8]}  {pay['customer']:<12} card …{pay['card']}  "
            f"{_pounds(pay['amount']):>8}  {pay['status']}{refund}"
        )
    print(f"\nshipments ({len(data['shipments'])})")
    for s in data["shipments"]:
        print(f"  {s['order'][:8]}  {s['tracking']}  {s['country']}  {s['status']}")
    print(f"\noutbox ({len(data['outbox'])})")
    for m in data["outbox"]:
        print(f"  {m['order'][:8]}  to {m['to']}: {m['subject']}")
    if data["tombstones"]:
        print(f"\ntombstones ({len(data['tombstones'])})")
        for t in data["tombstones"]:
            print(f"  {t['service']}: {t['key']}")


def reset(db: ShopDb, stock: int | None) -> None:
    """Empty every shop table and seed the catalogue again (`stock` units per SKU if given)."""
    with db.transaction() as cur:
        for table in TABLES:
            cur.execute(f"DELETE FROM {table}")
        create(cur)
        if stock is not None:
            cur.execute("UPDATE shop_product SET stock = ?, available = ?", (stock, stock))


def main(argv: list[str] | None = None) -> int:
    """Show or reset the shop's state; returns the exit code."""
    parser = argparse.ArgumentParser(
        description="The e-commerce example's shop: show or reset its tables."
    )
    parser.add_argument(
        "--db",
        default=os.environ.get("SAGA_EXAMPLE_DB", DEFAULT_DB),
        help="the shop's SQLite file (default: $SAGA_EXAMPLE_DB or ./saga-examples.db)",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    show_command = commands.add_parser("show", help="stock, payments, shipments and the outbox")
    show_command.add_argument("--json", action="store_true", help="print JSON")
    reset_command = commands.add_parser("reset", help="empty the tables, seed the catalogue")
    reset_command.add_argument(
        "--stock", type=int, metavar="N", help="give every SKU N units instead of the catalogue's"
    )
    args = parser.parse_args(argv)
    db = ShopDb(args.db)
    try:
        if args.command == "show":
            show(db, args.json)
        else:
            if args.stock is not None and args.stock < 0:
                parser.error("--stock must be >= 0")
            reset(db, args.stock)
            print(f"reset {args.db}")
    except sqlite3.Error as exc:
        print(f"Error: {args.db}: {exc}", file=sys.stderr)
        return 1
    finally:
        db.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
