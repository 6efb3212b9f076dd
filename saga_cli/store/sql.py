"""One saga log over SQL: every statement and operation SQLite and PostgreSQL share.

:class:`SqlStore` holds the write path (planned writes, :meth:`~SqlStore.commit_all`,
claims), the reads, pruning and the revision checks at open. A backend
subclass supplies only what truly differs between the two databases:

* connections and their settings, and how a transaction is run and committed
  (``_commit``; SQLite batches concurrent writers, PostgreSQL reconnects);
* the placeholder (``MARK``: ``?`` or ``%s``) and the ``IN``-list form
  (``_in``: a list of placeholders, or ``= ANY(%s)`` with one array);
* locking and planner hints (``_indexed``, ``FOR_UPDATE``) and the one
  query whose locking differs entirely, :meth:`SagaStore.claim_ready`;
* error translation, inside ``_read`` and ``_commit``.

Queries are written here with ``?`` placeholders. The write path's
statements are translated once per backend (:class:`Statements`); a read is
handed to ``_read`` as written, and the PostgreSQL backend translates it.
"""

from __future__ import annotations

import abc
import functools
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

from saga_cli.domain import Event, EventType, SagaStatus, is_terminal
from saga_cli.errors import (
    AmbiguousIdError,
    ConcurrencyKeyBusyError,
    InvalidInputError,
    LeaseLostError,
    SagaError,
    UnknownExecutionError,
)
from saga_cli.store import (
    AlertRecord,
    Claim,
    Creation,
    DefinitionRecord,
    ExecutionRecord,
    LeaseGroup,
    SagaStore,
    StepRecord,
    Transition,
    WorkerRecord,
    migrate,
)

T = TypeVar("T")

EXECUTION_COLUMNS = (
    "id, saga, payload, status, step, created_at, updated_at, owner, lease_expires_at, version,"
    " definition_version, concurrency_key"
)
SELECT_EXECUTION = f"SELECT {EXECUTION_COLUMNS} FROM saga_execution"
WORKER_COLUMNS = "id, host, pid, started_at, heartbeat_at, concurrency, lease_seconds, sagas"
ALERT_COLUMNS = (
    "id, execution_id, saga, kind, step, attempt, error, created_at, attempts, next_attempt_at,"
    " delivered_at, delivered_to, last_error"
)
# Ids are lowercase hexadecimal (uuid4().hex); a prefix is matched as a range.
_HEX = frozenset("0123456789abcdef")
# Rows per IN list (SQLite's limit on host parameters is 32,766; 500 keeps
# each statement small) and per array on PostgreSQL, for the same pages.
_CHUNK = 500
_UNFINISHED = (SagaStatus.PENDING, SagaStatus.RUNNING, SagaStatus.COMPENSATING)
# Statuses few executions have at once in an ordinary log: a listing of one
# of them walks the status index even when a saga is named too.
_RARE_STATUSES = frozenset({*_UNFINISHED, SagaStatus.STUCK})

encode = json.JSONEncoder(separators=(",", ":"), default=str).encode


def row_to_record(row: Sequence[Any]) -> ExecutionRecord:
    """An execution row, in EXECUTION_COLUMNS order, as the library sees it."""
    return ExecutionRecord(
        id=row[0],
        saga=row[1],
        payload=row[2],
        status=SagaStatus(row[3]),
        step=row[4],
        created_at=row[5],
        updated_at=row[6],
        owner=row[7],
        lease_expires_at=row[8],
        version=row[9],
        definition_version=row[10],
        concurrency_key=row[11],
    )


def event_rows(execution_id: str, events: Sequence[Event]) -> list[tuple[Any, ...]]:
    """Rows for ``saga_event`` (saga_id, seq, step, type, attempt, detail, at)."""
    return [
        (
            execution_id,
            e.seq,
            e.step,
            e.type.value,
            e.attempt,
            None if e.detail is None else encode(e.detail),
            e.at,
        )
        for e in events
    ]


def alert_rows(alerts: Sequence[AlertRecord]) -> list[tuple[Any, ...]]:
    """Rows for ``saga_alert``, in ALERT_COLUMNS order."""
    return [
        (
            a.id,
            a.execution_id,
            a.saga,
            a.kind,
            a.step,
            a.attempt,
            a.error,
            a.created_at,
            a.attempts,
            a.next_attempt_at,
            a.delivered_at,
            encode(list(a.delivered_to)) if a.delivered_to else None,
            a.last_error,
        )
        for a in alerts
    ]


