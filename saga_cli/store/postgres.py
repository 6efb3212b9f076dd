"""The PostgreSQL saga log: store/sql.py's SqlStore on a database shared by many machines.

Like the SQLite backend, this one talks to the database directly (psycopg 3,
server-side prepared statements) rather than through SQLAlchemy, whose
import alone costs more than a short command's budget; the schema is still
built by the Alembic migrations. One connection writes, under a lock, in
explicit transactions; another reads in autocommit mode, so no read ever
holds a snapshot or a lock open between calls.

Coordination between processes is PostgreSQL's own: every write is a
compare-and-set on the execution's version (``UPDATE … WHERE version=%s``
waits for a concurrent writer of the row, then re-checks), concurrency keys
are taken by ``INSERT … ON CONFLICT DO NOTHING``, and :meth:`claim_ready`
hands executions to workers with ``FOR UPDATE SKIP LOCKED``.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Collection, Iterator, Sequence
from typing import Any, TypeVar

from saga_cli.domain import Event, EventType, SagaStatus
from saga_cli.errors import (
    ForeignDatabaseError,
    InvalidInputError,
    LogUnavailableError,
    StoreError,
)
from saga_cli.redact import redact_url, scrub
from saga_cli.store import ExecutionRecord, Participant, migrate
from saga_cli.store.sql import (
    EXECUTION_COLUMNS,
    ErrorTranslation,
    Rollback,
    SqlStore,
    Statements,
    event_rows,
    row_to_record,
)

_T = TypeVar("_T")
URL_SCHEMES = ("postgresql", "postgresql+psycopg", "postgres")

# A constant key for pg_advisory_xact_lock: schema upgrades of one database
# serialize on it (see migrate.upgrade_postgres).
MIGRATION_LOCK = 0x5A6A_0001


def is_postgres_url(url: str) -> bool:
    """True for ``postgresql://``, ``postgresql+psycopg://`` and ``postgres://`` URLs."""
    scheme, sep, _rest = url.partition("://")
    return bool(sep) and scheme.lower() in URL_SCHEMES


def libpq_url(url: str) -> str:
    """The URL psycopg (libpq) understands: SQLAlchemy's ``+psycopg`` driver suffix removed."""
    scheme, _sep, rest = url.partition("://")
    if scheme.lower() not in URL_SCHEMES:
        raise InvalidInputError(f"{url!r} is not a PostgreSQL URL")
    return f"postgresql://{rest}"


def sqlalchemy_url(url: str) -> str:
    """The URL SQLAlchemy needs to pick psycopg 3 (not psycopg2) as the driver."""
    return "postgresql+psycopg://" + libpq_url(url).partition("://")[2]


def safe_url(url: str) -> str:
    """`url` with any password replaced by ``***``, fit for messages and logs (see redact)."""
    return redact_url(url)


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError:
        raise StoreError(
            "PostgreSQL support needs psycopg: pip install 'saga-cli[postgres]'"
        ) from None
    return psycopg


def translated(exc: Exception, url: str) -> StoreError:
    """The library's one-line error for one of psycopg's."""
    psycopg = _psycopg()
    # libpq's messages may quote the URL or its password: scrubbed first.
    message = scrub((str(exc).strip().splitlines() or [type(exc).__name__])[0], [url])
    where = safe_url(url)
    if isinstance(exc, psycopg.OperationalError):
        # Refused, lost, or the server shutting down: an outage to wait out.
        return LogUnavailableError(f"cannot reach the PostgreSQL saga log at {where}: {message}")
    return StoreError(f"{where}: {message}")


def translate_errors(url: str) -> ErrorTranslation:
    """Turn psycopg's errors raised inside the block into the library's errors."""
    return ErrorTranslation(_psycopg().Error, translated, url)


def connect(url: str, *, autocommit: bool) -> Any:
    """A psycopg connection to `url` (translating a refused connection).

    Raises:
        StoreError: the server cannot be reached or refuses the login.
    """
    psycopg = _psycopg()
    with translate_errors(url):
        return psycopg.connect(libpq_url(url), autocommit=autocommit, connect_timeout=10)


