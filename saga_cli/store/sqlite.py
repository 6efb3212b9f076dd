"""The SQLite saga log: pragmas, the write path and the reads.

This backend talks to SQLite through the standard library's ``sqlite3`` with
statements prepared once, not through SQLAlchemy: importing SQLAlchemy alone
costs about 0.23 s and SQLModel 0.39 s on the target machines, more than the
whole 0.2 s budget of ``saga list``, and a saga costs about a dozen
transactions whose CPU time is the throughput budget. The schema of record is
still ``store/models.py`` and the Alembic migrations; the statements below
name only its tables and columns, and the integration suite runs them all
against the migrated schema.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from saga_cli.domain import Event, EventType, SagaStatus, is_terminal
from saga_cli.errors import (
    AmbiguousIdError,
    ConcurrencyKeyBusyError,
    DatabaseLockedError,
    ForeignDatabaseError,
    InvalidInputError,
    LeaseLostError,
    NotADatabaseError,
    SagaError,
    SchemaTooNewError,
    StoreError,
    UnknownExecutionError,
)
from saga_cli.store import (
    Claim,
    Creation,
    ExecutionRecord,
    LeaseGroup,
    StepRecord,
    Transition,
    migrate,
)
from saga_cli.store.group_commit import GroupCommitter
from saga_cli.store.sql import (
    EXECUTION_COLUMNS,
    SELECT_EXECUTION,
    SqlStore,
    encode,
    event_rows,
    row_to_record,
    window_filters,
)

_T = TypeVar("_T")
SQLITE_HEADER = b"SQLite format 3\x00"
SYNCHRONOUS_LEVELS = ("OFF", "NORMAL", "FULL", "EXTRA")
_HEX = frozenset("0123456789abcdef")

_INSERT_EXECUTION = (
    f"INSERT INTO saga_execution ({EXECUTION_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
)
_KEY_HOLDER = "SELECT execution_id FROM saga_key_lock WHERE key=?"
_TAKE_KEY = "INSERT INTO saga_key_lock (key, execution_id, acquired_at) VALUES (?,?,?)"
_RELEASE_KEY = "DELETE FROM saga_key_lock WHERE key=? AND execution_id=?"
_REGISTER_DEFINITION = (
    "INSERT INTO saga_definition (name, version, steps, source, created_at) VALUES (?,?,?,?,?)"
    " ON CONFLICT (name, version) DO UPDATE SET source=excluded.source"
    " WHERE excluded.source IS NOT NULL"
)
_INSERT_EVENT = (
    "INSERT INTO saga_event (saga_id, seq, step, type, attempt, detail, at) VALUES (?,?,?,?,?,?,?)"
)
_UPDATE_EXECUTION = (
    "UPDATE saga_execution SET status=?, step=?, updated_at=?, owner=?, lease_expires_at=?,"
    " version=version+1 WHERE id=? AND version=?"
)
_CLAIM_EXECUTION = (
    "UPDATE saga_execution SET owner=?, lease_expires_at=?, updated_at=?, version=version+1"
    " WHERE id=? AND version=?"
)
# Candidates for a worker, one status at a time so each query walks the
# (status, created_at, id) index in order and stops at LIMIT: the rows it
# skips (leases held live) are only the executions in flight.
_READY_OF_STATUS = (
    f"{SELECT_EXECUTION} INDEXED BY ix_saga_execution_status_created"
    " WHERE status=? AND (owner IS NULL OR lease_expires_at IS NULL OR lease_expires_at < ?)"
)


class SqliteSettings:
    """Connection settings parsed from a ``sqlite:///path?…`` URL or a plain path."""

    def __init__(self, url: str) -> None:
        if url.startswith("sqlite:"):
            parts = urlsplit(url)
            raw_path = unquote(parts.path)
            # sqlite:///rel.db -> "/rel.db" relative; sqlite:////abs.db -> absolute
            path = raw_path[1:] if raw_path.startswith("/") else raw_path
            query = dict(parse_qsl(parts.query))
        else:
            path, query = url, {}
        if not path:
            raise InvalidInputError(f"database URL {url!r} names no file")
        self.path = path
        known = ("synchronous", "participant_synchronous", "busy_timeout", "wal_autocheckpoint")
        unknown = set(query) - set(known)
        if unknown:
            raise InvalidInputError(
                f"unknown SQLite setting(s) {', '.join(sorted(unknown))} in {url!r}; "
                f"known: {', '.join(known)}"
            )
        self.synchronous = _level(query, "synchronous", "FULL")
        # Participants that live in the log's own file (the demo services)
        # append to the same WAL. Their commits need no fsync of their own:
        # the runner records every participant call's outcome in the log, and
        # that FULL commit's fsync makes all earlier WAL frames durable too. A
        # power cut in between loses the participant's write *and* the outcome
        # record, so resume re-sends the call under the same key.
        weaker = "NORMAL" if self.synchronous in ("FULL", "EXTRA") else self.synchronous
        self.participant_synchronous = _level(query, "participant_synchronous", weaker)
        try:
            self.busy_timeout_ms = int(query.get("busy_timeout", "5000"))
        except ValueError:
            raise InvalidInputError("busy_timeout must be a whole number of milliseconds") from None
        if self.busy_timeout_ms < 0:
            raise InvalidInputError("busy_timeout must be >= 0")
        # A saga dirties pages all over the log (random ids), so checkpoints
        # are costly; doing them every 10,000 pages (a WAL of up to 40 MB)
        # rather than SQLite's 1,000 lets each copy a page once for many
        # commits. Measured with bench/throughput.py: about 5-10% more sagas/s.
        try:
            self.wal_autocheckpoint = int(query.get("wal_autocheckpoint", "10000"))
        except ValueError:
            raise InvalidInputError("wal_autocheckpoint must be a whole number of pages") from None

    def connect(self, *, participant: bool = False) -> sqlite3.Connection:
        """Open a connection with the log's pragmas (or a participant's, see above)."""
        connection = self.connect_plain()
        try:
            self.configure(connection, participant=participant)
        except BaseException:
            connection.close()
            raise
        return connection

    def connect_plain(self) -> sqlite3.Connection:
        """Open a connection that has changed nothing in the file yet.

        Autocommit mode (``isolation_level=None``): transactions are opened
        explicitly with ``BEGIN IMMEDIATE`` so a writer takes the lock before
        reading what it will change.
        """
        return sqlite3.connect(
            self.path,
            isolation_level=None,
            check_same_thread=False,
            timeout=self.busy_timeout_ms / 1000,
        )

    def configure(self, connection: sqlite3.Connection, *, participant: bool = False) -> None:
        """Apply WAL mode, the synchronous level, the busy timeout and foreign keys.

        Switching to WAL writes the file's header, so this runs only once
        the file is known to be a saga log (or empty).
        """
        with translate_errors(self.path):
            connection.execute(f"PRAGMA busy_timeout={self.busy_timeout_ms}")
            mode = connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"{self.path}: could not switch to WAL mode (got {mode})")
            level = self.participant_synchronous if participant else self.synchronous
            connection.execute(f"PRAGMA synchronous={level}")
            connection.execute("PRAGMA foreign_keys=ON")
            connection.execute(f"PRAGMA wal_autocheckpoint={self.wal_autocheckpoint}")


