"""The saga log: the only package that talks SQL.

:class:`SagaStore` is the contract the runner and the CLI program against;
:func:`open_store` picks the backend from the URL. Applications that keep
tables of their own in the log's database (the travel demo) reach them
through the store's extension point: :meth:`SagaStore.participant` and
:meth:`SagaStore.upgrade_branch`.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from saga_cli.domain import Event, SagaStatus
from saga_cli.errors import ExecutionBusyError, InvalidInputError, SagaError, WouldBlockError

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ExecutionRecord:
    """A row of the execution table, as the rest of the library sees it."""

    id: str
    saga: str
    payload: str
    status: SagaStatus
    step: str | None
    created_at: float
    updated_at: float
    owner: str | None
    lease_expires_at: float | None
    version: int
    definition_version: str | None = None
    concurrency_key: str | None = None


@dataclass(frozen=True, slots=True)
class DefinitionRecord:
    """One version of a saga definition: its steps and where it came from.

    Each step is its shape (name, kind, group: see domain.shape_of), followed
    by its policies in logs written since they were recorded (see
    domain.recorded_steps).
    """

    name: str
    version: str
    steps: list[list[Any]]
    source: str | None
    created_at: float


@dataclass(frozen=True, slots=True)
class AlertRecord:
    """A row of the alert outbox: what needs an operator, and how far its delivery got.

    Written in the same transaction as the event that caused it (see
    Transition.alerts). `id` is ``<execution id>:<seq of that event>``, the
    idempotency key every sink is sent; `delivered_to` names the sinks that
    took it, and `delivered_at` is set once all the configured sinks have.
    """

    id: str
    execution_id: str
    saga: str
    kind: str
    step: str | None
    attempt: int
    error: str | None
    created_at: float
    attempts: int = 0
    next_attempt_at: float = 0.0
    delivered_at: float | None = None
    delivered_to: tuple[str, ...] = ()
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class Transition:
    """What one commit writes: new events and the execution row's new projection.

    `alerts` are inserted in the same transaction as the events that caused
    them, so an alert exists if and only if its cause does.
    """

    execution_id: str
    expected_version: int
    events: Sequence[Event]
    status: SagaStatus
    step: str | None
    owner: str | None
    lease_expires_at: float | None
    now: float
    release_key: str | None = None
    alerts: Sequence[AlertRecord] = ()


@dataclass(frozen=True, slots=True)
class Creation:
    """What the first commit of a new execution writes: its row and first events.

    A record with a concurrency key takes the key's lock in the same
    transaction (refused with ConcurrencyKeyBusyError if it is held); a
    `definition` not yet registered in the log is registered with it.
    """

    record: ExecutionRecord
    events: Sequence[Event]
    definition: DefinitionRecord | None = None
    alerts: Sequence[AlertRecord] = ()


@dataclass(frozen=True, slots=True)
class Claim:
    """One lease to take: the version the caller read, and the event recording why."""

    execution_id: str
    expected_version: int
    event: Event | None


@dataclass(frozen=True, slots=True)
class LeaseGroup:
    """Unfinished executions sharing a status and an owner (see ``lease_groups``)."""

    status: SagaStatus
    owner: str | None
    lease_live: bool
    count: int


@dataclass(frozen=True, slots=True)
class WorkerRecord:
    """A row of the worker registry: one ``saga worker`` process and its last heartbeat.

    `id` is the worker's owner id (``host:pid:start``, see lease.current_owner),
    the value it writes in the executions it holds; `sagas` is None when the
    worker takes every saga it has loaded.
    """

    id: str
    host: str
    pid: int
    started_at: float
    heartbeat_at: float
    concurrency: int
    lease_seconds: float
    sagas: tuple[str, ...] | None = None


# An event reduced to what timing and failure rates need: (step, type,
# attempt, at, None), the shape timeline.pair_attempts reads, with the detail
# JSON left unread (plain tuples: stats pairs tens of thousands of them).
StepRecord = tuple[str | None, str, int, float, None]


class ParticipantCursor(Protocol):
    """The cursor of a participant's transaction: the part of DB-API every backend shares."""

    @property
    def rowcount(self) -> int:
        """Rows the last statement changed."""
        ...

    def execute(self, sql: str, params: Sequence[Any] = (), /) -> ParticipantCursor:
        """Run one statement (``?`` placeholders); returns the cursor, to fetch from."""
        ...

    def fetchone(self) -> Any:
        """The next row of the last statement's result, or None."""
        ...

    def fetchall(self) -> list[Any]:
        """The remaining rows of the last statement's result."""
        ...