def schema_state(connection: Any) -> tuple[tuple[str, ...], int]:
    """(alembic_version's rows, number of tables) of the connection's current schema."""
    row = connection.execute("SELECT to_regclass('alembic_version') IS NOT NULL").fetchone()
    revisions: tuple[str, ...] = ()
    if row[0]:
        found = connection.execute("SELECT version_num FROM alembic_version").fetchall()
        revisions = tuple(str(version) for (version,) in found)
    tables = connection.execute(
        "SELECT COUNT(*) FROM information_schema.tables"
        " WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'"
    ).fetchone()[0]
    return revisions, int(tables)


def read_revisions(url: str) -> tuple[str, tuple[str, ...]]:
    """Return (URL without password, schema revisions) without writing anything."""
    connection = connect(url, autocommit=True)
    try:
        with translate_errors(url):
            return safe_url(url), schema_state(connection)[0]
    finally:
        connection.close()


class PostgresStore(SqlStore):
    """The saga log in a PostgreSQL database, shared by processes on many machines."""

    MARK = "%s"
    SQL = Statements(MARK)
    FOR_UPDATE = " FOR UPDATE"
    ID_ORDER = 'id COLLATE "C"'

    def __init__(self, url: str, writer: Any, reader: Any, revisions: tuple[str, ...]) -> None:
        self.url = url
        self.display_url = safe_url(url)
        self._revisions = revisions
        self._db = writer  # autocommit off: every write is one explicit transaction
        self._reader = reader  # autocommit on: reads never hold a transaction open
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()
        # Bumped whenever a connection turns out lost: the server went away, so
        # the other connection is gone too, and is replaced before its next use
        # (not failed once more after the server is back).
        self._losses = 0
        self._writer_made = self._reader_made = 0
        self.commits = 0  # transactions committed (the benchmark reads it)

    @classmethod
    def open(cls, url: str, *, create: bool = True) -> PostgresStore:
        """Open the log at `url`, applying pending migrations first.

        `create` is accepted for symmetry with SQLite: a PostgreSQL database
        is never created by saga (an administrator creates it), only migrated.

        Raises:
            ForeignDatabaseError: the schema has tables but no saga schema.
            SchemaTooNewError: a newer saga migrated it.
            StoreError: the server cannot be reached, or refuses.
        """
        reader = connect(url, autocommit=True)
        try:
            with translate_errors(url):
                revisions, tables = schema_state(reader)
            where = safe_url(url)
            if not revisions and tables:
                raise ForeignDatabaseError(
                    f"{where} has tables of its own but no saga schema; it was left untouched "
                    "(give saga a database or schema of its own)"
                )
            if not migrate.is_current(where, revisions):
                migrate.upgrade_postgres(url, branches=migrate.applied_branches(revisions))
                with translate_errors(url):
                    revisions = schema_state(reader)[0]
            writer = connect(url, autocommit=False)
        except BaseException:
            reader.close()
            raise
        return cls(url, writer, reader, revisions)

    def close(self) -> None:
        """Close the connections (idempotent)."""
        with self._write_lock:
            self._db.close()
        with self._read_lock:
            self._reader.close()

    def _commit(self, work: Callable[[Any], _T]) -> _T:
        """Run `work` in one committed transaction; a Rollback rolls it back instead."""
        psycopg = _psycopg()
        with self._write_lock:
            if self._db.broken or self._db.closed or self._writer_made < self._losses:
                self._db, self._writer_made = self._fresh(self._db, self._writer_made, False)
            try:
                with self._db.transaction(), self._db.cursor() as cursor:
                    result = work(cursor)
                self.commits += 1
                return result
            except Rollback as stop:
                refused: _T = stop.result
                return refused
            except psycopg.Error as exc:
                if self._db.broken or self._db.closed:
                    # The server went away (a restart, a failover): this write
                    # failed, the next one gets a new connection.
                    self._losses += 1
                    self._db, self._writer_made = self._fresh(self._db, self._writer_made, False)
                raise translated(exc, self.url) from None

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

        Ready: pending, running or compensating with no owner or a lease that
        expired before `now`; of `sagas` if given; oldest (created_at, id)
        first. ``FOR UPDATE SKIP LOCKED``: concurrent workers never wait for
        or take the same rows. Each one taken gets the lease, updated_at=now,
        version+1 and a ``saga_resumed`` event {"by": owner} in the same
        transaction. Completed, compensated and stuck ones are never taken.

        Returns:
            The records after the claim.
        """
        # The lease condition holds for pending executions too: one just
        # claimed stays pending until its first step is recorded and must not
        # be taken again meanwhile; a submitted one has no owner.
        where = (
            "status IN (%s, %s, %s)"
            " AND (owner IS NULL OR lease_expires_at IS NULL OR lease_expires_at < %s)"
        )
        params: list[Any] = [
            SagaStatus.PENDING.value,
            SagaStatus.RUNNING.value,
            SagaStatus.COMPENSATING.value,
            now,
        ]
        if sagas is not None:
            if not sagas:
                return []
            where += " AND saga = ANY(%s)"
            params.append(list(sagas))
        if exclude:
            where += " AND NOT (id = ANY(%s))"
            params.append(list(exclude))

        def work(cursor: Any) -> list[ExecutionRecord]:
            rows = cursor.execute(
                f"SELECT {EXECUTION_COLUMNS} FROM saga_execution WHERE {where}"
                " ORDER BY created_at, id LIMIT %s FOR UPDATE SKIP LOCKED",
                [*params, limit],
            ).fetchall()
            records = [row_to_record(row) for row in rows]
            if admit is not None:
                records = [record for record in records if admit(record)]
            taken: list[ExecutionRecord] = []
            for execution_id in (record.id for record in records):
                row = cursor.execute(
                    "UPDATE saga_execution SET owner=%s, lease_expires_at=%s, updated_at=%s,"
                    f" version=version+1 WHERE id=%s RETURNING {EXECUTION_COLUMNS}",
                    (owner, lease_expires_at, now, execution_id),
                    prepare=True,
                ).fetchone()
                seq = cursor.execute(
                    "SELECT COALESCE(MAX(seq), 0) + 1 FROM saga_event WHERE saga_id=%s",
                    (execution_id,),
                    prepare=True,
                ).fetchone()[0]
                event = Event(seq, EventType.SAGA_RESUMED, None, 0, {"by": owner}, now)
                cursor.executemany(self.SQL.insert_event, event_rows(execution_id, [event]))
                taken.append(row_to_record(row))
            return taken

        return self._commit(work)

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        psycopg = _psycopg()
        with self._read_lock:
            if self._reader.broken or self._reader.closed or self._reader_made < self._losses:
                self._reader, self._reader_made = self._fresh(self._reader, self._reader_made, True)
            try:
                # Shared queries (store/sql.py) use ``?``; psycopg wants ``%s``.
                sql = sql.replace("?", "%s")
                rows: list[Any] = self._reader.execute(sql, params, prepare=True).fetchall()
                return rows
            except psycopg.Error as exc:
                if self._reader.broken or self._reader.closed:
                    self._losses += 1
                    self._reader, self._reader_made = self._fresh(
                        self._reader, self._reader_made, True
                    )
                raise translated(exc, self.url) from None

    def _fresh(self, old: Any, made: int, autocommit: bool) -> tuple[Any, int]:
        """A new connection in place of `old` and its generation (`old` as is if still down)."""
        new = _reconnect(old, self.url, autocommit=autocommit)
        return new, made if new is old else self._losses

    def _in(self, column: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
        return f"{column} = ANY(?)", [list(values)]

    def _upgrade(self, branches: Sequence[str]) -> None:
        migrate.upgrade_postgres(self.url, branches=branches)

    def participant(self) -> PostgresParticipant:
        """A new connection to the log's database for an application's tables (see SagaStore)."""
        return PostgresParticipant(self.url)


def _reconnect(old: Any, url: str, *, autocommit: bool) -> Any:
    """A new connection in place of a broken one (the old one as is if the server is down)."""
    with contextlib.suppress(Exception):
        old.close()
    try:
        return connect(url, autocommit=autocommit)
    except StoreError:
        return old  # still broken: the next call fails and tries again


# -- participants in the log's database ------------------------------------------------

# Serializes participants' write transactions on one database, as SQLite's
# single writer does.
PARTICIPANT_LOCK = 0x5A6A_0002
_BEGIN = f"BEGIN; SELECT pg_advisory_xact_lock({PARTICIPANT_LOCK})"


def _execute(cursor: Any, sql: str, params: Sequence[Any]) -> Any:
    """Run a statement written with ``?`` placeholders (a literal ``%`` is kept)."""
    if params:
        return cursor.execute(sql.replace("%", "%%").replace("?", "%s"), params)
    return cursor.execute(sql)


class _Cursor:
    """A psycopg cursor that takes ``?`` placeholders, inside a participant's transaction."""

    __slots__ = ("_cursor",)

    def __init__(self, cursor: Any) -> None:
        self._cursor = cursor

    def execute(self, sql: str, params: Sequence[Any] = (), /) -> _Cursor:
        """Run one statement; returns the cursor for chaining."""
        _execute(self._cursor, sql, params)
        return self

    def fetchone(self) -> Any:
        """The next row, or None."""
        return self._cursor.fetchone()

    def fetchall(self) -> list[Any]:
        """The remaining rows."""
        rows: list[Any] = self._cursor.fetchall()
        return rows

    @property
    def rowcount(self) -> int:
        """Rows the last statement changed."""
        return int(self._cursor.rowcount)


