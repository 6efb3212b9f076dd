"""The SQLite saga log: store/sql.py's SqlStore on one file, with its pragmas and locking.

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

import asyncio
import contextlib
import dataclasses
import os
import sqlite3
import threading
from collections.abc import Callable, Collection, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from saga_cli.domain import EventType, SagaStatus
from saga_cli.errors import (
    DatabaseLockedError,
    ForeignDatabaseError,
    InvalidInputError,
    LogUnavailableError,
    NotADatabaseError,
    StoreError,
    WouldBlockError,
)
from saga_cli.store import ExecutionRecord, Participant, migrate
from saga_cli.store.group_commit import GroupCommitter
from saga_cli.store.sql import (
    SELECT_EXECUTION,
    ErrorTranslation,
    SqlStore,
    Statements,
    encode,
    row_to_record,
)

_T = TypeVar("_T")
SQLITE_HEADER = b"SQLite format 3\x00"
SYNCHRONOUS_LEVELS = ("OFF", "NORMAL", "FULL", "EXTRA")

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
    if "disk I/O error" in message:
        # A full disk, a flaky mount: it may clear, and long commands wait for it.
        return LogUnavailableError(f"{path}: {message}")
    if "not a database" in message or "malformed" in message:
        return NotADatabaseError(f"{path} is not a saga log (SQLite says: {message})")
    return StoreError(f"{path}: {message}")


def translate_errors(path: str) -> ErrorTranslation:
    """Turn sqlite3's errors raised inside the block into the library's errors."""
    return ErrorTranslation(sqlite3.DatabaseError, translated, path)


class FileLock:
    """The lock every writer of one SQLite file in this process takes (see write_lock).

    A threading lock that an event loop can also wait on without blocking:
    :meth:`acquire_or_wait` takes it, or gives a future that the holder's
    release resolves, so a participant writing from an event loop takes its
    turn between the log writer's commits instead of polling for it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._guard = threading.Lock()
        self._waiting: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        """Take the lock (see threading.Lock.acquire)."""
        return self._lock.acquire(blocking, timeout)

    def release(self) -> None:
        """Release the lock and wake the event loops waiting for it."""
        with self._guard:
            waiting, self._waiting = self._waiting, []
            self._lock.release()
        for loop, future in waiting:
            with contextlib.suppress(RuntimeError):  # a closed loop waits for nothing
                loop.call_soon_threadsafe(_wake, future)

    def locked(self) -> bool:
        """Whether some thread holds the lock now."""
        return self._lock.locked()

    def acquire_or_wait(self) -> asyncio.Future[None] | None:
        """Take the lock if it is free (None), else return a future that its next release resolves.

        The future is of the running loop; once it resolves, try again (another
        thread may have taken the lock first). Taking and waiting happen under
        one guard with the release, so no release is missed in between.
        """
        with self._guard:
            if self._lock.acquire(blocking=False):
                return None
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiting.append((asyncio.get_running_loop(), future))
            return future

    def __enter__(self) -> bool:
        return self._lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


_file_locks: dict[str, FileLock] = {}
_file_locks_guard = threading.Lock()


def write_lock(path: str) -> FileLock:
    """The process-wide lock that every writer of the SQLite file at `path` takes.

    SQLite allows one writer at a time, and a writer that finds the file
    locked sleeps in SQLite's busy handler for 1, 2, 5, 10... ms. Threads of
    one process instead queue on this lock and hand over in microseconds;
    other processes still meet the busy timeout.
    """
    key = os.path.realpath(path)
    with _file_locks_guard:
        return _file_locks.setdefault(key, FileLock())


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


def _schema_revisions(connection: sqlite3.Connection) -> tuple[str, ...]:
    """The rows of alembic_version (none for a database saga never migrated)."""
    row = connection.execute(
        "SELECT name FROM sqlite_master WHERE type='table' AND name='alembic_version'"
    ).fetchone()
    if row is None:
        return ()
    rows = connection.execute("SELECT version_num FROM alembic_version").fetchall()
    return tuple(str(version) for (version,) in rows)


