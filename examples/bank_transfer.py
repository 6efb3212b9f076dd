"""A bank transfer as a saga: debit, credit, record (the pivot), notify.

Run it with ``saga run`` and look at the bank with this file's own command line::

    T='{"source": "alice", "target": "bob", "amount": 2500}'  # cents
    saga --db transfers.db run examples/bank_transfer.py:transfer --payload "$T"
    python examples/bank_transfer.py show        # balances, holds, ledger, notifications
    python examples/bank_transfer.py reset       # back to the seeded accounts

The "bank" is a handful of tables prefixed ``bank_`` in the SQLite file named by
``SAGA_EXAMPLE_DB`` (default ``./saga-examples.db``), created on first use with a
few seeded accounts. Amounts are integer cents.

How the money moves:

* ``debit`` (compensatable) takes the amount out of the source account into a
  pending *hold*, with a conditional ``UPDATE ... WHERE balance >= amount`` in
  one transaction, so no interleaving of transfers can overdraw an account,
  with or without the saga's concurrency key. Its compensation (``refund``)
  releases the hold back to the source.
* ``credit`` (compensatable) promises the amount to the target as a pending
  credit: the semantic lock. The target sees it coming but cannot spend it, so
  reversing it (``reverse``) never has to claw back money the target already
  spent. That is the choice for "what if the target spent it": it cannot,
  until the transfer is final, and once it is final nothing is compensated.
* ``record`` (the pivot) makes the transfer final in one transaction: both
  holds become ``settled``, the target's balance grows by the amount, and the
  transfer enters the ledger (``bank_transfer``).
* ``notify`` (retriable) tells both parties.

Money is conserved at every moment: the sum of the balances plus the pending
debit holds never changes, and once a transfer ends (completed or
compensated) no hold is pending, so the sum of the balances alone is back to
what it was.

Every action and compensation is idempotent by its key: the answer is kept in
``bank_request`` in the same transaction as the effect, and a repeated key
gets the stored answer. A compensation that finds no hold for the action it
undoes leaves a tombstone (a ``void`` hold under the action's key), so an
action arriving late is refused instead of moving money nobody will undo.
Every call that takes effect appends one row to ``bank_journal``, with its
key and the change it made to a balance: the audit trail the tests count.

Failures from the payload: a source without enough money (``insufficient
funds``) or an unknown or frozen source is refused by the debit; an unknown or
frozen target (``frank`` is frozen) by the credit. ``saga run --fail STEP``
and the other generic options work too.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from saga_cli import BusinessError, RetryPolicy, Saga, StepContext

DEFAULT_DB = "./saga-examples.db"
# The accounts a new bank opens with, in cents: (balance, frozen).
SEED: dict[str, tuple[int, bool]] = {
    "alice": (100_00, False),
    "bob": (50_00, False),
    "carol": (25_00, False),
    "dave": (0, False),
    "frank": (10_00, True),
}
MAX_AMOUNT = 1_000_000_000_00  # well inside SQLite's 64-bit integers

SCHEMA = """
CREATE TABLE IF NOT EXISTS bank_account (
    id      TEXT PRIMARY KEY,
    balance INTEGER NOT NULL CHECK (balance >= 0),
    frozen  INTEGER NOT NULL DEFAULT 0 CHECK (frozen IN (0, 1))
);
-- Money in flight (a debit) or promised (a credit): the semantic locks.
-- A 'void' row with no account is a tombstone: the compensation came first.
CREATE TABLE IF NOT EXISTS bank_hold (
    key          TEXT PRIMARY KEY,
    execution_id TEXT NOT NULL,
    kind         TEXT NOT NULL CHECK (kind IN ('debit', 'credit')),
    account      TEXT,
    amount       INTEGER CHECK (amount > 0),
    status       TEXT NOT NULL CHECK (status IN ('pending', 'settled', 'released', 'void')),
    created_at   REAL NOT NULL,
    updated_at   REAL NOT NULL
);
-- Processed idempotency keys and the answer each got.
CREATE TABLE IF NOT EXISTS bank_request (
    key          TEXT PRIMARY KEY,
    execution_id TEXT NOT NULL,
    response     TEXT NOT NULL,
    at           REAL NOT NULL
);
-- One row per call that took effect (append-only), delta: its change to the balance.
CREATE TABLE IF NOT EXISTS bank_journal (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    key          TEXT NOT NULL,
    execution_id TEXT NOT NULL,
    account      TEXT,
    delta        INTEGER NOT NULL,
    entry        TEXT NOT NULL,
    at           REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS bank_journal_execution ON bank_journal (execution_id);
-- The ledger: transfers that became final (the pivot).
CREATE TABLE IF NOT EXISTS bank_transfer (
    execution_id TEXT PRIMARY KEY,
    key          TEXT NOT NULL UNIQUE,
    source       TEXT NOT NULL,
    target       TEXT NOT NULL,
    amount       INTEGER NOT NULL CHECK (amount > 0),
    at           REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS bank_notification (
    key          TEXT NOT NULL,
    account      TEXT NOT NULL,
    execution_id TEXT NOT NULL,
    message      TEXT NOT NULL,
    at           REAL NOT NULL,
    PRIMARY KEY (key, account)
);
"""
HOLD_STATUSES = ("pending", "settled", "released", "void")
TABLES = (
    "bank_account",
    "bank_hold",
    "bank_request",
    "bank_journal",
    "bank_transfer",
    "bank_notification",
)
# Files whose tables this process already created (CREATE ... IF NOT EXISTS once).
_ready: set[str] = set()


class UnknownAccountError(BusinessError):
    """Raised when a transfer names an account the bank does not hold."""


class AccountFrozenError(BusinessError):
    """Raised when a transfer would move money out of or into a frozen account."""


class InsufficientFundsError(BusinessError):
    """Raised by the debit when the source's balance is below the amount."""


class CancelledBeforeArrivalError(BusinessError):
    """Raised when an action arrives after its compensation left a tombstone."""


class NotHeldError(BusinessError):
    """Raised by the record when the transfer's debit or credit is not pending."""


class TransferFinalError(Exception):
    """Raised when a compensation meets a transfer that was already recorded (a bug)."""


def money(cents: int) -> str:
    """Format cents as ``1,234.56``."""
    sign = "-" if cents < 0 else ""
    whole, part = divmod(abs(cents), 100)
    return f"{sign}{whole:,}.{part:02d}"


def example_db() -> str:
    """The bank's SQLite file: ``SAGA_EXAMPLE_DB``, or ``./saga-examples.db``."""
    return os.environ.get("SAGA_EXAMPLE_DB") or DEFAULT_DB


class _Tables:
    """Plumbing shared by the bank's services: a short connection and transaction per call."""

    def __init__(self, path: str | None = None) -> None:
        self.path = path or example_db()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.execute("PRAGMA busy_timeout = 30000")
        db.execute("PRAGMA journal_mode = WAL")
        if self.path not in _ready:
            db.execute("BEGIN IMMEDIATE")
            try:
                for statement in SCHEMA.split(";")[:-1]:  # one at a time, inside this transaction
                    db.execute(statement)
                if db.execute("SELECT COUNT(*) FROM bank_account").fetchone()[0] == 0:
                    db.executemany(
                        "INSERT INTO bank_account (id, balance, frozen) VALUES (?, ?, ?)",
                        [(name, cents, int(frozen)) for name, (cents, frozen) in SEED.items()],
                    )
            except BaseException:
                db.execute("ROLLBACK")
                db.close()
                raise
            db.execute("COMMIT")
            _ready.add(self.path)
        return db

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One short write transaction (BEGIN IMMEDIATE: writers queue, nobody reads stale)."""
        with closing(self._connect()) as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with closing(self._connect()) as db:
            return list(db.execute(sql, params))

    @staticmethod
    def _answered(db: sqlite3.Connection, key: str) -> dict[str, Any] | None:
        """The answer a call under `key` already got, if it was processed."""
        row = db.execute("SELECT response FROM bank_request WHERE key = ?", (key,)).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    @staticmethod
    def _done(
        db: sqlite3.Connection,
        key: str,
        execution_id: str,
        answer: dict[str, Any],
        *,
        account: str | None,
        delta: int,
        entry: str,
    ) -> dict[str, Any]:
        """Record that `key` took effect (journal) and was answered (request); return `answer`."""
        now = time.time()
        db.execute(
            "INSERT INTO bank_journal (key, execution_id, account, delta, entry, at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (key, execution_id, account, delta, entry, now),
        )
        db.execute(
            "INSERT INTO bank_request (key, execution_id, response, at) VALUES (?, ?, ?, ?)",
            (key, execution_id, json.dumps(answer), now),
        )
        return answer


class Bank(_Tables):
    """Accounts, holds and the ledger of final transfers."""

    def debit(self, key: str, execution_id: str, account: str, amount: int) -> dict[str, Any]:
        """Move `amount` out of `account` into a pending hold under `key`, once.

        Raises:
            UnknownAccountError: no such account.
            AccountFrozenError: the account is frozen.
            InsufficientFundsError: its balance is below `amount`.
            CancelledBeforeArrivalError: the debit was refunded before it arrived.
        """
        with self._transaction() as db:
            answered = self._answered(db, key)
            if answered is not None:
                return answered
            _refuse_tombstone(db, key, "debit")
            balance = _usable(db, account)
            # The guard and the write are one statement: no overdraft, whatever runs beside.
            taken = db.execute(
                "UPDATE bank_account SET balance = balance - ? WHERE id = ? AND balance >= ?",
                (amount, account, amount),
            ).rowcount
            if taken != 1:
                raise InsufficientFundsError(
                    f"insufficient funds: {account} has {money(balance)}, "
                    f"the transfer needs {money(amount)}"
                )
            _hold(db, key, execution_id, "debit", account, amount)
            answer = {"hold": key, "account": account, "balance": balance - amount}
            return self._done(
                db, key, execution_id, answer, account=account, delta=-amount, entry="debit held"
            )

    def refund(self, key: str, action_key: str, execution_id: str) -> dict[str, Any]:
        """Release the debit hold under `action_key` back to its account, once (under `key`).

        A debit that never arrived gets a tombstone instead, so that it is
        refused if it arrives late.

        Raises:
            TransferFinalError: the transfer was already recorded (settled).
        """
        with self._transaction() as db:
            answered = self._answered(db, key)
            if answered is not None:
                return answered
            found = _release(db, action_key, execution_id, "debit")
            if found is None:
                answer: dict[str, Any] = {"refunded": 0, "tombstone": action_key}
                return self._done(
                    db, key, execution_id, answer, account=None, delta=0, entry="refund: tombstone"
                )
            account, amount = found
            db.execute(
                "UPDATE bank_account SET balance = balance + ? WHERE id = ?", (amount, account)
            )
            answer = {"refunded": amount, "account": account}
            return self._done(
                db, key, execution_id, answer, account=account, delta=amount, entry="refund"
            )

    def credit(self, key: str, execution_id: str, account: str, amount: int) -> dict[str, Any]:
        """Promise `amount` to `account` as a pending credit under `key`, once.

        The money reaches the balance only when the transfer is recorded.

        Raises:
            UnknownAccountError: no such account.
            AccountFrozenError: the account is frozen.
            CancelledBeforeArrivalError: the credit was reversed before it arrived.
        """
        with self._transaction() as db:
            answered = self._answered(db, key)
            if answered is not None:
                return answered
            _refuse_tombstone(db, key, "credit")
            _usable(db, account)
            _hold(db, key, execution_id, "credit", account, amount)
            answer = {"credit": key, "account": account}
            return self._done(
                db, key, execution_id, answer, account=account, delta=0, entry="credit pending"
            )

    def reverse(self, key: str, action_key: str, execution_id: str) -> dict[str, Any]:
        """Cancel the pending credit under `action_key`, once (under `key`); tombstone if absent.

        Nothing to claw back: a pending credit was never spendable.

        Raises:
            TransferFinalError: the transfer was already recorded (settled).
        """
        with self._transaction() as db:
            answered = self._answered(db, key)
            if answered is not None:
                return answered
            found = _release(db, action_key, execution_id, "credit")
            if found is None:
                answer: dict[str, Any] = {"reversed": 0, "tombstone": action_key}
                return self._done(
                    db, key, execution_id, answer, account=None, delta=0, entry="reverse: tombstone"
                )
            account, amount = found
            answer = {"reversed": amount, "account": account}
            return self._done(
                db, key, execution_id, answer, account=account, delta=0, entry="credit reversed"
            )

    def record(
        self, key: str, execution_id: str, debit_key: str, credit_key: str
    ) -> dict[str, Any]:
        """Make the transfer final, once: settle both holds, pay the target, enter the ledger.

        Raises:
            NotHeldError: the debit or the credit is not pending (nothing to record).
        """
        with self._transaction() as db:
            answered = self._answered(db, key)
            if answered is not None:
                return answered
            holds = {}
            for kind, hold_key in (("debit", debit_key), ("credit", credit_key)):
                row = db.execute(
                    "SELECT account, amount FROM bank_hold"
                    " WHERE key = ? AND kind = ? AND status = 'pending'",
                    (hold_key, kind),
                ).fetchone()
                if row is None:
                    raise NotHeldError(f"the {kind} {hold_key} is not pending; nothing to record")
                holds[kind] = (str(row[0]), int(row[1]))
            (source, amount), (target, promised) = holds["debit"], holds["credit"]
            if amount != promised:
                raise NotHeldError(f"debit {amount} and credit {promised} differ")
            db.execute(
                "UPDATE bank_hold SET status = 'settled', updated_at = ? WHERE key IN (?, ?)",
                (time.time(), debit_key, credit_key),
            )
            db.execute(
                "UPDATE bank_account SET balance = balance + ? WHERE id = ?", (amount, target)
            )
            db.execute(
                "INSERT INTO bank_transfer (execution_id, key, source, target, amount, at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (execution_id, key, source, target, amount, time.time()),
            )
            answer = {"transfer": execution_id, "posted": amount, "target": target}
            return self._done(
                db, key, execution_id, answer, account=target, delta=amount, entry="posted"
            )

    def accounts(self) -> list[tuple[str, int, bool]]:
        """Every account as (id, balance in cents, frozen)."""
        rows = self._read("SELECT id, balance, frozen FROM bank_account ORDER BY id")
        return [(str(a), int(b), bool(f)) for a, b, f in rows]

    def holds(self) -> list[tuple[str, str, str | None, int | None, str]]:
        """Every hold as (key, kind, account, amount, status), newest first, tombstones too."""
        rows = self._read(
            "SELECT key, kind, account, amount, status FROM bank_hold ORDER BY created_at DESC"
        )
        return [(str(k), str(t), a, n, str(s)) for k, t, a, n, s in rows]

    def ledger(self) -> list[tuple[str, str, str, int]]:
        """Every final transfer as (execution id, source, target, amount), oldest first."""
        rows = self._read(
            "SELECT execution_id, source, target, amount FROM bank_transfer ORDER BY at"
        )
        return [(str(e), str(s), str(t), int(n)) for e, s, t, n in rows]

    def reset(self) -> None:
        """Drop the bank's tables; the next call creates and seeds them again."""
        with closing(sqlite3.connect(self.path, timeout=30, isolation_level=None)) as db:
            db.execute("PRAGMA busy_timeout = 30000")
            db.execute("BEGIN IMMEDIATE")
            for table in TABLES:
                db.execute(f"DROP TABLE IF EXISTS {table}")
            db.execute("COMMIT")
        _ready.discard(self.path)


class Notifier(_Tables):
    """The bank's messages to its customers (an outbox: one message per party and call)."""

    def send(self, key: str, execution_id: str, messages: dict[str, str]) -> dict[str, Any]:
        """Queue one message per account under `key`, once."""
        with self._transaction() as db:
            answered = self._answered(db, key)
            if answered is not None:
                return answered
            db.executemany(
                "INSERT INTO bank_notification (key, account, execution_id, message, at)"
                " VALUES (?, ?, ?, ?, ?)",
                [(key, a, execution_id, text, time.time()) for a, text in messages.items()],
            )
            answer = {"notified": sorted(messages)}
            entry = "notified " + ", ".join(sorted(messages))
            return self._done(db, key, execution_id, answer, account=None, delta=0, entry=entry)

    def sent(self) -> list[tuple[str, str]]:
        """Every message as (account, text), oldest first."""
        rows = self._read("SELECT account, message FROM bank_notification ORDER BY at, account")
        return [(str(a), str(m)) for a, m in rows]


def _refuse_tombstone(db: sqlite3.Connection, key: str, kind: str) -> None:
    """Refuse an action whose key already has a hold: only a tombstone can be there."""
    if db.execute("SELECT 1 FROM bank_hold WHERE key = ?", (key,)).fetchone() is not None:
        raise CancelledBeforeArrivalError(f"the {kind} {key} was cancelled before it arrived")


def _usable(db: sqlite3.Connection, account: str) -> int:
    """The balance of `account`, which must exist and not be frozen."""
    row = db.execute("SELECT balance, frozen FROM bank_account WHERE id = ?", (account,)).fetchone()
    if row is None:
        raise UnknownAccountError(f"unknown account {account!r}")
    if row[1]:
        raise AccountFrozenError(f"account {account!r} is frozen")
    return int(row[0])


def _hold(
    db: sqlite3.Connection, key: str, execution_id: str, kind: str, account: str, amount: int
) -> None:
    now = time.time()
    db.execute(
        "INSERT INTO bank_hold (key, execution_id, kind, account, amount, status, created_at,"
        " updated_at) VALUES (?, ?, ?, ?, ?, 'pending', ?, ?)",
        (key, execution_id, kind, account, amount, now, now),
    )


def _release(
    db: sqlite3.Connection, key: str, execution_id: str, kind: str
) -> tuple[str, int] | None:
    """Release the pending hold under `key`: its (account, amount), or None (tombstone left).

    Raises:
        TransferFinalError: the hold is settled; a final transfer is never undone.
    """
    row = db.execute(
        "SELECT account, amount, status FROM bank_hold WHERE key = ?", (key,)
    ).fetchone()
    now = time.time()
    if row is None:
        db.execute(
            "INSERT INTO bank_hold (key, execution_id, kind, account, amount, status,"
            " created_at, updated_at) VALUES (?, ?, ?, NULL, NULL, 'void', ?, ?)",
            (key, execution_id, kind, now, now),
        )
        return None
    account, amount, status = row
    if status == "settled":
        raise TransferFinalError(f"the {kind} {key} belongs to a recorded transfer")
    if status != "pending":  # released or void already: nothing left to give back
        return None
    db.execute("UPDATE bank_hold SET status = 'released', updated_at = ? WHERE key = ?", (now, key))
    return str(account), int(amount)


# -- the saga -----------------------------------------------------------------------------


class Transfer(BaseModel):
    """Move `amount` cents from account `source` to account `target`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str = Field(min_length=1, max_length=64)
    target: str = Field(min_length=1, max_length=64)
    amount: int = Field(gt=0, le=MAX_AMOUNT, strict=True, description="cents")

    @model_validator(mode="after")
    def _two_accounts(self) -> Transfer:
        if self.source == self.target:
            raise ValueError("source and target must be different accounts")
        return self


transfer = Saga(
    "bank-transfer",
    payload=Transfer,
    # Transfers out of one account run one at a time (the debit never overdraws anyway).
    concurrency_key=lambda t: f"account:{t.source}",
    description="debit, credit (pending), record (pivot), notify; money conserved",
)
# The bank's own calls retry a busy database briefly; refusals are never retried.
QUICK_RETRY = RetryPolicy(max_attempts=3, initial_delay=0.05, max_delay=0.5, jitter=0.2)


@transfer.step(retry=QUICK_RETRY)
def debit(ctx: StepContext[Transfer]) -> dict[str, Any]:
    """Take the amount out of the source account into a pending hold."""
    return Bank().debit(ctx.key, ctx.execution_id, ctx.payload.source, ctx.payload.amount)


@debit.compensation
def refund(ctx: StepContext[Transfer]) -> dict[str, Any]:
    """Give the held amount back to the source (a tombstone if the debit never arrived)."""
    return Bank().refund(ctx.key, ctx.action_key, ctx.execution_id)


@transfer.step(retry=QUICK_RETRY)
def credit(ctx: StepContext[Transfer]) -> dict[str, Any]:
    """Promise the amount to the target: pending, not spendable until recorded."""
    return Bank().credit(ctx.key, ctx.execution_id, ctx.payload.target, ctx.payload.amount)


@credit.compensation
def reverse(ctx: StepContext[Transfer]) -> dict[str, Any]:
    """Cancel the pending credit (a tombstone if the credit never arrived)."""
    return Bank().reverse(ctx.key, ctx.action_key, ctx.execution_id)


@transfer.step(kind="pivot", retry=QUICK_RETRY)
def record(ctx: StepContext[Transfer]) -> dict[str, Any]:
    """The point of no return: settle both holds, pay the target, enter the ledger."""
    return Bank().record(
        ctx.key, ctx.execution_id, ctx.results["debit"]["hold"], ctx.results["credit"]["credit"]
    )


# Past the pivot, notify is retried; after these attempts the execution rests `stuck`
# (money already moved, consistent) until `saga resume` tries again.
NOTIFY_RETRY = RetryPolicy(max_attempts=5, initial_delay=0.05, max_delay=1.0, jitter=0.2)


@transfer.step(kind="retriable", retry=NOTIFY_RETRY)
def notify(ctx: StepContext[Transfer]) -> dict[str, Any]:
    """Tell both parties (retried until it succeeds; never compensated)."""
    t = ctx.payload
    return Notifier().send(
        ctx.key,
        ctx.execution_id,
        {
            t.source: f"You sent {money(t.amount)} to {t.target}.",
            t.target: f"You received {money(t.amount)} from {t.source}.",
        },
    )


# -- the example's command line -------------------------------------------------------------


def show(path: str, last: int = 10) -> None:
    """Print the bank: balances and their sum, holds, the newest transfers and notifications."""
    bank, notifier = Bank(path), Notifier(path)
    accounts = bank.accounts()
    holds = bank.holds()
    print(f"bank in {path}")
    for name, balance, frozen in accounts:
        print(f"  {name:<8}{money(balance):>12}{'  frozen' if frozen else ''}")
    total = sum(balance for _name, balance, _frozen in accounts)
    print(f"  {'sum':<8}{money(total):>12}")
    pending = [h for h in holds if h[4] == "pending"]
    in_flight = sum(n or 0 for _k, kind, _a, n, _s in pending if kind == "debit")
    if in_flight:
        print(f"  {'held':<8}{money(in_flight):>12}  debited, not yet recorded or refunded")
    counts = {status: sum(h[4] == status for h in holds) for status in HOLD_STATUSES}
    print("holds: " + ", ".join(f"{n} {status}" for status, n in counts.items()))
    for key, kind, account, amount, _status in pending:
        print(f"  {key}  {kind} {account} {money(amount or 0)}")
    ledger = bank.ledger()
    print(f"ledger: {len(ledger)} transfer(s){_newest(len(ledger), last)}")
    for execution_id, source, target, amount in ledger[len(ledger) - last :]:
        print(f"  {execution_id}  {source} -> {target}  {money(amount)}")
    sent = notifier.sent()
    print(f"notifications: {len(sent)}{_newest(len(sent), last)}")
    for account, message in sent[len(sent) - last :]:
        print(f"  {account}: {message}")


def _newest(count: int, last: int) -> str:
    if count > last:
        return f", the newest {last}:" if last else ""
    return ":" if count else ""


def main(argv: list[str] | None = None) -> None:
    """``show`` or ``reset`` the example's bank."""
    parser = argparse.ArgumentParser(
        description="Show or reset the bank of examples/bank_transfer.py."
    )
    parser.add_argument(
        "--db",
        default=None,
        help=f"the bank's SQLite file (default: $SAGA_EXAMPLE_DB or {DEFAULT_DB})",
    )
    parser.add_argument("--last", type=int, default=10, help="transfers and messages to list")
    parser.add_argument("command", choices=("show", "reset"))
    args = parser.parse_args(argv)
    path = args.db or example_db()
    if args.command == "reset":
        Bank(path).reset()
        Bank(path).accounts()  # create and seed again
        print(f"bank in {path} reset to the seeded accounts")
    show(path, max(0, args.last))


if __name__ == "__main__":
    main()
