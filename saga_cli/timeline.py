"""One execution laid out in time: the forward path, then the compensations in reverse.

Each outcome is paired with its own step's ``started`` record (same phase,
step and attempt), never with the record just before it: steps of a parallel
group may start together and finish in any order.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from saga_cli.domain import Event

FORWARD = "forward"
COMPENSATION = "compensation"

# event type -> (phase, outcome); outcome None marks a start
_KINDS: dict[str, tuple[str, str | None]] = {
    "step_started": (FORWARD, None),
    "step_succeeded": (FORWARD, "succeeded"),
    "step_failed": (FORWARD, "failed"),
    "compensation_started": (COMPENSATION, None),
    "compensation_succeeded": (COMPENSATION, "succeeded"),
    "compensation_failed": (COMPENSATION, "failed"),
}

# (step, event type, attempt, time, detail): what pairing reads from an event
Record = tuple[str | None, str, int, float, Mapping[str, Any] | None]


def failure_text(detail: Mapping[str, Any]) -> str | None:
    """A failed call's error as people read it: ``KeyError: 'missing'``, not just ``'missing'``.

    The exception's type is put in front when the failure was unexpected (it
    has a traceback, so it was no business refusal) and the exception is not
    one of saga's own, whose messages are written to stand alone.
    """
    error = detail.get("error")
    if error is None:
        return None
    exception = detail.get("exception")
    if "traceback" in detail and exception and not str(exception).startswith("saga_cli."):
        return f"{exception}: {error}"
    return str(error)


@dataclass(slots=True)
class Attempt:
    """One call of a step or of its compensation, from its start to its outcome."""

    step: str
    phase: str
    number: int
    started_at: float | None
    ended_at: float | None = None
    outcome: str = "running"  # running, succeeded, failed, retrying
    error: str | None = None

    @property
    def duration(self) -> float | None:
        """Seconds from start to outcome, when both are in the log."""
        if self.started_at is None or self.ended_at is None:
            return None
        return self.ended_at - self.started_at


def pair_attempts(records: Iterable[Record]) -> list[Attempt]:
    """Match every outcome with the start of the same phase, step and attempt.

    Returns:
        The attempts in the order they started. An outcome with no matching
        start (a log written before attempts were numbered) closes the
        step's latest open attempt, or stands alone without a start time.
    """
    attempts: list[Attempt] = []
    open_: dict[tuple[str, str, int], Attempt] = {}
    for step, kind, number, at, detail in records:
        known = _KINDS.get(kind)
        if known is None or step is None:
            continue
        phase, outcome = known
        if outcome is None:
            attempt = Attempt(step, phase, number, at)
            attempts.append(attempt)
            open_[(phase, step, number)] = attempt
            continue
        found = open_.pop((phase, step, number), None)
        if found is None:
            latest = [k for k in open_ if k[:2] == (phase, step)]
            found = open_.pop(latest[-1]) if latest else None
        if found is None:
            found = Attempt(step, phase, number, None)
            attempts.append(found)
        found.ended_at = at
        found.outcome = outcome
        if outcome == "failed":
            found.error = None if detail is None else failure_text(detail)
            if detail is not None and detail.get("retry_at") is not None:
                found.outcome = "retrying"
    return attempts


@dataclass(frozen=True, slots=True)
class StepLine:
    """One step on one path: its attempts, overall status, span and last error."""

    step: str
    phase: str
    attempts: tuple[Attempt, ...] = ()

    @property
    def status(self) -> str:
        """``not run``, or the outcome of the latest attempt."""
        return self.attempts[-1].outcome if self.attempts else "not run"

    @property
    def started_at(self) -> float | None:
        """When the first attempt started."""
        starts = [a.started_at for a in self.attempts if a.started_at is not None]
        return min(starts) if starts else None

    @property
    def ended_at(self) -> float | None:
        """When the latest attempt ended (None while it runs)."""
        return self.attempts[-1].ended_at if self.attempts else None

    @property
    def duration(self) -> float | None:
        """Seconds from the first start to the last outcome."""
        start, end = self.started_at, self.ended_at
        return None if start is None or end is None else end - start

    @property
    def error(self) -> str | None:
        """The latest error any attempt reported."""
        errors = [a.error for a in self.attempts if a.error]
        return errors[-1] if errors else None

    def as_json(self) -> dict[str, Any]:
        """The JSON shape of one line of ``saga show --json``'s timeline."""
        return {
            "step": self.step,
            "status": self.status,
            "attempts": len(self.attempts),
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "duration": self.duration,
            "error": self.error,
        }


@dataclass(frozen=True, slots=True)
class Timeline:
    """The forward path in definition order, and the compensation path as it ran."""

    started_at: float | None
    ended_at: float | None
    forward: list[StepLine] = field(default_factory=list)
    compensation: list[StepLine] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """The ``timeline`` object of ``saga show --json``."""
        return {
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "forward": [line.as_json() for line in self.forward],
            "compensation": [line.as_json() for line in self.compensation],
        }


def build(events: Sequence[Event], step_names: Sequence[str] = ()) -> Timeline:
    """Lay out one execution's events as a forward and a compensation path.

    Args:
        events: the execution's events in sequence order.
        step_names: the saga's steps in definition order, so that steps
            never run still show; steps the events name are added in the
            order they first started.
    """
    attempts = pair_attempts((e.step, e.type.value, e.attempt, e.at, e.detail) for e in events)
    by_path: dict[str, dict[str, list[Attempt]]] = {
        FORWARD: {name: [] for name in step_names},
        COMPENSATION: {},
    }
    for attempt in attempts:
        by_path[attempt.phase].setdefault(attempt.step, []).append(attempt)
    return Timeline(
        started_at=events[0].at if events else None,
        ended_at=events[-1].at if events else None,
        forward=[StepLine(s, FORWARD, tuple(a)) for s, a in by_path[FORWARD].items()],
        compensation=[
            StepLine(s, COMPENSATION, tuple(a)) for s, a in by_path[COMPENSATION].items()
        ],
    )