class SqliteStore(SqlStore):
    """The saga log in one SQLite file, WAL mode, durable (synchronous=FULL) by default."""

    MARK = "?"
    SQL = Statements(MARK)

    def __init__(
        self, settings: SqliteSettings, connection: sqlite3.Connection, revisions: tuple[str, ...]
    ) -> None:
        self.settings = settings
        self.url = self.display_url = settings.path
        self._revisions = revisions
        self._db = connection  # the writer's; reads use their own (WAL: no blocking)
        self._reader: sqlite3.Connection | None = None
        self._lock = threading.Lock()  # guards the reader connection
        self._errors = translate_errors(settings.path)
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
                revisions = _schema_revisions(connection)
                foreign = (
                    not revisions
                    and connection.execute(
                        "SELECT COUNT(*) FROM sqlite_master WHERE type='table'"
                    ).fetchone()[0]
                )
            if foreign:
                raise ForeignDatabaseError(
                    f"{settings.path} is a SQLite database with tables of its own but no saga "
                    "schema; it was left untouched (give saga a file of its own)"
                )
            current = migrate.is_current(settings.path, revisions)
            settings.configure(connection)
            if not current:
                migrate.upgrade(
                    settings.path,
                    busy_timeout_ms=settings.busy_timeout_ms,
                    branches=migrate.applied_branches(revisions),
                )
                with translate_errors(settings.path):
                    revisions = _schema_revisions(connection)
        except BaseException:
            connection.close()
            raise
        return cls(settings, connection, revisions)

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
        skipped = list(exclude)
        if skipped:
            saga_filter += f" AND id NOT IN ({','.join('?' * len(skipped))})"
        by = encode({"by": owner})
        sql = self.SQL

        def work(cursor: sqlite3.Cursor) -> list[ExecutionRecord]:
            candidates: list[ExecutionRecord] = []
            for status in (SagaStatus.PENDING, SagaStatus.RUNNING, SagaStatus.COMPENSATING):
                rows = cursor.execute(
                    f"{_READY_OF_STATUS}{saga_filter} ORDER BY created_at, id LIMIT ?",
                    (status, now, *(names or ()), *skipped, limit),
                ).fetchall()
                candidates += map(row_to_record, rows)
            candidates.sort(key=lambda r: (r.created_at, r.id))
            taken: list[ExecutionRecord] = []
            if admit is not None:
                candidates = [record for record in candidates[:limit] if admit(record)]
            for record in candidates[:limit]:
                cursor.execute(
                    sql.claim_execution, (owner, lease_expires_at, now, record.id, record.version)
                )
                if cursor.rowcount != 1:
                    continue
                (last,) = cursor.execute(
                    "SELECT MAX(seq) FROM saga_event WHERE saga_id=?", (record.id,)
                ).fetchone()
                cursor.execute(
                    sql.insert_event,
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

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._lock, self._errors:
            if self._reader is None:
                self._reader = self.settings.connect()
            return self._reader.execute(sql, params).fetchall()

    def _in(self, column: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
        return f"{column} IN ({','.join('?' * len(values))})", list(values)

    def _indexed(self, index: str) -> str:
        # Named, so SQLite's planner never falls back to sorting or a scan.
        return f" INDEXED BY {index}"

    def _upgrade(self, branches: Sequence[str]) -> None:
        migrate.upgrade(
            self.settings.path, busy_timeout_ms=self.settings.busy_timeout_ms, branches=branches
        )

    def participant(self) -> SqliteParticipant:
        """A new connection to the log's file for an application's tables (see SagaStore)."""
        return SqliteParticipant(self.settings)


class SqliteParticipant(Participant):
    """A participant's own connection to the log's file (see SagaStore.participant).

    Its writes take the process-wide write lock of the file first, so threads
    of one process queue in microseconds instead of sleeping in SQLite's
    busy handler; other processes still meet the busy timeout.
    """

    def __init__(self, settings: SqliteSettings) -> None:
        self._errors = translate_errors(settings.path)
        with self._errors:
            self._db = settings.connect(participant=True)
        self._write_lock = write_lock(settings.path)
        self._busy_timeout_ms = settings.busy_timeout_ms
        self._nowait = False  # the connection's busy timeout is 0 (see try_transaction)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Rows of one read-only statement (WAL: it never waits for a writer)."""
        with self._errors:
            return self._db.execute(sql, params).fetchall()

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one writing statement in autocommit mode; the rows it changed."""
        with self._write_lock, self._errors:
            cursor = self._db.cursor()
            self._wait_when_busy(cursor)
            return cursor.execute(sql, params).rowcount

    def _no_busy_wait(self, cursor: sqlite3.Cursor) -> None:
        """A writer of another process: SQLITE_BUSY at once, not after the busy timeout.

        Kept so until a blocking write needs the busy timeout back.
        """
        if not self._nowait:
            cursor.execute("PRAGMA busy_timeout=0")
            self._nowait = True

    def _wait_when_busy(self, cursor: sqlite3.Cursor) -> None:
        """Give a blocking write the busy timeout back, if try_transaction took it away."""
        if self._nowait:
            cursor.execute(f"PRAGMA busy_timeout={self._busy_timeout_ms}")
            self._nowait = False

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Cursor]:
        """BEGIN IMMEDIATE (the file's one writer) ... COMMIT, or ROLLBACK if the block raises."""
        with self._write_lock, self._errors:
            cursor = self._db.cursor()
            self._wait_when_busy(cursor)
            cursor.execute("BEGIN IMMEDIATE")
            try:
                yield cursor
            except BaseException:
                cursor.execute("ROLLBACK")
                raise
            cursor.execute("COMMIT")

    @contextlib.contextmanager
    def try_transaction(self) -> Iterator[sqlite3.Cursor]:
        """:meth:`transaction` if no writer holds the file now, else WouldBlockError at once."""
        if not self._write_lock.acquire(blocking=False):
            raise WouldBlockError("another writer of this process holds the log")
        try:
            with self._begin_nowait() as cursor:
                yield cursor
        finally:
            self._write_lock.release()

    @contextlib.contextmanager
    def _begin_nowait(self) -> Iterator[sqlite3.Cursor]:
        """The transaction of try_transaction, once the process's lock is held."""
        with self._errors:
            cursor = self._db.cursor()
            self._no_busy_wait(cursor)
            try:
                cursor.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                raise WouldBlockError("another process holds the log's write lock") from None
            try:
                yield cursor
            except BaseException:
                cursor.execute("ROLLBACK")
                raise
            cursor.execute("COMMIT")

    async def run_async(self, body: Callable[[Any], _T]) -> _T:
        """Run ``body(cursor)`` in a write transaction without blocking the event loop.

        A writer of this process (the log's, during its fsync) is waited for
        until its release wakes the loop; one of another process, by polling
        with back-off, and past the busy timeout on a thread, as plain calls wait.
        """

        def in_transaction() -> _T:
            with self._begin_nowait() as cursor:
                return body(cursor)

        return await self._without_blocking(in_transaction, partial(self.run, body))

    async def execute_async(self, sql: str, params: Sequence[Any] = ()) -> int:
        """:meth:`execute` without blocking the event loop (waiting as run_async does)."""

        def alone() -> int:
            with self._errors:
                cursor = self._db.cursor()
                self._no_busy_wait(cursor)
                try:
                    return cursor.execute(sql, params).rowcount
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) and "busy" not in str(exc):
                        raise
                    raise WouldBlockError("another process holds the log's write lock") from None

        return await self._without_blocking(alone, partial(self.execute, sql, params))

    async def _without_blocking(self, attempt: Callable[[], _T], blocking: Callable[[], _T]) -> _T:
        """Run `attempt` holding the file's lock, taken without blocking the loop."""
        pause = 0.001
        waited = 0.0
        lock = self._write_lock
        while True:
            wait = lock.acquire_or_wait()
            if wait is not None:
                await wait
                continue
            try:
                return attempt()
            except WouldBlockError:
                pass  # another process holds the file: poll below
            finally:
                lock.release()
            if waited * 1000 >= self._busy_timeout_ms:
                return await asyncio.to_thread(blocking)
            await asyncio.sleep(pause)
            waited += pause
            pause = min(pause * 2, 0.05)

    def close(self) -> None:
        """Close the connection."""
        self._db.close()


def read_revisions(url: str) -> tuple[str, tuple[str, ...]]:
    """Return (path, schema revisions) without writing: no file is created or migrated.

    Raises:
        NotADatabaseError: the file is not SQLite.
    """
    settings = SqliteSettings(url)
    _check_file(settings.path, create=True)
    if not os.path.exists(settings.path):
        return settings.path, ()
    connection = sqlite3.connect(f"file:{quote(settings.path)}?mode=ro", uri=True)
    try:
        with translate_errors(settings.path):
            return settings.path, _schema_revisions(connection)
    finally:
        connection.close()
