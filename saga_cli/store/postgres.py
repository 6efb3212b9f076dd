"""The PostgreSQL saga log: the same contract as store/sqlite.py, shared by many machines.

Like the SQLite backend, this one talks to the database directly (psycopg 3,
statements prepared on first use) rather than through SQLAlchemy, whose
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
import functools
import json
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from saga_cli.domain import Event, EventType, SagaStatus, is_terminal
from saga_cli.errors import (
    AmbiguousIdError,
    ConcurrencyKeyBusyError,
    ForeignDatabaseError,
    InvalidInputError,
    LeaseLostError,
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
_HEX = frozenset("0123456789abcdef")
URL_SCHEMES = ("postgresql", "postgresql+psycopg", "postgres")

_INSERT_EXECUTION = (
    f"INSERT INTO saga_execution ({EXECUTION_COLUMNS}) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)"
)
_KEY_HOLDER = "SELECT execution_id FROM saga_key_lock WHERE key=%s"
# Taken after the execution row exists (the foreign key), and race-free: of
# two transactions inserting one key, the second waits for the first and
# then inserts nothing.
_TAKE_KEY = (
    "INSERT INTO saga_key_lock (key, execution_id, acquired_at) VALUES (%s,%s,%s)"
    " ON CONFLICT (key) DO NOTHING"
)
_RELEASE_KEY = "DELETE FROM saga_key_lock WHERE key=%s AND execution_id=%s"
_REGISTER_DEFINITION = (
    "INSERT INTO saga_definition (name, version, steps, source, created_at)"
    " VALUES (%s,%s,%s,%s,%s)"
    " ON CONFLICT (name, version) DO UPDATE SET source=excluded.source"
    " WHERE excluded.source IS NOT NULL"
)
_INSERT_EVENT = (
    "INSERT INTO saga_event (saga_id, seq, step, type, attempt, detail, at)"
    " VALUES (%s,%s,%s,%s,%s,%s,%s)"
)
_UPDATE_EXECUTION = (
    "UPDATE saga_execution SET status=%s, step=%s, updated_at=%s, owner=%s, lease_expires_at=%s,"
    " version=version+1 WHERE id=%s AND version=%s"
)
_CLAIM_EXECUTION = (
    "UPDATE saga_execution SET owner=%s, lease_expires_at=%s, updated_at=%s, version=version+1"
    " WHERE id=%s AND version=%s"
)
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
    """`url` with any password replaced by ``***``, fit for messages and logs."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc.rsplit("@", 1)[1]
        user = parts.username or ""
        return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))
    except ValueError:
        return url.split("://", 1)[0] + "://…"


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
    message = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    where = safe_url(url)
    if isinstance(exc, psycopg.OperationalError):
        return StoreError(f"cannot reach the PostgreSQL saga log at {where}: {message}")
    return StoreError(f"{where}: {message}")


@contextlib.contextmanager
def translate_errors(url: str) -> Iterator[None]:
    """Turn psycopg's errors raised inside the block into the library's errors."""
    psycopg = _psycopg()
    try:
        yield
    except psycopg.Error as exc:
        raise translated(exc, url) from None


def connect(url: str, *, autocommit: bool) -> Any:
    """A psycopg connection to `url` (translating a refused connection).

    Raises:
        StoreError: the server cannot be reached or refuses the login.
    """
    psycopg = _psycopg()
    with translate_errors(url):
        return psycopg.connect(libpq_url(url), autocommit=autocommit, connect_timeout=10)


def schema_state(connection: Any) -> tuple[str | None, int]:
    """(alembic revision or None, number of tables) of the connection's current schema."""
    row = connection.execute("SELECT to_regclass('alembic_version') IS NOT NULL").fetchone()
    revision = None
    if row[0]:
        found = connection.execute("SELECT version_num FROM alembic_version").fetchone()
        revision = None if found is None else str(found[0])
    tables = connection.execute(
        "SELECT COUNT(*) FROM information_schema.tables"
        " WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'"
    ).fetchone()[0]
    return revision, int(tables)


def read_revision(url: str) -> tuple[str, str | None]:
    """Return (URL without password, schema revision) without writing anything."""
    connection = connect(url, autocommit=True)
    try:
        with translate_errors(url):
            return safe_url(url), schema_state(connection)[0]
    finally:
        connection.close()


