"""What the SQLite and PostgreSQL logs share: the row shapes and the queries alike in both.

Queries here are written with ``?`` placeholders; the PostgreSQL store's
``_read`` turns them into psycopg's ``%s``. Statements whose SQL differs
between the two (locking, upserts, index hints) stay in each backend.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Mapping, Sequence
from typing import Any

from saga_cli.breaker import BreakerSnapshot, BreakerState
from saga_cli.domain import Event, SagaStatus
from saga_cli.errors import SagaError, UnknownExecutionError
from saga_cli.store import (
    Creation,
    DefinitionRecord,
    ExecutionRecord,
    SagaStore,
    Transition,
    WorkerRecord,
)

EXECUTION_COLUMNS = (
    "id, saga, payload, status, step, created_at, updated_at, owner, lease_expires_at, version,"
    " definition_version, concurrency_key"
)
SELECT_EXECUTION = f"SELECT {EXECUTION_COLUMNS} FROM saga_execution"
WORKER_COLUMNS = "id, host, pid, started_at, heartbeat_at, concurrency, lease_seconds, sagas"

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


class SqlStore(SagaStore):
    """A saga log in a SQL database: the operations whose SQL is the same everywhere."""

    @abc.abstractmethod
    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Rows of one read-only query (``?`` placeholders)."""

    @abc.abstractmethod
    def _write(self, sql: str, params: Sequence[Any], *, many: bool = False) -> None:
        """Run one statement (``?`` placeholders; `many`: once per row) and commit it."""

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

    def get(self, execution_id: str) -> ExecutionRecord:
        """Return one execution by full id."""
        rows = self._read(f"{SELECT_EXECUTION} WHERE id=?", (execution_id,))
        if not rows:
            raise UnknownExecutionError(f"no execution has id {execution_id}")
        return row_to_record(rows[0])

    def events(self, execution_id: str) -> list[Event]:
        """Return an execution's events in sequence order."""
        return self.events_of([execution_id])[execution_id]

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

    def breakers(self) -> list[BreakerSnapshot]:
        """Return the last known state of every circuit breaker."""
        rows = self._read(
            "SELECT service, state, failures, opened_at, last_error, updated_at"
            " FROM circuit_breaker ORDER BY service"
        )
        return [
            BreakerSnapshot(service, BreakerState(state), failures, opened_at, error, updated)
            for service, state, failures, opened_at, error, updated in rows
        ]

    def save_breaker(self, snapshot: BreakerSnapshot) -> None:
        """Upsert a breaker's state (one commit; state changes are rare)."""
        self._write(
            "INSERT INTO circuit_breaker"
            " (service, state, failures, opened_at, last_error, updated_at)"
            " VALUES (?,?,?,?,?,?) ON CONFLICT (service) DO UPDATE SET"
            " state=excluded.state, failures=excluded.failures,"
            " opened_at=excluded.opened_at, last_error=excluded.last_error,"
            " updated_at=excluded.updated_at",
            (
                snapshot.service,
                snapshot.state.value,
                snapshot.failures,
                snapshot.opened_at,
                snapshot.last_error,
                snapshot.updated_at,
            ),
        )

    def renew_leases(self, owner: str, held: Mapping[str, int], until: float) -> None:
        """Extend leases still held at the given versions (no version bump)."""
        rows = [(until, execution_id, owner, version) for execution_id, version in held.items()]
        if rows:
            self._write(
                "UPDATE saga_execution SET lease_expires_at=? WHERE id=? AND owner=? AND version=?",
                rows,
                many=True,
            )

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
