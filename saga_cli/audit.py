"""Auditing the log on its own: does each finished execution's history agree with its status?

``saga check`` runs this over every execution the log holds, whatever its saga;
the travel demo adds its audit of the services' own records on top (see
``TravelBooking.check``). Only the log is read, so it needs no saga's code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from saga_cli.domain import Event, EventType, SagaStatus
from saga_cli.store import ExecutionRecord, SagaStore
from saga_cli.views import step_views

# A finished execution must have recorded the event that finished it, and
# each step it started must have come to rest in one of these states: all
# succeeded, or each one undone or never done (a failed call had no effect;
# one that timed out counts as done and is compensated).
_FINISHED_BY = {
    SagaStatus.COMPLETED: EventType.SAGA_COMPLETED,
    SagaStatus.COMPENSATED: EventType.SAGA_COMPENSATED,
}
_STEPS_AT_REST = {
    SagaStatus.COMPLETED: ("succeeded",),
    SagaStatus.COMPENSATED: ("compensated", "failed", "retrying"),
}


@dataclass(frozen=True, slots=True)
class LogAudit:
    """What :func:`audit_log` found."""

    executions: int
    violations: list[str]


def audit_log(store: SagaStore, *, page: int = 500) -> LogAudit:
    """Check every finished execution in the log against its own events.

    A completed execution must hold a saga-completed event and every step it
    started must have succeeded; a compensated one must hold a
    saga-compensated event and every step it started must have been
    compensated, or have failed (a step that succeeded, or was left mid-call
    or mid-compensation, may have taken effect that nobody undid). Executions closed by hand
    (``saga resolve``) are the operator's word and are not second-guessed;
    unfinished and stuck ones have nothing to agree with yet.

    Args:
        store: the saga log; only read.
        page: executions whose events are read in one query.

    Returns:
        How many executions the log holds (all of them, finished or not), and
        one line per violation.
    """
    total = sum(store.count_statuses().values())
    violations: list[str] = []
    for status in _FINISHED_BY:
        after: tuple[float, str] | None = None
        while True:
            records = store.list_executions(status=status, limit=page, after=after)
            events = store.events_of([record.id for record in records])
            for record in records:
                violations += execution_violations(record, events.get(record.id, []))
            if len(records) < page:
                break
            after = (records[-1].created_at, records[-1].id)
    return LogAudit(total, violations)


def execution_violations(record: ExecutionRecord, events: Sequence[Event]) -> list[str]:
    """What is wrong with one finished execution's history (normally nothing)."""
    types = {event.type for event in events}
    if record.status not in _FINISHED_BY or EventType.SAGA_RESOLVED in types:
        return []
    status = record.status.value
    violations = []
    if _FINISHED_BY[record.status] not in types:
        finished = _FINISHED_BY[record.status].value
        violations.append(f"{status} execution {record.id} has no {finished} event")
    at_rest = _STEPS_AT_REST[record.status]
    for step in step_views(events):
        if step.status not in at_rest:
            violations.append(
                f"{status} execution {record.id} has step {step.name} {step.status}, "
                f"expected {at_rest[0]}"
            )
    return violations
