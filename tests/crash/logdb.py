"""Reading the saga log and the services' tables straight from SQLite, after a crash."""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from support import SERVICES


@dataclass(frozen=True)
class LoggedEvent:
    seq: int
    step: str | None
    type: str
    attempt: int
    detail: dict[str, Any] | None


@dataclass(frozen=True)
class Reservation:
    service: str
    key: str
    saga_id: str
    resource: str | None
    status: str


class LogDb:
    """Plain sqlite3 reads (and operator writes) on the file the CLI uses."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def rows(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        with closing(sqlite3.connect(self.path, timeout=30)) as connection:
            return list(connection.execute(sql, params))

    def write(self, sql: str, params: tuple[object, ...] = ()) -> None:
        with closing(sqlite3.connect(self.path, timeout=30)) as connection, connection:
            connection.execute(sql, params)

    def execution_ids(self) -> list[str]:
        return [r[0] for r in self.rows("SELECT id FROM saga_execution ORDER BY created_at, id")]

    def newest_id(self) -> str:
        ids = self.execution_ids()
        assert ids, "the log holds no execution"
        return ids[-1]

    def status(self, execution_id: str) -> str:
        rows = self.rows("SELECT status FROM saga_execution WHERE id=?", (execution_id,))
        return str(rows[0][0])

    def statuses(self) -> Counter[str]:
        return Counter(str(r[0]) for r in self.rows("SELECT status FROM saga_execution"))

    def owner(self, execution_id: str) -> tuple[str | None, float | None]:
        rows = self.rows(
            "SELECT owner, lease_expires_at FROM saga_execution WHERE id=?", (execution_id,)
        )
        return rows[0][0], rows[0][1]

    def events(self, execution_id: str) -> list[LoggedEvent]:
        return [
            LoggedEvent(seq, step, kind, attempt, None if detail is None else json.loads(detail))
            for seq, step, kind, attempt, detail in self.rows(
                "SELECT seq, step, type, attempt, detail FROM saga_event"
                " WHERE saga_id=? ORDER BY seq",
                (execution_id,),
            )
        ]

    def event_count(self) -> int:
        return int(self.rows("SELECT COUNT(*) FROM saga_event")[0][0])

    def reservations(self, execution_id: str | None = None) -> list[Reservation]:
        found = []
        for service in SERVICES:
            sql = f"SELECT key, saga_id, resource, status FROM {service}_reservation"
            params: tuple[object, ...] = ()
            if execution_id is not None:
                sql += " WHERE saga_id=?"
                params = (execution_id,)
            found += [Reservation(service, *row) for row in self.rows(sql, params)]
        return found

    def reservation(self, execution_id: str, service: str) -> Reservation | None:
        key = f"{execution_id}:{service}"
        matches = [r for r in self.reservations(execution_id) if r.key == key]
        return matches[0] if matches else None

    def capacity(self) -> dict[tuple[str, str], tuple[int, int, int, int]]:
        """(capacity, available, pending, confirmed) per (service, resource)."""
        table: dict[tuple[str, str], tuple[int, int, int, int]] = {}
        for service in SERVICES:
            for code, capacity, available in self.rows(
                f"SELECT code, capacity, available FROM {service}_resource"
            ):
                counts = Counter(
                    status
                    for (status,) in self.rows(
                        f"SELECT status FROM {service}_reservation WHERE resource=?", (code,)
                    )
                )
                table[service, code] = (
                    capacity,
                    available,
                    counts["pending"],
                    counts["confirmed"],
                )
        return table


def assert_capacity_conserved(db: LogDb) -> None:
    """Check available + pending + confirmed == capacity for every resource of every service."""
    for (service, code), (capacity, available, pending, confirmed) in db.capacity().items():
        assert available >= 0, (service, code)
        assert available + pending + confirmed == capacity, (
            f"{service} {code}: capacity {capacity} != available {available}"
            f" + pending {pending} + confirmed {confirmed}"
        )


def compensation_plan(events: list[LoggedEvent]) -> list[str]:
    """The steps to compensate, in order: those whose action may have taken effect, reversed.

    That is every step that succeeded, plus a step whose outcome was unknown when
    `saga compensate` cut it short; the forward-only `confirm` is never among them.
    """
    applied: list[str] = []
    in_flight: str | None = None
    for event in events:
        if event.type == "step_started":
            in_flight = event.step
        elif event.type in ("step_succeeded", "step_failed"):
            if event.type == "step_succeeded" and event.step is not None:
                applied.append(event.step)
            in_flight = None
        elif event.type == "compensation_requested" and in_flight is not None:
            applied.append(in_flight)
            in_flight = None
    return [step for step in reversed(applied) if step != "confirm"]


def assert_log_well_formed(db: LogDb, execution_id: str) -> None:
    """Check the log of one execution against the services.

    Sequence numbers run 1..n; each action and each compensation succeeded at
    most once; compensations ran in exactly the reverse order of the actions;
    each service holds at most one reservation for the execution.
    """
    events = db.events(execution_id)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    succeeded = [e.step for e in events if e.type == "step_succeeded"]
    compensated = [e.step for e in events if e.type == "compensation_succeeded"]
    assert len(set(succeeded)) == len(succeeded), succeeded
    assert len(set(compensated)) == len(compensated), compensated
    plan = compensation_plan(events)
    assert compensated == plan[: len(compensated)], (compensated, plan)
    if events[-1].type == "saga_compensated":
        assert compensated == plan, (compensated, plan)
    per_service = Counter(r.service for r in db.reservations(execution_id))
    assert all(n == 1 for n in per_service.values()), per_service


def assert_terminal_and_consistent(db: LogDb, execution_id: str) -> str:
    """The execution is completed or compensated and its reservations say the same."""
    status = db.status(execution_id)
    assert status in ("completed", "compensated"), status
    events = db.events(execution_id)
    assert events[-1].type == f"saga_{status}"
    reservations = db.reservations(execution_id)
    if status == "completed":
        assert {r.status for r in reservations} == {"confirmed"}, reservations
    else:
        assert {r.status for r in reservations} <= {"canceled"}
    assert_log_well_formed(db, execution_id)
    return status