class PostgresParticipant(Participant):
    """A participant's own connection to the log's database (see SagaStore.participant).

    Autocommit: a statement outside :meth:`transaction` commits on its own.
    A transaction is ``BEGIN`` plus a transaction-scoped advisory lock, so
    participants' transactions serialize exactly as they do on SQLite's
    single writer.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._errors = translate_errors(url)
        self._db = self._connect()

    def _connect(self) -> Any:
        connection = connect(self.url, autocommit=True)
        # As on SQLite (participant_synchronous, see store/sqlite.py), a
        # participant's commit need not wait for its own WAL flush: the runner
        # records the call's outcome in the log only after the call returns,
        # and that commit flushes the WAL up to its own record, so every
        # earlier participant commit too. A crash in between loses both the
        # participant's write and the outcome, and resume repeats the call
        # under the same idempotency key.
        try:
            with self._errors:
                connection.execute("SET synchronous_commit TO off")
        except BaseException:
            connection.close()
            raise
        return connection

    def _live(self) -> Any:
        """The connection, made anew once the server dropped it (a restart, a failover).

        Raises:
            LogUnavailableError: the server still cannot be reached.
        """
        if self._db.broken or self._db.closed:
            with contextlib.suppress(Exception):
                self._db.close()
            self._db = self._connect()
        return self._db

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Rows of one read-only statement."""
        db = self._live()
        with self._errors:
            rows: list[Any] = _execute(db.cursor(), sql, params).fetchall()
            return rows

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one writing statement, committed on its own; the rows it changed."""
        db = self._live()
        with self._errors:
            return int(_execute(db.cursor(), sql, params).rowcount)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[_Cursor]:
        """BEGIN and the participants' advisory lock ... COMMIT, or ROLLBACK if the block raises."""
        db = self._live()
        with self._errors:
            cursor = db.cursor()
            cursor.execute(_BEGIN)
            try:
                yield _Cursor(cursor)
            except BaseException:
                if not db.broken:  # a lost connection rolled it back already
                    cursor.execute("ROLLBACK")
                raise
            cursor.execute("COMMIT")

    def close(self) -> None:
        """Close the connection."""
        self._db.close()