def translated(exc: sqlite3.DatabaseError, path: str) -> StoreError:
    """The library's one-line error for one of sqlite3's."""
    message = str(exc)
    if "locked" in message or "busy" in message:
        return DatabaseLockedError(
            f"{path} is locked by another writer and stayed locked past the busy timeout; "
            "try again, or raise it with ?busy_timeout=MS"
        )
    if "not a database" in message or "malformed" in message:
        return NotADatabaseError(f"{path} is not a saga log (SQLite says: {message})")
    return StoreError(f"{path}: {message}")


@contextlib.contextmanager
def translate_errors(path: str) -> Iterator[None]:
    """Turn sqlite3's errors raised inside the block into the library's errors."""
    try:
        yield
    except sqlite3.DatabaseError as exc:
        raise translated(exc, path) from None


_file_locks: dict[str, threading.Lock] = {}
_file_locks_guard = threading.Lock()


def write_lock(path: str) -> threading.Lock:
    """The process-wide lock that every writer of the SQLite file at `path` takes.

    SQLite allows one writer at a time, and a writer that finds the file
    locked sleeps in SQLite's busy handler for 1, 2, 5, 10... ms. Threads of
    one process instead queue on this lock and hand over in microseconds;
    other processes still meet the busy timeout.
    """
    key = os.path.realpath(path)
    with _file_locks_guard:
        return _file_locks.setdefault(key, threading.Lock())