class _Planned:
    """The SQL of one write, prepared outside the transaction (as in store/sqlite.py)."""

    __slots__ = ("definition", "events", "execution_id", "key", "release_key", "row", "statement")

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
                r.status.value,
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
            return
        t = write
        self.statement = _UPDATE_EXECUTION
        self.row = (
            t.status.value,
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

    def version(self) -> int:
        """The execution's version once this write is in."""
        return int(self.row[9]) if self.statement is _INSERT_EXECUTION else int(self.row[6]) + 1

    def run(self, cursor: Any) -> int | SagaError:
        """Run the write; a refused compare-and-set or a busy key is returned, not raised.

        A refused write may have written part of itself (the key is taken
        after the row), so the caller rolls it back: the whole transaction
        for a single write, its savepoint in a batch.
        """
        cursor.execute(self.statement, self.row, prepare=True)
        if cursor.rowcount != 1:
            return LeaseLostError(
                f"execution {self.execution_id} was taken over by another process; "
                "this process stopped writing to it"
            )
        if self.key is not None:
            cursor.execute(_TAKE_KEY, (self.key, self.execution_id, self.row[5]), prepare=True)
            if cursor.rowcount != 1:
                holder = cursor.execute(_KEY_HOLDER, (self.key,)).fetchone()
                return ConcurrencyKeyBusyError(
                    f"concurrency key {self.key!r} is held by unfinished execution "
                    f"{holder[0] if holder else '(just released)'}; "
                    "try again when it ends, or wait for it"
                )
        if self.events:
            cursor.executemany(_INSERT_EVENT, self.events)
        if self.release_key is not None:
            cursor.execute(_RELEASE_KEY, (self.release_key, self.execution_id), prepare=True)
        if self.definition is not None:
            cursor.execute(_REGISTER_DEFINITION, self.definition, prepare=True)
        return self.version()


class _Rollback(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Leaves a transaction block so that psycopg rolls it back, carrying the result."""

    def __init__(self, result: Any) -> None:
        self.result = result


class PostgresStore(SqlStore):
    """The saga log in a PostgreSQL database, shared by processes on many machines."""

    def __init__(self, url: str, writer: Any, reader: Any) -> None:
        self.url = url
        self.display_url = safe_url(url)
        self._db = writer  # autocommit off: every write is one explicit transaction
        self._reader = reader  # autocommit on: reads never hold a transaction open
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()
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
                revision, tables = schema_state(reader)
            where = safe_url(url)
            if revision is None and tables:
                raise ForeignDatabaseError(
                    f"{where} has tables of its own but no saga schema; it was left untouched "
                    "(give saga a database or schema of its own)"
                )
            if revision is not None and revision not in migrate.KNOWN_REVISIONS:
                raise SchemaTooNewError(
                    f"{where} has schema revision {revision}, newer than this saga "
                    f"understands (up to {migrate.HEAD_REVISION}); upgrade saga-cli"
                )
            if revision != migrate.HEAD_REVISION:
                migrate.upgrade_postgres(url)
            writer = connect(url, autocommit=False)
        except BaseException:
            reader.close()
            raise
        return cls(url, writer, reader)

    def close(self) -> None:
        """Close the connections (idempotent)."""
        with self._write_lock:
            self._db.close()
        with self._read_lock:
            self._reader.close()

    def _write(self, sql: str, params: Sequence[Any], *, many: bool = False) -> None:
        sql = sql.replace("?", "%s")

        def work(cursor: Any) -> None:
            if many:
                cursor.executemany(sql, params)
            else:
                cursor.execute(sql, params)

        self._commit(work)

    def _commit(self, work: Callable[[Any], _T]) -> _T:
        """Run `work` in one committed transaction; a `_Rollback` rolls it back instead."""
        psycopg = _psycopg()
        with self._write_lock:
            try:
                with self._db.transaction(), self._db.cursor() as cursor:
                    result = work(cursor)
                self.commits += 1
                return result
            except _Rollback as stop:
                refused: _T = stop.result
                return refused
            except psycopg.Error as exc:
                if self._db.broken or self._db.closed:
                    # The server went away (a restart, a failover): this write
                    # failed, the next one gets a new connection.
                    self._db = _reconnect(self._db, self.url, autocommit=False)
                raise translated(exc, self.url) from None

    def commit_all(self, writes: Sequence[Creation | Transition]) -> list[int | SagaError]:
        """Apply the writes of several executions in one transaction (a savepoint each)."""
        statements = [_Planned(write) for write in writes]

        def work(cursor: Any) -> list[int | SagaError]:
            if len(statements) == 1:
                result = statements[0].run(cursor)
                if isinstance(result, SagaError):
                    raise _Rollback([result])
                return [result]
            results: list[int | SagaError] = []
            for planned in statements:
                cursor.execute("SAVEPOINT item")
                outcome = planned.run(cursor)
                if isinstance(outcome, SagaError):
                    cursor.execute("ROLLBACK TO SAVEPOINT item")
                cursor.execute("RELEASE SAVEPOINT item")
                results.append(outcome)
            return results

        return self._commit(work)

    def claim_many(
        self, claims: Sequence[Claim], owner: str, lease_expires_at: float, now: float
    ) -> list[int | None]:
        """Take several leases in one transaction (one commit for a whole batch)."""

        def work(cursor: Any) -> list[int | None]:
            versions: list[int | None] = []
            for claim in claims:
                cursor.execute(
                    _CLAIM_EXECUTION,
                    (owner, lease_expires_at, now, claim.execution_id, claim.expected_version),
                    prepare=True,
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

        def work(cursor: Any) -> list[ExecutionRecord]:
            rows = cursor.execute(
                f"SELECT id FROM saga_execution WHERE {where}"
                " ORDER BY created_at, id LIMIT %s FOR UPDATE SKIP LOCKED",
                [*params, limit],
            ).fetchall()
            taken: list[ExecutionRecord] = []
            for (execution_id,) in rows:
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
                cursor.executemany(_INSERT_EVENT, event_rows(execution_id, [event]))
                taken.append(row_to_record(row))
            return taken

        return self._commit(work)

    # -- the worker registry (save/remove/workers live in store/sql.py) --------------------

    def held_executions(self, owners: Sequence[str], now: float) -> dict[str, list[str]]:
        """Ids of the unfinished executions each of `owners` holds a live lease on, oldest first."""
        held: dict[str, list[str]] = {owner: [] for owner in owners}
        if not held:
            return held
        rows = self._read(
            "SELECT owner, id FROM saga_execution WHERE status IN (%s, %s, %s)"
            " AND owner = ANY(%s) AND lease_expires_at >= %s ORDER BY created_at, id",
            (
                SagaStatus.PENDING.value,
                SagaStatus.RUNNING.value,
                SagaStatus.COMPENSATING.value,
                list(held),
                now,
            ),
        )
        for owner, execution_id in rows:
            held[owner].append(execution_id)
        return held

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        psycopg = _psycopg()
        with self._read_lock:
            try:
                # Shared queries (store/sql.py) use ``?``; psycopg wants ``%s``.
                sql = sql.replace("?", "%s")
                rows: list[Any] = self._reader.execute(sql, params, prepare=True).fetchall()
                return rows
            except psycopg.Error as exc:
                if self._reader.broken or self._reader.closed:
                    self._reader = _reconnect(self._reader, self.url, autocommit=True)
                raise translated(exc, self.url) from None

    def events_of(self, execution_ids: Sequence[str]) -> dict[str, list[Event]]:
        """Return the events of several executions, one query per 500 ids."""
        found: dict[str, list[Event]] = {i: [] for i in execution_ids}
        ids = list(found)
        for start in range(0, len(ids), 500):
            rows = self._read(
                "SELECT saga_id, seq, type, step, attempt, detail, at FROM saga_event"
                " WHERE saga_id = ANY(%s) ORDER BY saga_id, seq",
                (ids[start : start + 500],),
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
            'SELECT id FROM saga_execution WHERE id >= %s AND id < %s ORDER BY id COLLATE "C"'
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
        """Return executions newest first (ties broken by id), a keyset page at a time."""
        where, params = window_filters(saga=saga, since=since, until=until)
        if status is not None:
            where.insert(0, "status=%s")
            params.insert(0, status.value)
        if after is not None:
            where.append("(created_at, id) < (%s, %s)")
            params += [after[0], after[1]]
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        sql = f"{SELECT_EXECUTION}{clause} ORDER BY created_at DESC, id DESC LIMIT %s"
        return [row_to_record(row) for row in self._read(sql, [*params, limit])]

    def count_statuses(
        self,
        *,
        statuses: Sequence[SagaStatus] = tuple(SagaStatus),
        saga: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> dict[SagaStatus, int]:
        """Count executions per status, filtered as in list."""
        counts = dict.fromkeys(statuses, 0)
        if not statuses:
            return counts
        where, params = window_filters(saga=saga, since=since, until=until)
        where.insert(0, "status = ANY(%s)")
        params.insert(0, [s.value for s in statuses])
        rows = self._read(
            f"SELECT status, COUNT(*) FROM saga_execution WHERE {' AND '.join(where)}"
            " GROUP BY status",
            params,
        )
        for status, count in rows:
            counts[SagaStatus(status)] = int(count)
        return counts

    def created_histogram(
        self, since: float, until: float, buckets: int, *, saga: str | None = None
    ) -> list[int]:
        """Count creations per time slice (one range count per slice, as on SQLite)."""
        width = (until - since) / buckets
        edges = [since + width * i for i in range(buckets)] + [until]
        where, params = window_filters(saga=saga, since=None, until=None)
        where += ["created_at>=%s", "created_at<%s"]
        sql = f"SELECT COUNT(*) FROM saga_execution WHERE {' AND '.join(where)}"
        return [
            int(self._read(sql, [*params, low, high])[0][0])
            for low, high in zip(edges, edges[1:], strict=False)
        ]

    def lease_groups(self, now: float, *, saga: str | None = None) -> list[LeaseGroup]:
        """Group unfinished executions by status, owner and lease liveness."""
        rows = self._read(
            "SELECT status, owner, COALESCE(lease_expires_at > %s, false), COUNT(*)"
            " FROM saga_execution"
            f" WHERE status IN (%s, %s, %s){' AND saga=%s' if saga is not None else ''}"
            " GROUP BY 1, 2, 3",
            (
                now,
                SagaStatus.PENDING.value,
                SagaStatus.RUNNING.value,
                SagaStatus.COMPENSATING.value,
            )
            + ((saga,) if saga is not None else ()),
        )
        return [
            LeaseGroup(SagaStatus(status), owner, bool(live), int(count))
            for status, owner, live, count in rows
        ]

    def step_records(self, execution_ids: Sequence[str]) -> dict[str, list[StepRecord]]:
        """Step events of several executions (one query per 500 ids), details left out."""
        found: dict[str, list[StepRecord]] = {i: [] for i in execution_ids}
        ids = list(found)
        for start in range(0, len(ids), 500):
            rows = self._read(
                "SELECT saga_id, step, type, attempt, at FROM saga_event"
                " WHERE saga_id = ANY(%s) AND step IS NOT NULL ORDER BY saga_id, seq",
                (ids[start : start + 500],),
            )
            for saga_id, step, kind, attempt, at in rows:
                found[saga_id].append((step, kind, attempt, at, None))
        return found

    def prune(self, older_than: float, statuses: Sequence[SagaStatus], *, batch: int = 500) -> int:
        """Delete terminal executions and their events, one batch per transaction.

        Each batch locks its candidates (``FOR UPDATE``) before deleting
        them, so none can change status between being chosen and deleted.
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
        """Yield pending, running and compensating executions, a keyset page at a time."""
        for status in (SagaStatus.RUNNING, SagaStatus.COMPENSATING, SagaStatus.PENDING):
            after: tuple[float, str] = (float("-inf"), "")
            while True:
                rows = self._read(
                    f"{SELECT_EXECUTION} WHERE status=%s AND (created_at, id) > (%s, %s)"
                    " ORDER BY created_at, id LIMIT %s",
                    (status.value, after[0], after[1], page),
                )
                if not rows:
                    break
                yield [row_to_record(row) for row in rows]
                after = (rows[-1][5], rows[-1][0])

    def connect(self) -> ParticipantConnection:
        """A new connection to the same database for a participant that lives in it."""
        return ParticipantConnection(self.url)


def _reconnect(old: Any, url: str, *, autocommit: bool) -> Any:
    """A new connection in place of a broken one (the old one as is if the server is down)."""
    with contextlib.suppress(Exception):
        old.close()
    try:
        return connect(url, autocommit=autocommit)
    except StoreError:
        return old  # still broken: the next call fails and tries again


def _prune_batch(
    cursor: Any,
    *,
    status: SagaStatus,
    older_than: float,
    after: tuple[float, str],
    limit: int,
) -> tuple[int, tuple[float, str]] | None:
    """Delete the next batch of `status` executions older than `older_than` (see sqlite.py)."""
    rows = cursor.execute(
        "SELECT id, created_at, updated_at FROM saga_execution"
        " WHERE status=%s AND created_at<%s AND (created_at, id) > (%s, %s)"
        " ORDER BY created_at, id LIMIT %s FOR UPDATE",
        (status.value, older_than, after[0], after[1], limit),
    ).fetchall()
    if not rows:
        return None
    # Re-checked under the row lock: a row whose status moved on meanwhile
    # was skipped by the WHERE above (PostgreSQL re-evaluates it).
    ids = [row[0] for row in rows if row[2] < older_than]
    if ids:
        cursor.execute("DELETE FROM saga_event WHERE saga_id = ANY(%s)", (ids,))
        cursor.execute("DELETE FROM saga_key_lock WHERE execution_id = ANY(%s)", (ids,))
        cursor.execute("DELETE FROM saga_execution WHERE id = ANY(%s)", (ids,))
    return len(ids), (rows[-1][1], rows[-1][0])


# -- participants in the log's database (the demo services) ---------------------------


class ParticipantCursor:
    """A psycopg cursor that speaks the sqlite3 dialect the demo services are written in.

    ``?`` placeholders become ``%s``; ``BEGIN IMMEDIATE`` (SQLite's "take
    the write lock now") becomes ``BEGIN`` plus a transaction-scoped
    advisory lock, so the services' transactions serialize exactly as they
    do on SQLite's single writer (a cancel that finds no reservation and
    writes a tombstone cannot race a late reserve of the same key). Errors
    come out as the library's StoreError.
    """

    def __init__(self, owner: ParticipantConnection) -> None:
        self._owner = owner
        self._cursor = owner.raw.cursor()

    def execute(self, sql: str, params: Sequence[Any] = ()) -> ParticipantCursor:
        """Run one statement (sqlite3 style); returns the cursor for chaining."""
        if sql == "BEGIN IMMEDIATE":
            sql = f"BEGIN; SELECT pg_advisory_xact_lock({PARTICIPANT_LOCK})"
            params = ()
        with translate_errors(self._owner.url):
            if params:
                self._cursor.execute(sql.replace("%", "%%").replace("?", "%s"), params)
            else:
                self._cursor.execute(sql)
        return self

    def fetchone(self) -> Any:
        """The next row, or None."""
        with translate_errors(self._owner.url):
            return self._cursor.fetchone()

    def fetchall(self) -> list[Any]:
        """The remaining rows."""
        with translate_errors(self._owner.url):
            rows: list[Any] = self._cursor.fetchall()
            return rows

    def __iter__(self) -> Iterator[Any]:
        return iter(self.fetchall())

    @property
    def rowcount(self) -> int:
        """Rows the last statement changed."""
        return int(self._cursor.rowcount)


# Serializes the demo services' transactions on one database, as SQLite does.
PARTICIPANT_LOCK = 0x5A6A_0002


class ParticipantConnection:
    """An autocommit psycopg connection with sqlite3's connection surface (see above)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.raw = connect(url, autocommit=True)
        # As on SQLite (participant_synchronous, see store/sqlite.py), a
        # participant's commit need not wait for its own WAL flush: the runner
        # records the call's outcome in the log only after the call returns,
        # and that commit flushes the WAL up to its own record, so every
        # earlier participant commit too. A crash in between loses both the
        # participant's write and the outcome, and resume repeats the call
        # under the same idempotency key.
        with translate_errors(url):
            self.raw.execute("SET synchronous_commit TO off")

    def cursor(self) -> ParticipantCursor:
        """A new cursor."""
        return ParticipantCursor(self)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> ParticipantCursor:
        """Run one statement on a new cursor; outside BEGIN it commits on its own."""
        return self.cursor().execute(sql, params)

    def close(self) -> None:
        """Close the connection."""
        self.raw.close()