def row_to_alert(row: Sequence[Any]) -> AlertRecord:
    """A ``saga_alert`` row, in ALERT_COLUMNS order, as the library sees it."""
    return AlertRecord(
        id=row[0],
        execution_id=row[1],
        saga=row[2],
        kind=row[3],
        step=row[4],
        attempt=row[5],
        error=row[6],
        created_at=row[7],
        attempts=row[8],
        next_attempt_at=row[9],
        delivered_at=row[10],
        delivered_to=tuple(json.loads(row[11])) if row[11] else (),
        last_error=row[12],
    )


def window_filters(
    *, saga: str | None, since: float | None, until: float | None
) -> tuple[list[str], list[Any]]:
    """WHERE terms (``?`` placeholders) and parameters for the saga and creation-window filters."""
    where: list[str] = []
    params: list[Any] = []
    if saga is not None:
        where.append("saga=?")
        params.append(saga)
    if since is not None:
        where.append("created_at>=?")
        params.append(since)
    if until is not None:
        where.append("created_at<?")
        params.append(until)
    return where, params


def list_index(status: SagaStatus | None, saga: str | None) -> str:
    """The index a listing walks in (created_at, id) order, stopping after its limit.

    (status, created_at, id), (saga, created_at, id) or (created_at, id).
    With both a status and a saga, the status index is walked for the rare
    statuses (everything but completed and compensated) and the saga index
    otherwise, so neither walk meets long runs of rows it must skip in an
    ordinary log.
    """
    if status is not None and (saga is None or status in _RARE_STATUSES):
        return "ix_saga_execution_status_created"
    if saga is not None:
        return "ix_saga_execution_saga_created"
    return "ix_saga_execution_created"


class Statements:
    """The write path's statements in one backend's placeholder style, built once.

    Args:
        mark: the placeholder the driver takes (``?`` for sqlite3, ``%s`` for psycopg).
    """

    __slots__ = (
        "claim_execution",
        "insert_alert",
        "insert_event",
        "insert_execution",
        "key_holder",
        "register_definition",
        "release_key",
        "take_key",
        "update_execution",
    )

    def __init__(self, mark: str) -> None:
        def q(sql: str) -> str:
            return sql.replace("?", mark)

        self.insert_execution = q(
            f"INSERT INTO saga_execution ({EXECUTION_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
        )
        self.update_execution = q(
            "UPDATE saga_execution SET status=?, step=?, updated_at=?, owner=?,"
            " lease_expires_at=?, version=version+1 WHERE id=? AND version=?"
        )
        self.claim_execution = q(
            "UPDATE saga_execution SET owner=?, lease_expires_at=?, updated_at=?,"
            " version=version+1 WHERE id=? AND version=?"
        )
        self.insert_event = q(
            "INSERT INTO saga_event (saga_id, seq, step, type, attempt, detail, at)"
            " VALUES (?,?,?,?,?,?,?)"
        )
        # An alert's id is its cause's (execution, seq), unique like the event.
        self.insert_alert = q(
            f"INSERT INTO saga_alert ({ALERT_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"
        )
        # Taken after the execution row exists (the foreign key), and race-free
        # on PostgreSQL too: of two transactions inserting one key, the second
        # waits for the first and then inserts nothing.
        self.take_key = q(
            "INSERT INTO saga_key_lock (key, execution_id, acquired_at) VALUES (?,?,?)"
            " ON CONFLICT (key) DO NOTHING"
        )
        self.key_holder = q("SELECT execution_id FROM saga_key_lock WHERE key=?")
        self.release_key = q("DELETE FROM saga_key_lock WHERE key=? AND execution_id=?")
        self.register_definition = q(
            "INSERT INTO saga_definition (name, version, steps, source, created_at)"
            " VALUES (?,?,?,?,?) ON CONFLICT (name, version) DO UPDATE SET source=excluded.source"
            " WHERE excluded.source IS NOT NULL"
        )