def _level(query: dict[str, str], name: str, default: str) -> str:
    level = query.get(name, default).upper()
    if level not in SYNCHRONOUS_LEVELS:
        raise InvalidInputError(f"{name}={level} is not one of {', '.join(SYNCHRONOUS_LEVELS)}")
    return level


def _check_file(path: str, *, create: bool) -> None:
    """Refuse a path that is a directory or not SQLite, before SQLite touches it."""
    if path == ":memory:":
        raise InvalidInputError(
            "an in-memory database cannot be shared by the services; use a file"
        )
    target = Path(path)
    if target.is_dir():
        raise InvalidInputError(f"{path} is a directory, not a database file")
    if target.exists():
        try:
            with target.open("rb") as handle:
                header = handle.read(len(SQLITE_HEADER))
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {exc.strerror}") from None
        if header and header != SQLITE_HEADER:
            raise NotADatabaseError(f"{path} is not a SQLite database; it was left untouched")
        return
    if not create:
        raise InvalidInputError(f"{path} does not exist")
    if not target.parent.exists():
        raise InvalidInputError(f"cannot create {path}: directory {target.parent} does not exist")


def _schema_revision(connection: sqlite3.Connection) -> str | None:
    row = connection.execute(
        "SELECT name FROM sqlite_master WHERE type='table' AND name='alembic_version'"
    ).fetchone()
    if row is None:
        return None
    version = connection.execute("SELECT version_num FROM alembic_version").fetchone()
    return None if version is None else str(version[0])


_RARE_STATUSES = frozenset(
    {SagaStatus.PENDING, SagaStatus.RUNNING, SagaStatus.COMPENSATING, SagaStatus.STUCK}
)


def _list_index(status: SagaStatus | None, saga: str | None) -> str:
    """The index a listing walks (named, so SQLite never falls back to sorting)."""
    if status is not None and (saga is None or status in _RARE_STATUSES):
        return "ix_saga_execution_status_created"
    if saga is not None:
        return "ix_saga_execution_saga_created"
    return "ix_saga_execution_created"


def _prune_batch(
    cursor: sqlite3.Cursor,
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
        "SELECT id, created_at, updated_at FROM saga_execution"
        " INDEXED BY ix_saga_execution_status_created"
        " WHERE status=? AND created_at<? AND (created_at, id) > (?, ?)"
        " ORDER BY created_at, id LIMIT ?",
        (status, older_than, after[0], after[1], limit),
    ).fetchall()
    if not rows:
        return None
    ids = [row[0] for row in rows if row[2] < older_than]
    if ids:
        marks = ",".join("?" * len(ids))
        cursor.execute(f"DELETE FROM saga_event WHERE saga_id IN ({marks})", ids)
        cursor.execute(f"DELETE FROM saga_key_lock WHERE execution_id IN ({marks})", ids)
        cursor.execute(f"DELETE FROM saga_execution WHERE id IN ({marks})", ids)
    return len(ids), (rows[-1][1], rows[-1][0])


class _Planned:
    """The SQL of one write, prepared outside the transaction."""

    __slots__ = (
        "definition",
        "events",
        "execution_id",
        "key",
        "release_key",
        "row",
        "statement",
        "version",
    )

    def __init__(self, write: Creation | Transition) -> None:
        self.key: str | None = None
        self.release_key: str | None = None
        self.definition: tuple[Any, ...] | None = None
        if isinstance(write, Creation):
            r = write.record
            self.statement = _INSERT_EXECUTION
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
        self.statement = _UPDATE_EXECUTION
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

    def run(self, cursor: sqlite3.Cursor) -> int | SagaError:
        """Run the write; a refused compare-and-set or a busy key is returned, not raised.

        Nothing is written for a refused write (checks come first), so the
        single-write path needs no savepoint.
        """
        if self.key is not None:
            holder = cursor.execute(_KEY_HOLDER, (self.key,)).fetchone()
            if holder is not None:
                return ConcurrencyKeyBusyError(
                    f"concurrency key {self.key!r} is held by unfinished execution {holder[0]}; "
                    "try again when it ends, or wait for it"
                )
        cursor.execute(self.statement, self.row)
        if cursor.rowcount != 1:
            return LeaseLostError(
                f"execution {self.execution_id} was taken over by another process; "
                "this process stopped writing to it"
            )
        cursor.executemany(_INSERT_EVENT, self.events)
        if self.key is not None:
            cursor.execute(_TAKE_KEY, (self.key, self.execution_id, self.row[5]))
        if self.release_key is not None:
            cursor.execute(_RELEASE_KEY, (self.release_key, self.execution_id))
        if self.definition is not None:
            cursor.execute(_REGISTER_DEFINITION, self.definition)
        return self.version