class Participant(abc.ABC):
    """A connection to the saga log's database for an application's own tables.

    Handed out by :meth:`SagaStore.participant`. Statements take ``?``
    placeholders on every backend, and the database's errors come out as
    StoreError. Not for concurrent use: open one per thread.
    """

    @abc.abstractmethod
    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Return the rows of one read-only statement, run on its own.

        Raises:
            StoreError: the database failed.
        """

    @abc.abstractmethod
    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one writing statement as a transaction of its own; return the rows it changed.

        Raises:
            StoreError: the database failed or refused it (a constraint).
        """

    @abc.abstractmethod
    def transaction(self) -> AbstractContextManager[ParticipantCursor]:
        """A write transaction: committed when the block ends, rolled back if it raises.

        Participants' write transactions on one database run one at a time
        (SQLite has one writer, taken at BEGIN IMMEDIATE; on PostgreSQL each
        takes the same transaction-scoped advisory lock), so one that reads
        and then writes cannot race another: a cancel that finds no
        reservation and writes a tombstone never races a late reserve of the
        same key.

        Raises:
            StoreError: the database failed; the transaction was rolled back.
        """

    def run(self, body: Callable[[Any], T]) -> T:
        """Run ``body(cursor)`` in a :meth:`transaction` and return what it returns.

        Raises:
            StoreError: the database failed; the transaction was rolled back.
        """
        with self.transaction() as cursor:
            return body(cursor)

    async def run_async(self, body: Callable[[Any], T]) -> T:
        """:meth:`run` for a caller on an event loop: never blocks the loop.

        By default on a thread; a backend whose transactions can start at
        once (SQLite's, when no other writer holds the file) runs it right on
        the loop, and otherwise waits for its turn without blocking it.

        Raises:
            StoreError: the database failed; the transaction was rolled back.
        """
        return await asyncio.to_thread(self.run, body)

    async def execute_async(self, sql: str, params: Sequence[Any] = ()) -> int:
        """:meth:`execute` for a caller on an event loop (see :meth:`run_async`)."""
        return await asyncio.to_thread(self.execute, sql, params)

    def try_transaction(self) -> AbstractContextManager[ParticipantCursor]:
        """:meth:`transaction`, only if it can start at once: for callers on an event loop.

        Where starting would wait (another writer holds the database, or the
        backend only talks over the network), it raises at once and nothing
        is done; the caller runs :meth:`transaction` on a thread instead.

        Raises:
            WouldBlockError: starting would wait.
            StoreError: the database failed; the transaction was rolled back.
        """
        raise WouldBlockError("this backend's transactions may wait")

    @abc.abstractmethod
    def close(self) -> None:
        """Close the connection."""