class ErrorTranslation:
    """A block whose driver errors come out as the library's StoreError.

    A class rather than a generator-based context manager: it wraps every
    read of the log and every statement of the participants, and one
    instance serves any number of blocks and threads.

    Args:
        error: the driver's base error class (sqlite3.DatabaseError, psycopg.Error).
        translate: makes the library's error of one of them and `where`.
        where: the database, as messages name it.
    """

    __slots__ = ("error", "translate", "where")

    def __init__(
        self,
        error: type[Exception],
        translate: Callable[[Any, str], Exception],
        where: str,
    ) -> None:
        self.error = error
        self.translate = translate
        self.where = where

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: BaseException | None, traceback: object) -> None:
        if isinstance(exc, self.error):
            raise self.translate(exc, self.where) from None


class Rollback(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Leaves the work of ``_commit`` so that its transaction is rolled back, carrying the result.

    Raised by a single write that was refused after it had written part of
    itself (a busy concurrency key is found after the row is inserted);
    ``_commit`` returns `result` instead of raising.
    """

    def __init__(self, result: Any) -> None:
        self.result = result


class _Planned:
    """The SQL of one write, prepared outside the transaction."""

    __slots__ = (
        "alerts",
        "definition",
        "events",
        "execution_id",
        "key",
        "release_key",
        "row",
        "sql",
        "statement",
        "version",
    )

    def __init__(self, write: Creation | Transition, sql: Statements) -> None:
        self.sql = sql
        self.key: str | None = None
        self.release_key: str | None = None
        self.definition: tuple[Any, ...] | None = None
        self.alerts = alert_rows(write.alerts) if write.alerts else None
        if isinstance(write, Creation):
            r = write.record
            self.statement = sql.insert_execution
            self.row: tuple[Any, ...] = (
                r.id,
                r.saga,
                r.payload,
                r.status,
                r.step,
                r.created_at,
                r.updated_at,
                r.owner,
                r.lease_expires_at,
                r.version,
                r.definition_version,
                r.concurrency_key,
            )
            self.execution_id = r.id
            self.events = event_rows(r.id, write.events)
            self.key = r.concurrency_key
            d = write.definition
            if d is not None:
                self.definition = (d.name, d.version, encode(d.steps), d.source, d.created_at)
            self.version = r.version
            return
        t = write
        self.statement = sql.update_execution
        self.row = (
            t.status,
            t.step,
            t.now,
            t.owner,
            t.lease_expires_at,
            t.execution_id,
            t.expected_version,
        )
        self.execution_id = t.execution_id
        self.events = event_rows(t.execution_id, t.events)
        self.release_key = t.release_key
        self.version = t.expected_version + 1

    def run(self, cursor: Any) -> int | SagaError:
        """Run the write but its events; a refused compare-and-set or a busy key is returned.

        A refused write may have written part of itself (the key is taken
        after the row), so the caller rolls it back: the whole transaction
        for a single write, its savepoint in a batch (only a write that takes
        a key needs one: a refused compare-and-set writes nothing). The
        caller inserts the events of the accepted writes, all in one go.
        """
        sql = self.sql
        cursor.execute(self.statement, self.row)
        if cursor.rowcount != 1:
            return LeaseLostError(
                f"execution {self.execution_id} was taken over by another process; "
                "this process stopped writing to it"
            )
        if self.key is not None:
            cursor.execute(sql.take_key, (self.key, self.execution_id, self.row[5]))
            if cursor.rowcount != 1:
                holder = cursor.execute(sql.key_holder, (self.key,)).fetchone()
                return ConcurrencyKeyBusyError(
                    f"concurrency key {self.key!r} is held by unfinished execution "
                    f"{holder[0] if holder else '(just released)'}; "
                    "try again when it ends, or wait for it"
                )
        if self.release_key is not None:
            cursor.execute(sql.release_key, (self.release_key, self.execution_id))
        if self.definition is not None:
            cursor.execute(sql.register_definition, self.definition)
        return self.version


class SqlStore(SagaStore):
    """A saga log in a SQL database; a subclass connects it to one kind of database."""

    # The driver's placeholder, and the write path's statements in it.
    MARK: ClassVar[str]
    SQL: ClassVar[Statements]
    # Appended to a SELECT that picks rows to delete: locks them (PostgreSQL),
    # or nothing where the transaction already holds the only write lock.
    FOR_UPDATE: ClassVar[str] = ""
    # How ids are ordered where the order must be byte-wise (ids are hex).
    ID_ORDER: ClassVar[str] = "id"

    # Set by the subclass: how messages name the log (never with a password),
    # and the revisions (alembic_version's rows) it was at once opened.
    display_url: str
    _revisions: tuple[str, ...]

    @abc.abstractmethod
    def _upgrade(self, branches: Sequence[str]) -> None:
        """Migrate the log: the main line and the branches labelled `branches` to their heads."""

    @abc.abstractmethod
    def _commit(self, work: Callable[[Any], T]) -> T:
        """Run `work` with a cursor in one committed transaction and return its result.

        A :class:`Rollback` raised by `work` rolls the transaction back and
        its result is returned. Anything else `work` raises rolls back and
        propagates (the driver's errors translated into StoreError).
        """

    @abc.abstractmethod
    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Rows of one read-only query (``?`` placeholders), outside any write transaction."""

    @abc.abstractmethod
    def _in(self, column: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
        """A WHERE term (``?`` placeholders) matching `column` against `values`, and its params."""

    def _read_in(
        self,
        sql: str,
        column: str,
        values: Sequence[Any],
        *,
        before: Sequence[Any] = (),
        after: Sequence[Any] = (),
    ) -> list[Any]:
        """Rows of `sql` whose ``{term}`` matches `column` against `values`, 500 at a time.

        `before` and `after` are the parameters of the placeholders before and after the term.
        """
        rows: list[Any] = []
        for start in range(0, len(values), _CHUNK):
            term, params = self._in(column, values[start : start + _CHUNK])
            rows += self._read(sql.replace("{term}", term), [*before, *params, *after])
        return rows

    def _indexed(self, index: str) -> str:
        """The clause that makes a query walk `index` (after its table name), if one is needed."""
        return ""

    def _q(self, sql: str) -> str:
        """`sql` with the driver's placeholders, for a statement run on a cursor in ``_commit``."""
        return sql.replace("?", self.MARK)

    def _write(self, sql: str, params: Sequence[Any], *, many: bool = False) -> None:
        """Run one statement (``?`` placeholders; `many`: once per row) and commit it."""
        sql = self._q(sql)

        def work(cursor: Any) -> None:
            if many:
                cursor.executemany(sql, params)
            else:
                cursor.execute(sql, params)

        self._commit(work)

    # -- writes ------------------------------------------------------------------------------

    def create(self, record: ExecutionRecord, events: Sequence[Event]) -> None:
        """Insert an execution and its first events in one transaction."""
        (result,) = self.commit_all([Creation(record, events)])
        if isinstance(result, SagaError):
            raise result

    def append(self, transition: Transition) -> int:
        """Compare-and-set the execution row and append events, in one transaction."""
        (result,) = self.commit_all([transition])
        if isinstance(result, SagaError):
            raise result
        return result

    def commit_all(self, writes: Sequence[Creation | Transition]) -> list[int | SagaError]:
        """Apply the writes of several executions in one transaction (a savepoint each)."""
        sql = self.SQL
        statements = [_Planned(write, sql) for write in writes]

        def work(cursor: Any) -> list[int | SagaError]:
            if len(statements) == 1:
                (only,) = statements
                result = only.run(cursor)
                if isinstance(result, SagaError):
                    raise Rollback([result])
                if only.events:
                    cursor.executemany(sql.insert_event, only.events)
                if only.alerts:
                    cursor.executemany(sql.insert_alert, only.alerts)
                return [result]
            results: list[int | SagaError] = []
            events: list[tuple[Any, ...]] = []
            alerts: list[tuple[Any, ...]] = []
            for planned in statements:
                guarded = planned.key is not None  # only a key is taken after a write
                if guarded:
                    cursor.execute("SAVEPOINT item")
                outcome = planned.run(cursor)
                if guarded:
                    if isinstance(outcome, SagaError):
                        cursor.execute("ROLLBACK TO SAVEPOINT item")
                    cursor.execute("RELEASE SAVEPOINT item")
                if not isinstance(outcome, SagaError):
                    events += planned.events
                    if planned.alerts:
                        alerts += planned.alerts
                results.append(outcome)
            if events:
                cursor.executemany(sql.insert_event, events)
            if alerts:
                cursor.executemany(sql.insert_alert, alerts)
            return results

        return self._commit(work)

    def claim_many(
        self, claims: Sequence[Claim], owner: str, lease_expires_at: float, now: float
    ) -> list[int | None]:
        """Take several leases in one transaction (one commit for a whole batch)."""
        sql = self.SQL

        def work(cursor: Any) -> list[int | None]:
            versions: list[int | None] = []
            for claim in claims:
                cursor.execute(
                    sql.claim_execution,
                    (owner, lease_expires_at, now, claim.execution_id, claim.expected_version),
                )
                if cursor.rowcount != 1:
                    versions.append(None)
                    continue
                if claim.event is not None:
                    cursor.executemany(
                        sql.insert_event, event_rows(claim.execution_id, [claim.event])
                    )
                versions.append(claim.expected_version + 1)
            return versions

        return self._commit(work)

    def renew_leases(self, owner: str, held: Mapping[str, int], until: float) -> None:
        """Extend leases still held at the given versions (no version bump)."""
        rows = [(until, execution_id, owner, version) for execution_id, version in held.items()]
        if rows:
            self._write(
                "UPDATE saga_execution SET lease_expires_at=? WHERE id=? AND owner=? AND version=?",
                rows,
                many=True,
            )

    def prune(self, older_than: float, statuses: Sequence[SagaStatus], *, batch: int = 500) -> int:
        """Delete terminal executions and their events, one batch per transaction.

        Each batch selects its rows inside its own write transaction (and, on
        PostgreSQL, locks them), so no execution can change status between
        being chosen and being deleted.
        """
        unfinished = [s.value for s in statuses if not is_terminal(s)]
        if unfinished:
            raise InvalidInputError(
                f"prune deletes only completed and compensated executions, not {unfinished[0]}"
            )
        deleted = 0
        for status in statuses:
            after: tuple[float, str] = (float("-inf"), "")
            while True:
                done = self._commit(
                    functools.partial(
                        self._prune_batch,
                        status=status,
                        older_than=older_than,
                        after=after,
                        limit=batch,
                    )
                )
                if done is None:
                    break
                count, after = done
                deleted += count
        return deleted

    def _prune_batch(
        self,
        cursor: Any,
        *,
        status: SagaStatus,
        older_than: float,
        after: tuple[float, str],
        limit: int,
    ) -> tuple[int, tuple[float, str]] | None:
        """Delete the next batch of `status` executions older than `older_than`.

        Returns:
            (how many were deleted, where the next batch starts), or None when
            no candidate is left. Candidates updated since the cutoff (a long
            saga that ended recently) are skipped, and the keyset position moves
            past them so no batch reads them twice.
        """
        rows = cursor.execute(
            self._q(
                "SELECT id, created_at, updated_at FROM saga_execution"
                f"{self._indexed('ix_saga_execution_status_created')}"
                " WHERE status=? AND created_at<? AND (created_at, id) > (?, ?)"
                f" ORDER BY created_at, id LIMIT ?{self.FOR_UPDATE}"
            ),
            (status, older_than, after[0], after[1], limit),
        ).fetchall()
        if not rows:
            return None
        # Re-checked under the row lock on PostgreSQL: a row whose status
        # moved on meanwhile was skipped by the WHERE above (it is re-evaluated).
        ids = [row[0] for row in rows if row[2] < older_than]
        if ids:
            for table, column in (
                ("saga_event", "saga_id"),
                ("saga_key_lock", "execution_id"),
                ("saga_execution", "id"),
            ):
                term, params = self._in(column, ids)
                cursor.execute(self._q(f"DELETE FROM {table} WHERE {term}"), params)
        return len(ids), (rows[-1][1], rows[-1][0])

    # -- the extension point: applications' tables --------------------------------------------

    def upgrade_branch(self, label: str) -> None:
        """Apply branch `label` unless this store saw it at its head (then without a query)."""
        head = migrate.branch_head(label)
        if head in self._revisions:
            return
        revisions = self._read_revisions()
        if head not in revisions or not migrate.is_current(self.display_url, revisions):
            wanted = dict.fromkeys((*migrate.applied_branches(revisions), label))
            self._upgrade(tuple(wanted))
            revisions = self._read_revisions()
        self._revisions = revisions

    def branches(self) -> tuple[str, ...]:
        """Labels of the migration branches applied to the log (read now, not remembered)."""
        return migrate.applied_branches(self._read_revisions())

    def _read_revisions(self) -> tuple[str, ...]:
        return tuple(str(row[0]) for row in self._read("SELECT version_num FROM alembic_version"))

    # -- the worker registry -----------------------------------------------------------------

    def save_worker(self, worker: WorkerRecord) -> None:
        """Upsert a worker's registry row: its heartbeat, in one commit."""
        self._write(
            f"INSERT INTO saga_worker ({WORKER_COLUMNS}) VALUES (?,?,?,?,?,?,?,?)"
            " ON CONFLICT (id) DO UPDATE SET heartbeat_at=excluded.heartbeat_at,"
            " concurrency=excluded.concurrency, lease_seconds=excluded.lease_seconds,"
            " sagas=excluded.sagas",
            (
                worker.id,
                worker.host,
                worker.pid,
                worker.started_at,
                worker.heartbeat_at,
                worker.concurrency,
                worker.lease_seconds,
                None if worker.sagas is None else encode(list(worker.sagas)),
            ),
        )

    def remove_worker(self, worker_id: str) -> None:
        """Delete a worker's registry row (a clean exit); no error if it is gone."""
        self._write("DELETE FROM saga_worker WHERE id=?", (worker_id,))

    def remove_workers(self, seen: Mapping[str, float]) -> int:
        """Delete registry rows whose heartbeat is no newer than the one seen, in one commit."""
        statement = self._q("DELETE FROM saga_worker WHERE id=? AND heartbeat_at<=?")

        def work(cursor: Any) -> int:
            removed = 0
            for worker_id, heartbeat_at in seen.items():
                cursor.execute(statement, (worker_id, heartbeat_at))
                removed += max(cursor.rowcount, 0)
            return removed

        return self._commit(work) if seen else 0

    def end_leases(self, owners: Sequence[str], now: float) -> int:
        """Expire at `now` the live leases `owners` hold on unfinished executions, in one commit."""
        if not owners:
            return 0

        def work(cursor: Any) -> int:
            ended = 0
            for start in range(0, len(owners), _CHUNK):
                term, params = self._in("owner", owners[start : start + _CHUNK])
                cursor.execute(
                    self._q(
                        f"UPDATE saga_execution SET lease_expires_at=? WHERE {term}"
                        " AND status IN (?, ?, ?) AND lease_expires_at > ?"
                    ),
                    [now, *params, *_UNFINISHED, now],
                )
                ended += max(cursor.rowcount, 0)
            return ended

        return self._commit(work)

    def workers(self) -> list[WorkerRecord]:
        """Every registered worker, live or stale, oldest start first."""
        rows = self._read(f"SELECT {WORKER_COLUMNS} FROM saga_worker ORDER BY started_at, id")
        return [
            WorkerRecord(
                id=row[0],
                host=row[1],
                pid=row[2],
                started_at=row[3],
                heartbeat_at=row[4],
                concurrency=row[5],
                lease_seconds=row[6],
                sagas=None if row[7] is None else tuple(json.loads(row[7])),
            )
            for row in rows
        ]

    def held_executions(self, owners: Sequence[str], now: float) -> dict[str, list[str]]:
        """Unfinished executions per owner with a live lease (the status index; they are few)."""
        held: dict[str, list[str]] = {owner: [] for owner in owners}
        rows = self._read_in(
            "SELECT owner, id FROM saga_execution"
            f"{self._indexed('ix_saga_execution_status_created')}"
            " WHERE status IN (?, ?, ?) AND {term} AND lease_expires_at >= ?"
            " ORDER BY created_at, id",
            "owner",
            list(held),
            before=_UNFINISHED,
            after=(now,),
        )
        for owner, execution_id in rows:
            held[owner].append(execution_id)
        return held

    # -- the alert outbox ----------------------------------------------------------------------

    def claim_alerts(self, now: float, until: float, *, limit: int = 100) -> list[AlertRecord]:
        """Take due undelivered alerts by pushing their next attempt to `until` (a lease).

        The select runs inside the write transaction (under SQLite's write
        lock; locking the rows on PostgreSQL, where a concurrent claim then
        re-checks them and skips those taken), so two deliverers never take
        the same alert while a lease is live.
        """

        def work(cursor: Any) -> list[AlertRecord]:
            rows = cursor.execute(
                self._q(
                    f"SELECT {ALERT_COLUMNS} FROM saga_alert"
                    " WHERE delivered_at IS NULL AND next_attempt_at <= ?"
                    f" ORDER BY next_attempt_at, created_at LIMIT ?{self.FOR_UPDATE}"
                ),
                (now, limit),
            ).fetchall()
            if rows:
                cursor.executemany(
                    self._q("UPDATE saga_alert SET next_attempt_at=? WHERE id=?"),
                    [(until, row[0]) for row in rows],
                )
            return [row_to_alert(row) for row in rows]

        return self._commit(work)

    def save_delivery(self, alert: AlertRecord) -> None:
        """Write one alert's delivery state, in one commit."""
        self._write(
            "UPDATE saga_alert SET attempts=?, next_attempt_at=?, delivered_at=?,"
            " delivered_to=?, last_error=? WHERE id=?",
            (
                alert.attempts,
                alert.next_attempt_at,
                alert.delivered_at,
                encode(list(alert.delivered_to)) if alert.delivered_to else None,
                alert.last_error,
                alert.id,
            ),
        )

    def alerts(self, *, pending: bool = False, limit: int = 100) -> list[AlertRecord]:
        """Alerts newest first (the created index); `pending`: those not delivered yet."""
        where = " WHERE delivered_at IS NULL" if pending else ""
        rows = self._read(
            f"SELECT {ALERT_COLUMNS} FROM saga_alert{where}"
            " ORDER BY created_at DESC, id DESC LIMIT ?",
            (limit,),
        )
        return [row_to_alert(row) for row in rows]

    # -- reads ---------------------------------------------------------------------------------

    def get(self, execution_id: str) -> ExecutionRecord:
        """Return one execution by full id."""
        rows = self._read(f"{SELECT_EXECUTION} WHERE id=?", (execution_id,))
        if not rows:
            raise UnknownExecutionError(f"no execution has id {execution_id}")
        return row_to_record(rows[0])

    def events(self, execution_id: str) -> list[Event]:
        """Return an execution's events in sequence order."""
        return self.events_of([execution_id])[execution_id]

    def events_of(self, execution_ids: Sequence[str]) -> dict[str, list[Event]]:
        """Return the events of several executions, one query per 500 ids."""
        found: dict[str, list[Event]] = {i: [] for i in execution_ids}
        rows = self._read_in(
            "SELECT saga_id, seq, type, step, attempt, detail, at FROM saga_event"
            " WHERE {term} ORDER BY saga_id, seq",
            "saga_id",
            list(found),
        )
        for saga_id, seq, kind, step, attempt, detail, at in rows:
            found[saga_id].append(
                Event(
                    seq=seq,
                    type=EventType(kind),
                    step=step,
                    attempt=attempt,
                    detail=None if detail is None else json.loads(detail),
                    at=at,
                )
            )
        return found

    def step_records(self, execution_ids: Sequence[str]) -> dict[str, list[StepRecord]]:
        """Step events of several executions (one query per 500 ids), details left out."""
        found: dict[str, list[StepRecord]] = {i: [] for i in execution_ids}
        rows = self._read_in(
            "SELECT saga_id, step, type, attempt, at FROM saga_event"
            " WHERE {term} AND step IS NOT NULL ORDER BY saga_id, seq",
            "saga_id",
            list(found),
        )
        for saga_id, step, kind, attempt, at in rows:
            found[saga_id].append((step, kind, attempt, at, None))
        return found

    def resolve_id(self, prefix: str) -> str:
        """Expand a unique id prefix using the primary-key index (a range, not LIKE)."""
        wanted = prefix.strip().lower().replace("-", "")
        if not wanted or not set(wanted) <= _HEX or len(wanted) > 32:
            raise UnknownExecutionError(f"no execution matches {prefix!r} (ids are hexadecimal)")
        rows = self._read(
            f"SELECT id FROM saga_execution WHERE id >= ? AND id < ? ORDER BY {self.ID_ORDER}"
            " LIMIT 2",
            (wanted, wanted + "g"),
        )
        if not rows:
            raise UnknownExecutionError(f"no execution matches {prefix!r}")
        if len(rows) > 1:
            raise AmbiguousIdError(
                f"{prefix!r} matches more than one execution; give more of the id"
            )
        return str(rows[0][0])

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
        """Return executions newest first (ties broken by id, so the order is stable).

        Every filter walks an index in (created_at, id) order and stops after
        `limit` rows (see list_index).
        """
        where, params = window_filters(saga=saga, since=since, until=until)
        if status is not None:
            where.insert(0, "status=?")
            params.insert(0, status.value)
        if after is not None:
            where.append("(created_at, id) < (?, ?)")
            params += [after[0], after[1]]
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        sql = (
            f"{SELECT_EXECUTION}{self._indexed(list_index(status, saga))}{clause}"
            " ORDER BY created_at DESC, id DESC LIMIT ?"
        )
        return [row_to_record(row) for row in self._read(sql, [*params, limit])]

    def count_statuses(
        self,
        *,
        statuses: Sequence[SagaStatus] = tuple(SagaStatus),
        saga: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> dict[SagaStatus, int]:
        """Count per status; without a saga, from the (status, created_at) index alone."""
        counts = dict.fromkeys(statuses, 0)
        if not statuses:
            return counts
        where, params = window_filters(saga=saga, since=since, until=until)
        term, values = self._in("status", [s.value for s in statuses])
        where.insert(0, term)
        params[:0] = values
        index = list_index(None, saga) if saga else "ix_saga_execution_status_created"
        rows = self._read(
            f"SELECT status, COUNT(*) FROM saga_execution{self._indexed(index)}"
            f" WHERE {' AND '.join(where)} GROUP BY status",
            params,
        )
        for status, count in rows:
            counts[SagaStatus(status)] = int(count)
        return counts

    def created_histogram(
        self, since: float, until: float, buckets: int, *, saga: str | None = None
    ) -> list[int]:
        """Count creations per time slice: one index range count per slice.

        Range counts walk a covering index without evaluating an expression
        or building a GROUP BY tree per row: about 2.5x faster than one
        grouped query over a wide window.
        """
        width = (until - since) / buckets
        edges = [since + width * i for i in range(buckets)] + [until]
        where, params = window_filters(saga=saga, since=None, until=None)
        where += ["created_at>=?", "created_at<?"]
        sql = f"SELECT COUNT(*) FROM saga_execution WHERE {' AND '.join(where)}"
        return [
            int(self._read(sql, [*params, low, high])[0][0])
            for low, high in zip(edges, edges[1:], strict=False)
        ]

    def lease_groups(self, now: float, *, saga: str | None = None) -> list[LeaseGroup]:
        """Group unfinished executions by status, owner and lease liveness."""
        rows = self._read(
            "SELECT status, owner, COALESCE(lease_expires_at > ?, FALSE), COUNT(*)"
            f" FROM saga_execution{self._indexed('ix_saga_execution_status_created')}"
            f" WHERE status IN (?, ?, ?){' AND saga=?' if saga is not None else ''}"
            " GROUP BY 1, 2, 3",
            (now, *_UNFINISHED) + ((saga,) if saga is not None else ()),
        )
        return [
            LeaseGroup(SagaStatus(status), owner, bool(live), int(count))
            for status, owner, live, count in rows
        ]

    def unfinished_pages(self, page: int = 500) -> Iterator[list[ExecutionRecord]]:
        """Yield pending, running and compensating executions, a page at a time.

        Keyset pages over the (status, created_at, id) index: the first page
        arrives at once however many executions wait, and executions that
        finish meanwhile do not shift the pages.
        """
        for status in (SagaStatus.RUNNING, SagaStatus.COMPENSATING, SagaStatus.PENDING):
            after: tuple[float, str] = (float("-inf"), "")
            while True:
                rows = self._read(
                    f"{SELECT_EXECUTION} WHERE status=? AND (created_at, id) > (?, ?)"
                    " ORDER BY created_at, id LIMIT ?",
                    (status, after[0], after[1], page),
                )
                if not rows:
                    break
                yield [row_to_record(row) for row in rows]
                after = (rows[-1][5], rows[-1][0])

    def executions_of(self, saga: str) -> list[tuple[str, SagaStatus, str]]:
        """Return (id, status, payload JSON) of every execution of one saga."""
        rows = self._read("SELECT id, status, payload FROM saga_execution WHERE saga=?", (saga,))
        return [(row[0], SagaStatus(row[1]), row[2]) for row in rows]

    def definition_versions(self, name: str | None = None) -> list[DefinitionRecord]:
        """Return the registered versions of one saga (or of all), newest first."""
        sql = "SELECT name, version, steps, source, created_at FROM saga_definition"
        params: tuple[Any, ...] = ()
        if name is not None:
            sql += " WHERE name=?"
            params = (name,)
        rows = self._read(sql + " ORDER BY created_at DESC, name", params)
        return [
            DefinitionRecord(row[0], row[1], json.loads(row[2]), row[3], row[4]) for row in rows
        ]
