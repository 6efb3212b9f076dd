"""Which events need an operator: the alerts that ride in the same commit as their cause.

The engine writes an execution's events in shared commits (see
:mod:`saga_cli.engine.writer`); :func:`alerts_for` looks at the events of one
write and returns the alert rows to insert with them, so an alert exists if
and only if the event behind it does, whatever crashes next. Delivering
them to sinks is :mod:`saga_cli.alerts`' business, never the engine's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from saga_cli.domain import Event, EventType
from saga_cli.errors import InvalidInputError
from saga_cli.store import AlertRecord

STUCK = "stuck"
DEADLINE = "deadline"
COMPENSATION_FAILED = "compensation_failed"
KINDS = (STUCK, DEADLINE, COMPENSATION_FAILED)

_CAUSES = frozenset(
    {EventType.SAGA_STUCK, EventType.COMPENSATION_REQUESTED, EventType.COMPENSATION_FAILED}
)


@dataclass(frozen=True, slots=True)
class AlertPolicy:
    """When the engine writes an alert.

    Args:
        stuck: when an execution becomes stuck (a compensation, or a step
            past the point of no return, gave up).
        deadline: when an execution misses its deadline and is turned back.
        compensation_failures: when a compensation fails its Nth attempt
            (an early warning, before it gives up); 0 never.

    Raises:
        InvalidInputError: a negative number of failures.
    """

    stuck: bool = True
    deadline: bool = True
    compensation_failures: int = 3

    def __post_init__(self) -> None:
        if not 0 <= self.compensation_failures <= 1_000_000:
            raise InvalidInputError(
                "alerts: compensation_failures must be 0 (never) to 1000000 "
                f"(got {self.compensation_failures})"
            )


# What the engine does unless told otherwise.
DEFAULT_POLICY = AlertPolicy()


def alerts_for(
    policy: AlertPolicy, execution_id: str, saga: str, events: Sequence[Event]
) -> list[AlertRecord]:
    """The alerts `events` (one write of one execution) call for under `policy`."""
    found: list[AlertRecord] = []
    for event in events:
        if event.type not in _CAUSES:
            continue
        kind = _kind_of(policy, event)
        if kind is None:
            continue
        detail = event.detail or {}
        error = detail.get("error") if kind != DEADLINE else detail.get("reason")
        found.append(
            AlertRecord(
                id=f"{execution_id}:{event.seq}",
                execution_id=execution_id,
                saga=saga,
                kind=kind,
                step=event.step,
                attempt=event.attempt,
                error=None if error is None else str(error),
                created_at=event.at,
                next_attempt_at=event.at,
            )
        )
    return found


def _kind_of(policy: AlertPolicy, event: Event) -> str | None:
    if event.type is EventType.SAGA_STUCK:
        return STUCK if policy.stuck else None
    if event.type is EventType.COMPENSATION_REQUESTED:
        # Only the engine's own request is a missed deadline; an operator's
        # (`saga compensate`, `saga cancel`) is recorded by the claim, not here.
        deadline = event.detail is not None and "deadline_at" in event.detail
        return DEADLINE if policy.deadline and deadline else None
    wanted = policy.compensation_failures
    return COMPENSATION_FAILED if wanted and event.attempt == wanted else None