class SqliteStore(SqlStore):
    """The saga log in one SQLite file, WAL mode, durable (synchronous=FULL) by default."""

    def __init__(self, settings: SqliteSettings, connection: sqlite3.Connection) -> None:
        self.settings = settings
        self.url = settings.path
        self._db = connection  # the writer's; reads use their own (WAL: no blocking)
        self._reader: sqlite3.Connection | None = None
        self._lock = threading.Lock()  # guards the reader connection
        path = settings.path
        self._writer = GroupCommitter(
            connection, write_lock(path), lambda exc: translated(exc, path)
        )

    @classmethod
    def open(cls, url: str, *, create: bool = True) -> SqliteStore:
        """Open the log at `url`, applying pending migrations first.

        Raises:
            NotADatabaseError: the file is not SQLite (it is not modified).
            SchemaTooNewError: a newer saga migrated it.
            StoreError: anything else SQLite reports.
        """
        settings = SqliteSettings(url)
        _check_file(settings.path, create=create)
        with translate_errors(settings.path):  # e.g. the current directory was deleted
            connection = settings.connect_plain()
        try:
            with translate_errors(settings.path):
                revision = _schema_revision(connection)
                foreign = (
                    revision is None
                    and connection.execute(
                        "SELECT COUNT(*) FROM sqlite_master WHERE type='table'"
                    ).fetchone()[0]
                )
            if foreign:
                raise ForeignDatabaseError(
                    f"{settings.path} is a SQLite database with tables of its own but no saga "
                    "schema; it was left untouched (give saga a file of its own)"
                )
            if revision is not None and revision not in migrate.KNOWN_REVISIONS:
                raise SchemaTooNewError(
                    f"{settings.path} has schema revision {revision}, newer than this saga "
                    f"understands (up to {migrate.HEAD_REVISION}); upgrade saga-cli"
                )
            settings.configure(connection)
            if revision != migrate.HEAD_REVISION:
                migrate.upgrade(settings.path, busy_timeout_ms=settings.busy_timeout_ms)
        except BaseException:
            connection.close()
            raise
        return cls(settings, connection)

    def close(self) -> None:
        """Close the connections (idempotent)."""
        with self._lock:
            self._db.close()
            if self._reader is not None:
                self._reader.close()
                self._reader = None

    def _commit(self, work: Callable[[sqlite3.Cursor], _T]) -> _T:
        """Run `work` in a committed transaction, batched with concurrent writers."""
        return self._writer.submit(work)

    def _write(self, sql: str, params: Sequence[Any], *, many: bool = False) -> None:
        def work(cursor: sqlite3.Cursor) -> None:
            if many:
                cursor.executemany(sql, params)
            else:
                cursor.execute(sql, params)

        self._commit(work)

    def commit_all(self, writes: Sequence[Creation | Transition]) -> list[int | SagaError]:
        """Apply the writes of several executions in one transaction."""
        statements = [_Planned(write) for write in writes]

        def work(cursor: sqlite3.Cursor) -> list[int | SagaError]:
            if len(statements) == 1:
                return [statements[0].run(cursor)]
            results: list[int | SagaError] = []
            for planned in statements:
                cursor.execute("SAVEPOINT item")
                result = planned.run(cursor)
                if isinstance(result, SagaError):
                    cursor.execute("ROLLBACK TO item")
                cursor.execute("RELEASE item")
                results.append(result)
            return results

        return self._commit(work)

    def claim_many(
        self, claims: Sequence[Claim], owner: str, lease_expires_at: float, now: float
    ) -> list[int | None]:
        """Take several leases in one transaction (one commit for a whole batch)."""

        def work(cursor: sqlite3.Cursor) -> list[int | None]:
            versions: list[int | None] = []
            for claim in claims:
                cursor.execute(
                    _CLAIM_EXECUTION,
                    (owner, lease_expires_at, now, claim.execution_id, claim.expected_version),
                )
                if cursor.rowcount != 1:
                    versions.append(None)
                    continue
                if claim.event is not None:
                    cursor.executemany(_INSERT_EVENT, event_rows(claim.execution_id, [claim.event]))
                versions.append(claim.expected_version + 1)
            return versions

        return self._commit(work)

    def claim_ready(
        self,
        owner: str,
        lease_expires_at: float,
        now: float,
        *,
        sagas: Sequence[str] | None = None,
        limit: int = 1,
    ) -> list[ExecutionRecord]:
        """Take up to `limit` ready executions: BEGIN IMMEDIATE, select, compare-and-set each.

        The write lock is held from the select to the commit, so no other
        process can claim the same rows in between; the compare-and-set on
        the version still guards each one (a claim is a write like any other).
        """
        if limit < 1:
            return []
        names = None if sagas is None else list(dict.fromkeys(sagas))
        if names == []:
            return []
        saga_filter = "" if names is None else f" AND saga IN ({','.join('?' * len(names))})"
        by = encode({"by": owner})

        def work(cursor: sqlite3.Cursor) -> list[ExecutionRecord]:
            candidates: list[ExecutionRecord] = []
            for status in (SagaStatus.PENDING, SagaStatus.RUNNING, SagaStatus.COMPENSATING):
                rows = cursor.execute(
                    f"{_READY_OF_STATUS}{saga_filter} ORDER BY created_at, id LIMIT ?",
                    (status, now, *(names or ()), limit),
                ).fetchall()
                candidates += map(row_to_record, rows)
            candidates.sort(key=lambda r: (r.created_at, r.id))
            taken: list[ExecutionRecord] = []
            for record in candidates[:limit]:
                cursor.execute(
                    _CLAIM_EXECUTION, (owner, lease_expires_at, now, record.id, record.version)
                )
                if cursor.rowcount != 1:
                    continue
                (last,) = cursor.execute(
                    "SELECT MAX(seq) FROM saga_event WHERE saga_id=?", (record.id,)
                ).fetchone()
                cursor.execute(
                    _INSERT_EVENT,
                    (record.id, (last or 0) + 1, None, EventType.SAGA_RESUMED, 0, by, now),
                )
                taken.append(
                    dataclasses.replace(
                        record,
                        owner=owner,
                        lease_expires_at=lease_expires_at,
                        updated_at=now,
                        version=record.version + 1,
                    )
                )
            return taken

        return self._commit(work)

    def held_executions(self, owners: Sequence[str], now: float) -> dict[str, list[str]]:
        """Unfinished executions per owner with a live lease (the status index; they are few)."""
        held: dict[str, list[str]] = {owner: [] for owner in owners}
        wanted = list(held)
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            rows = self._read(
                "SELECT owner, id FROM saga_execution INDEXED BY ix_saga_execution_status_created"
                f" WHERE status IN (?, ?, ?) AND owner IN ({','.join('?' * len(chunk))})"
                " AND lease_expires_at >= ? ORDER BY created_at, id",
                (SagaStatus.PENDING, SagaStatus.RUNNING, SagaStatus.COMPENSATING, *chunk, now),
            )
            for owner, execution_id in rows:
                held[owner].append(execution_id)
        return held

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._lock, translate_errors(self.url):
            if self._reader is None:
                self._reader = self.settings.connect()
            return self._reader.execute(sql, params).fetchall()

    def events_of(self, execution_ids: Sequence[str]) -> dict[str, list[Event]]:
        """Return the events of several executions, one query per 500 ids."""
        found: dict[str, list[Event]] = {i: [] for i in execution_ids}
        ids = list(found)
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._read(
                "SELECT saga_id, seq, type, step, attempt, detail, at FROM saga_event"
                f" WHERE saga_id IN ({marks}) ORDER BY saga_id, seq",
                chunk,
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

    def resolve_id(self, prefix: str) -> str:
        """Expand a unique id prefix using the primary-key index (a range, not LIKE)."""
        wanted = prefix.strip().lower().replace("-", "")
        if not wanted or not set(wanted) <= _HEX or len(wanted) > 32:
            raise UnknownExecutionError(f"no execution matches {prefix!r} (ids are hexadecimal)")
        rows = self._read(
            "SELECT id FROM saga_execution WHERE id >= ? AND id < ? ORDER BY id LIMIT 2",
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
        `limit` rows: (status, created_at, id), (saga, created_at, id) or
        (created_at, id). With both a status and a saga, the status index is
        walked for the rare statuses (everything but completed and
        compensated) and the saga index otherwise, so neither walk meets
        long runs of rows it must skip in an ordinary log.
        """
        where, params = window_filters(saga=saga, since=since, until=until)
        if status is not None:
            where.insert(0, "status=?")
            params.insert(0, status.value)
        if after is not None:
            where.append("(created_at, id) < (?, ?)")
            params += [after[0], after[1]]
        index = _list_index(status, saga)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        sql = (
            f"{SELECT_EXECUTION} INDEXED BY {index}{clause}"
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
        where.insert(0, f"status IN ({','.join('?' * len(statuses))})")
        params[:0] = [s.value for s in statuses]
        index = _list_index(None, saga) if saga else "ix_saga_execution_status_created"
        rows = self._read(
            f"SELECT status, COUNT(*) FROM saga_execution INDEXED BY {index}"
            f" WHERE {' AND '.join(where)} GROUP BY status",
            params,
        )
        for status, count in rows:
            counts[SagaStatus(status)] = count
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
            "SELECT status, owner, COALESCE(lease_expires_at > ?, 0), COUNT(*)"
            " FROM saga_execution INDEXED BY ix_saga_execution_status_created"
            f" WHERE status IN (?, ?, ?){' AND saga=?' if saga is not None else ''}"
            " GROUP BY 1, 2, 3",
            (now, SagaStatus.PENDING, SagaStatus.RUNNING, SagaStatus.COMPENSATING)
            + ((saga,) if saga is not None else ()),
        )
        return [
            LeaseGroup(SagaStatus(status), owner, bool(live), count)
            for status, owner, live, count in rows
        ]

    def step_records(self, execution_ids: Sequence[str]) -> dict[str, list[StepRecord]]:
        """Step events of several executions (one query per 500 ids), details left out."""
        found: dict[str, list[StepRecord]] = {i: [] for i in execution_ids}
        ids = list(found)
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            rows = self._read(
                "SELECT saga_id, step, type, attempt, at, NULL FROM saga_event"
                f" WHERE saga_id IN ({','.join('?' * len(chunk))}) AND step IS NOT NULL"
                " ORDER BY saga_id, seq",
                chunk,
            )
            for row in rows:
                found[row[0]].append(row[1:])
        return found

    def prune(self, older_than: float, statuses: Sequence[SagaStatus], *, batch: int = 500) -> int:
        """Delete terminal executions and their events, one batch per transaction.

        Each batch selects its rows inside its own write transaction, so no
        execution can change status between being chosen and being deleted.
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
                        _prune_batch, status=status, older_than=older_than, after=after, limit=batch
                    )
                )
                if done is None:
                    break
                count, after = done
                deleted += count
        return deleted

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

    def connect(self) -> sqlite3.Connection:
        """A new connection to the same file for a participant that lives in it."""
        return self.settings.connect(participant=True)


def read_revision(url: str) -> tuple[str, str | None]:
    """Return (path, schema revision) without writing: no file is created or migrated.

    Raises:
        NotADatabaseError: the file is not SQLite.
    """
    settings = SqliteSettings(url)
    _check_file(settings.path, create=True)
    if not os.path.exists(settings.path):
        return settings.path, None
    connection = sqlite3.connect(f"file:{quote(settings.path)}?mode=ro", uri=True)
    try:
        with translate_errors(settings.path):
            return settings.path, _schema_revision(connection)
    finally:
        connection.close()