class SagaStore(abc.ABC):
    """Durable storage of executions and their events.

    Every write is one transaction that commits before the call returns: when
    :meth:`create` or :meth:`append` returns, its records survive a crash.
    """

    url: str

    @abc.abstractmethod
    def create(self, record: ExecutionRecord, events: Sequence[Event]) -> None:
        """Insert a new execution with its first events, in one transaction."""

    @abc.abstractmethod
    def append(self, transition: Transition) -> int:
        """Append events and update the execution row if its version still matches.

        Returns:
            The execution's new version.

        Raises:
            LeaseLostError: the version moved on (another owner took over);
                nothing was written.
        """

    @abc.abstractmethod
    def commit_all(self, writes: Sequence[Creation | Transition]) -> list[int | SagaError]:
        """Apply several executions' writes in one transaction (one commit, one fsync).

        Returns:
            Per write, the execution's new version, or the error that refused
            it (LeaseLostError when a transition's version moved on); a
            refused write leaves the others intact.

        Raises:
            StoreError: the transaction itself failed; nothing was written.
        """

    @abc.abstractmethod
    def claim_many(
        self, claims: Sequence[Claim], owner: str, lease_expires_at: float, now: float
    ) -> list[int | None]:
        """Take several leases in one transaction, each by compare-and-set on its version.

        Returns:
            Per claim, the execution's new version, or None where the version
            had moved on (someone else claimed it first); nothing is written
            for those.
        """

    def claim(
        self,
        execution_id: str,
        expected_version: int,
        owner: str,
        lease_expires_at: float,
        event: Event | None,
        now: float,
    ) -> int:
        """Take one lease by compare-and-set on its version.

        Raises:
            ExecutionBusyError: the version moved on since it was read.
        """
        (version,) = self.claim_many(
            [Claim(execution_id, expected_version, event)], owner, lease_expires_at, now
        )
        if version is None:
            raise ExecutionBusyError(
                f"execution {execution_id} was claimed by another process a moment ago"
            )
        return version

    @abc.abstractmethod
    def claim_ready(
        self,
        owner: str,
        lease_expires_at: float,
        now: float,
        *,
        sagas: Sequence[str] | None = None,
        limit: int = 1,
        exclude: Collection[str] = (),
        admit: Callable[[ExecutionRecord], bool] | None = None,
    ) -> list[ExecutionRecord]:
        """Take, in one transaction, the leases of up to `limit` executions a worker may run.

        Ready means: status pending, or status running/compensating with no owner or a lease
        that expired (lease_expires_at IS NULL OR lease_expires_at < now); of the sagas named
        in `sagas` if given; oldest (created_at, id) first. Each one taken gets owner,
        lease_expires_at, updated_at=now and version=version+1, and a `saga_resumed` event
        (seq = its max seq + 1, attempt 0, detail {"by": owner}, at=now) in the same
        transaction. Never a completed, compensated or stuck one.

        The owner/lease condition applies to pending executions too: a pending
        execution just claimed stays pending until its first step is recorded,
        and must not be taken again while that claim's lease is live. A
        submitted one has no owner, so it is ready at once.

        `exclude` names executions never to take (ones this worker refused
        before). `admit`, when given, is asked about each candidate (as read,
        before any write) inside the transaction; one it refuses is left exactly
        as it was: no lease, no version bump, no event (a worker that cannot
        run an execution must not hold it up for the others).

        Returns:
            The records as they are after the claim (new owner, lease and version).
        """

    @abc.abstractmethod
    def save_worker(self, worker: WorkerRecord) -> None:
        """Insert or update (by id) a worker's registry row: its heartbeat, in one commit."""

    @abc.abstractmethod
    def remove_worker(self, worker_id: str) -> None:
        """Delete a worker's registry row (a clean exit); no error if it is gone."""

    @abc.abstractmethod
    def remove_workers(self, seen: Mapping[str, float]) -> int:
        """Delete the registry rows of `seen` (id -> heartbeat_at), in one commit.

        A row whose heartbeat is newer than the one given stays: that worker
        beat since it was looked at (it was paused, not dead).

        Returns:
            How many rows were deleted.
        """

    @abc.abstractmethod
    def end_leases(self, owners: Sequence[str], now: float) -> int:
        """Expire, at `now`, every live lease `owners` hold on unfinished executions.

        For owners known to be dead (see saga_cli.lease.owner_is_dead): their
        executions become ready for SagaStore.claim_ready at once instead of
        when the leases run out. Neither the version nor the events change: a
        dead process writes nothing more, and the claim that follows bumps
        the version as every claim does. One commit.

        Returns:
            How many executions' leases were ended.
        """

    @abc.abstractmethod
    def workers(self) -> list[WorkerRecord]:
        """Every registered worker, live or stale, oldest start first."""

    @abc.abstractmethod
    def held_executions(self, owners: Sequence[str], now: float) -> dict[str, list[str]]:
        """Ids of the unfinished executions each of `owners` holds a live lease on (at `now`).

        Returns:
            One entry per owner asked (an empty list for one holding nothing),
            ids oldest first.
        """

    @abc.abstractmethod
    def events_of(self, execution_ids: Sequence[str]) -> dict[str, list[Event]]:
        """Return the events of several executions (one query), each in sequence order."""

    @abc.abstractmethod
    def get(self, execution_id: str) -> ExecutionRecord:
        """Return one execution by full id.

        Raises:
            UnknownExecutionError: no such execution.
        """

    @abc.abstractmethod
    def events(self, execution_id: str) -> list[Event]:
        """Return an execution's events in sequence order."""

    @abc.abstractmethod
    def resolve_id(self, prefix: str) -> str:
        """Expand a unique id prefix to the full id.

        Raises:
            UnknownExecutionError: nothing matches.
            AmbiguousIdError: more than one execution matches.
        """

    @abc.abstractmethod
    def list_executions(
        self,
        *,
        status: SagaStatus | None = None,
        limit: int = 20,
        saga: str | None = None,
        since: float | None = None,
        until: float | None = None,
        after: tuple[float, str] | None = None,
    ) -> list[ExecutionRecord]:
        """Return executions newest first, by (created_at, id) descending.

        Args:
            status: only this status.
            limit: at most this many.
            saga: only executions of the saga with this name.
            since: only those created at or after this time (epoch seconds).
            until: only those created before this time.
            after: a keyset cursor, the (created_at, id) of the last row of
                the previous page: only rows that sort after it. Executions
                created meanwhile sort first, so they never shift a page.
        """

    @abc.abstractmethod
    def count_statuses(
        self,
        *,
        statuses: Sequence[SagaStatus] = tuple(SagaStatus),
        saga: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> dict[SagaStatus, int]:
        """Count executions per status (one entry per status asked), filtered as in list."""

    @abc.abstractmethod
    def created_histogram(
        self, since: float, until: float, buckets: int, *, saga: str | None = None
    ) -> list[int]:
        """Count executions created in each of `buckets` equal slices of [since, until)."""

    @abc.abstractmethod
    def lease_groups(self, now: float, *, saga: str | None = None) -> list[LeaseGroup]:
        """Group the pending, running and compensating executions by status and owner.

        One row per (status, owner, lease still live at `now`): enough to
        tell live from interrupted ones without reading every row.
        """

    @abc.abstractmethod
    def step_records(self, execution_ids: Sequence[str]) -> dict[str, list[StepRecord]]:
        """The step events of several executions, in sequence order, without details."""

    @abc.abstractmethod
    def prune(self, older_than: float, statuses: Sequence[SagaStatus], *, batch: int = 500) -> int:
        """Delete executions, with their events, created and last updated before `older_than`.

        Only completed and compensated executions are ever deleted; each batch
        is one transaction, so a concurrent writer waits at most one batch.

        Returns:
            How many executions were deleted.

        Raises:
            InvalidInputError: a status in `statuses` is not terminal.
        """

    @abc.abstractmethod
    def unfinished_pages(self, page: int = 500) -> Iterator[list[ExecutionRecord]]:
        """Yield, a page at a time, every execution that is not completed, compensated or stuck.

        Pages come status by status (running, compensating, pending), each
        oldest first.
        """

    def unfinished(self) -> list[ExecutionRecord]:
        """Every execution that is not completed, compensated or stuck, oldest first."""
        records = [record for page in self.unfinished_pages() for record in page]
        return sorted(records, key=lambda r: (r.created_at, r.id))

    @abc.abstractmethod
    def executions_of(self, saga: str) -> list[tuple[str, SagaStatus, str]]:
        """Return (id, status, payload JSON) of every execution of one saga."""

    @abc.abstractmethod
    def renew_leases(self, owner: str, held: Mapping[str, int], until: float) -> None:
        """Extend `owner`'s leases on executions still at the versions in `held`.

        The version is not bumped: a renewal never fences the owner's own
        next write, and an execution taken over meanwhile is left alone.
        """

    @abc.abstractmethod
    def definition_versions(self, name: str | None = None) -> list[DefinitionRecord]:
        """Return the registered versions of one saga (or of all), newest first."""

    # -- the alert outbox -------------------------------------------------------------

    @abc.abstractmethod
    def claim_alerts(self, now: float, until: float, *, limit: int = 100) -> list[AlertRecord]:
        """Take, in one transaction, up to `limit` undelivered alerts that are due, oldest first.

        Due means ``delivered_at IS NULL AND next_attempt_at <= now``. Each one
        taken has its next_attempt_at set to `until`, a lease: no other
        deliverer takes it before then, and if this one dies mid-way the
        alert is due again at `until` (delivery is at least once).

        Returns:
            The alerts as they were before the claim.
        """

    @abc.abstractmethod
    def save_delivery(self, alert: AlertRecord) -> None:
        """Write an alert's delivery state (attempts, next attempt, delivered_at/to, last error)."""

    @abc.abstractmethod
    def alerts(self, *, pending: bool = False, limit: int = 100) -> list[AlertRecord]:
        """Alerts newest first; with `pending`, only those not yet delivered to every sink."""

    # -- the extension point: applications' tables in the log's database ------------------

    @abc.abstractmethod
    def participant(self) -> Participant:
        """Open a new connection to the log's database for an application's own tables.

        For participants that keep their state next to the saga log (the
        travel demo's services and circuit breakers): their transactions are
        their own, never the log's, and their tables come from their own
        migration branch (see upgrade_branch). The connection shares nothing
        with the store's: it may be opened after the store is closed, and the
        caller closes it.

        Raises:
            StoreError: the database cannot be reached.
        """

    @abc.abstractmethod
    def upgrade_branch(self, label: str) -> None:
        """Apply an application's migration branch, or bring it to its newest revision.

        A branch (Alembic ``branch_labels`` in migrations/versions) holds
        tables the saga log itself does not need; an application applies it
        when it is first used, so a log that never runs the application holds
        only the saga tables. Once this store has seen the branch at its head,
        a call is a no-op without a query.

        Raises:
            InvalidInputError: no migration branch has this label.
            SchemaTooNewError: a newer saga migrated the log.
            MigrationError: a revision failed; its transaction was rolled back.
        """

    @abc.abstractmethod
    def branches(self) -> tuple[str, ...]:
        """Labels of the migration branches applied to the log (see upgrade_branch); one query."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the connections."""


def open_store(url: str, *, create: bool = True) -> SagaStore:
    """Open (and migrate, on first use) the saga log at `url`.

    Args:
        url: a file path or ``sqlite:///path``; SQLite settings ride along as
            query parameters: ``?synchronous=NORMAL&busy_timeout=2000``. Or a
            PostgreSQL URL, ``postgresql+psycopg://user@host:5432/dbname``
            (``postgresql://`` too): the database must exist; saga migrates it.
        create: whether a missing database file may be created (SQLite only).

    Raises:
        InvalidInputError: the URL names a backend this build does not support.
        StoreError: the database cannot be opened, is not a saga log, or is
            newer than this version.
    """
    from saga_cli.store.postgres import is_postgres_url

    if is_postgres_url(url):
        from saga_cli.store.postgres import PostgresStore

        return PostgresStore.open(url, create=create)
    if "://" in url and not url.startswith("sqlite:"):
        raise InvalidInputError(
            f"unsupported database URL {url!r}: use a file path, sqlite:///PATH"
            " or postgresql+psycopg://USER@HOST:PORT/DBNAME"
        )
    from saga_cli.store.sqlite import SqliteStore

    return SqliteStore.open(url, create=create)


def read_revision(url: str) -> tuple[str, str | None]:
    """Return (where, schema revision) of the log at `url` without writing anything.

    `where` names the log for messages (a path, or the URL without its
    password); the revision is the saga log's own (the main line's, see
    store/migrate.py), None for an empty or missing database.

    Raises:
        StoreError: the database cannot be read.
    """
    from saga_cli.store import migrate

    where, revisions = read_revisions(url)
    return where, migrate.main_revision(revisions)


def read_revisions(url: str) -> tuple[str, tuple[str, ...]]:
    """Return (where, every applied revision: the main line's and each branch's), read-only.

    Raises:
        StoreError: the database cannot be read.
    """
    from saga_cli.store.postgres import is_postgres_url

    if is_postgres_url(url):
        from saga_cli.store import postgres

        return postgres.read_revisions(url)
    from saga_cli.store import sqlite

    return sqlite.read_revisions(url)
