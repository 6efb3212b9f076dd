"""The pure saga model: definitions, statuses, events and the state machine.

Nothing here does I/O. The runner feeds events through :func:`apply` and asks
:func:`decide` what to do next; replaying a stored event list through the same
functions rebuilds the exact state a crashed process had, which is what makes
resume work from the log alone.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any, NamedTuple

from saga_cli.errors import DefinitionError, IllegalTransitionError


class SagaStatus(StrEnum):
    """Status of an execution; the values are stored verbatim in the log."""

    PENDING = "pending"
    RUNNING = "running"
    COMPENSATING = "compensating"
    COMPLETED = "completed"
    COMPENSATED = "compensated"
    STUCK = "stuck"


TERMINAL_STATUSES = frozenset({SagaStatus.COMPLETED, SagaStatus.COMPENSATED})

# Which status may follow which. STUCK is a resting state, not a terminal one:
# `saga resume` moves it back to COMPENSATING for another round of attempts.
ALLOWED_TRANSITIONS: Mapping[SagaStatus, frozenset[SagaStatus]] = {
    SagaStatus.PENDING: frozenset(
        {SagaStatus.RUNNING, SagaStatus.COMPENSATED, SagaStatus.COMPENSATING}
    ),
    SagaStatus.RUNNING: frozenset(
        {SagaStatus.COMPENSATING, SagaStatus.COMPLETED, SagaStatus.COMPENSATED, SagaStatus.STUCK}
    ),
    SagaStatus.COMPENSATING: frozenset({SagaStatus.COMPENSATED, SagaStatus.STUCK}),
    SagaStatus.STUCK: frozenset(
        {
            SagaStatus.COMPENSATING,
            SagaStatus.RUNNING,
            # an operator's manual resolution (`saga resolve`)
            SagaStatus.COMPENSATED,
            SagaStatus.COMPLETED,
        }
    ),
    SagaStatus.COMPLETED: frozenset(),
    SagaStatus.COMPENSATED: frozenset(),
}


def is_terminal(status: SagaStatus | str) -> bool:
    """Return True when an execution can never change again."""
    return SagaStatus(status) in TERMINAL_STATUSES


class EventType(StrEnum):
    """Kinds of records in the append-only event log."""

    SAGA_STARTED = "saga_started"
    SAGA_RESUMED = "saga_resumed"
    STEP_STARTED = "step_started"
    STEP_SUCCEEDED = "step_succeeded"
    STEP_FAILED = "step_failed"
    COMPENSATION_REQUESTED = "compensation_requested"
    COMPENSATION_STARTED = "compensation_started"
    COMPENSATION_SUCCEEDED = "compensation_succeeded"
    COMPENSATION_FAILED = "compensation_failed"
    SAGA_COMPLETED = "saga_completed"
    SAGA_COMPENSATED = "saga_compensated"
    SAGA_STUCK = "saga_stuck"
    SAGA_RESOLVED = "saga_resolved"


class StepKind(StrEnum):
    """Role of a step, as in the saga literature (Garcia-Molina; Richardson)."""

    COMPENSATABLE = "compensatable"
    PIVOT = "pivot"
    RETRIABLE = "retriable"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounded attempts with exponential backoff and jitter.

    Attributes:
        max_attempts: total calls allowed, the first one included.
        initial_delay: seconds before the second attempt.
        multiplier: growth of the delay per attempt.
        max_delay: cap on any single delay.
        jitter: fraction (0..1) of the delay drawn at random, spreading retries.
    """

    max_attempts: int = 1
    initial_delay: float = 0.0
    multiplier: float = 2.0
    max_delay: float = 30.0
    jitter: float = 0.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise DefinitionError("a retry policy needs max_attempts >= 1")
        if self.initial_delay < 0 or self.max_delay < 0 or self.multiplier < 1:
            raise DefinitionError("retry delays must be >= 0 and the multiplier >= 1")
        if not 0 <= self.jitter <= 1:  # also false for NaN
            raise DefinitionError("retry jitter must be within [0, 1]")
        if not all(map(math.isfinite, (self.initial_delay, self.multiplier, self.max_delay))):
            raise DefinitionError("retry delays and the multiplier must be finite numbers")

    def delay_before(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before `attempt` (2 = the first retry)."""
        base = min(self.max_delay, self.initial_delay * self.multiplier ** max(0, attempt - 2))
        if self.jitter and base:
            base -= base * self.jitter * (rng or random).random()
        return base


NO_RETRY = RetryPolicy()
DEFAULT_COMPENSATION_RETRY = RetryPolicy(max_attempts=5, initial_delay=0.05, max_delay=1.0)
DEFAULT_RETRIABLE_RETRY = RetryPolicy(max_attempts=10, initial_delay=0.05, max_delay=2.0)


@dataclass(frozen=True, slots=True)
class StepContext:
    """What a step's action or compensation is given.

    Attributes:
        execution_id: id of the execution in the saga log.
        step: name of the step.
        key: idempotency key for this call; the same on every retry and resume.
        action_key: the key the step's action used; a compensation cancels
            what was done under it (for an action, the same as `key`).
        attempt: 1 for the first call of this action, 2 for the first retry, ...
        payload: the execution's input, as stored.
        results: return values of the steps that succeeded so far, by name.
    """

    execution_id: str
    step: str
    key: str
    action_key: str
    attempt: int
    payload: Mapping[str, Any]
    results: Mapping[str, Any]


StepFunction = Callable[[StepContext], Any]


@dataclass(frozen=True, slots=True)
class Step:
    """One local transaction of a saga and the action that semantically undoes it."""

    name: str
    action: StepFunction
    compensation: StepFunction | None = None
    kind: StepKind = StepKind.COMPENSATABLE
    retry: RetryPolicy = NO_RETRY
    compensation_retry: RetryPolicy = DEFAULT_COMPENSATION_RETRY
    timeout: float | None = None


@dataclass(frozen=True, slots=True)
class SagaDefinition:
    """An ordered list of steps, validated when built.

    Raises:
        DefinitionError: names repeat, a compensatable step lacks a compensation,
            or the kinds are out of order (compensatable* pivot? retriable*).
    """

    name: str
    steps: tuple[Step, ...]
    index: Mapping[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.name:
            raise DefinitionError("a saga needs a name")
        if not self.steps:
            raise DefinitionError(f"saga {self.name!r} has no steps")
        names = [s.name for s in self.steps]
        for name in names:
            if not name or names.count(name) > 1:
                raise DefinitionError(
                    f"saga {self.name!r}: step name {name!r} is empty or repeated"
                )
        _validate_kinds(self.name, self.steps)
        for step in self.steps:
            if step.timeout is not None and not (0 < step.timeout < math.inf):
                raise DefinitionError(
                    f"saga {self.name!r}: step {step.name!r} has timeout {step.timeout}; "
                    "give a positive number of seconds or None"
                )
        object.__setattr__(self, "index", {n: i for i, n in enumerate(names)})

    @property
    def step_names(self) -> tuple[str, ...]:
        """Names of the steps, in order."""
        return tuple(s.name for s in self.steps)


def _validate_kinds(saga: str, steps: tuple[Step, ...]) -> None:
    """Enforce compensatable* pivot? retriable*, naming the first offending step."""
    seen_forward_only = False
    pivots = 0
    for step in steps:
        if step.kind is StepKind.COMPENSATABLE:
            if seen_forward_only:
                raise DefinitionError(
                    f"saga {saga!r}: compensatable step {step.name!r} comes after the "
                    "pivot or a retriable step; it could never be compensated"
                )
            if step.compensation is None:
                raise DefinitionError(
                    f"saga {saga!r}: compensatable step {step.name!r} has no compensation"
                )
        else:
            if step.compensation is not None:
                raise DefinitionError(
                    f"saga {saga!r}: {step.kind.value} step {step.name!r} cannot have a "
                    "compensation; make it compensatable or drop the compensation"
                )
            if step.kind is StepKind.PIVOT:
                pivots += 1
                if pivots > 1 or seen_forward_only:
                    raise DefinitionError(
                        f"saga {saga!r}: step {step.name!r} is a second pivot or a pivot after "
                        "a retriable step; a saga has at most one pivot"
                    )
            seen_forward_only = True


@dataclass(frozen=True, slots=True)
class Event:
    """One record of the event log, as the state machine sees it."""

    seq: int
    type: EventType
    step: str | None = None
    attempt: int = 0
    detail: Mapping[str, Any] | None = None
    at: float = 0.0


class SagaState(NamedTuple):
    """Everything the runner needs to know, folded from the events.

    A NamedTuple rather than a frozen dataclass: the runner folds about ten
    events per saga and ``_replace`` is several times cheaper than
    ``dataclasses.replace``.

    Attributes:
        status: projection stored on the execution row.
        next_seq: sequence number the next event gets.
        succeeded: indices of forward steps that succeeded, in order.
        applied: indices of forward steps whose effect may exist, in order:
            the succeeded ones plus any whose outcome is unknown (a step cut
            short by `saga compensate`); these are what gets compensated.
        compensated: indices of steps whose compensation succeeded, in order.
        in_flight: (is_compensation, index, attempt) of a call whose `started`
            record is durable and whose outcome is not, if any.
        retry: (is_compensation, index, next_attempt, not_before) after a
            failed attempt that will be retried.
        results: step results by name.
        error: the failure that sent the saga backwards, if any.
        deadline: epoch seconds past which an execution that has not reached
            its point of no return is compensated, if one was set.
        doubt: index of a pivot whose last attempt failed without an answer
            (a timeout): it may have happened, so a resume re-runs it (same
            key) to learn the outcome instead of compensating.
    """

    status: SagaStatus = SagaStatus.PENDING
    next_seq: int = 1
    succeeded: tuple[int, ...] = ()
    applied: tuple[int, ...] = ()
    compensated: tuple[int, ...] = ()
    in_flight: tuple[bool, int, int] | None = None
    retry: tuple[bool, int, int, float] | None = None
    results: Mapping[str, Any] = MappingProxyType({})
    error: str | None = None
    deadline: float | None = None
    doubt: int | None = None

    @property
    def current_step(self) -> int | None:
        """Index of the step being run or compensated, for the execution row."""
        if self.in_flight is not None:
            return self.in_flight[1]
        if self.retry is not None:
            return self.retry[1]
        return None


def _moved(state: SagaState, status: SagaStatus) -> SagaStatus:
    if status is state.status:
        return status
    if status not in ALLOWED_TRANSITIONS[state.status]:
        raise IllegalTransitionError(f"cannot go from {state.status.value} to {status.value}")
    return status


def apply(definition: SagaDefinition, state: SagaState, event: Event) -> SagaState:
    """Return the state after `event`.

    Raises:
        IllegalTransitionError: the event does not fit the state (a corrupt or
            foreign log); the runner stops rather than guess.
    """
    kind = event.type
    index = definition.index.get(event.step, -1) if event.step is not None else -1
    if event.step is not None and index < 0:
        raise IllegalTransitionError(
            f"event {event.seq} names step {event.step!r}, which saga {definition.name!r} lacks"
        )
    if state.status in TERMINAL_STATUSES:
        raise IllegalTransitionError(
            f"event {event.seq} ({kind.value}) follows the end of the execution"
        )
    if kind in _OUTCOMES:
        expected = (kind in _COMPENSATION_OUTCOMES, index, event.attempt)
        if state.in_flight != expected:
            raise IllegalTransitionError(
                f"event {event.seq} ({kind.value} of {event.step!r}, attempt {event.attempt}) "
                "answers no call in flight"
            )
    nxt = max(state.next_seq, event.seq + 1)
    if kind is EventType.SAGA_STARTED:
        deadline = (event.detail or {}).get("deadline_at")
        return state._replace(next_seq=nxt, deadline=None if deadline is None else float(deadline))
    if kind is EventType.SAGA_RESUMED:
        if state.status is not SagaStatus.STUCK:
            return state._replace(next_seq=nxt)
        # A stuck execution gets a fresh round: forward if it passed its
        # pivot (it can only move forward), otherwise back to compensating.
        forward = forward_only(definition, state) or state.doubt is not None
        back = SagaStatus.RUNNING if forward else SagaStatus.COMPENSATING
        return state._replace(status=_moved(state, back), next_seq=nxt)
    if kind is EventType.STEP_STARTED:
        status = _moved(state, SagaStatus.RUNNING)
        return state._replace(
            status=status, next_seq=nxt, in_flight=(False, index, event.attempt), retry=None
        )
    if kind is EventType.STEP_SUCCEEDED:
        result = (event.detail or {}).get("result")
        return state._replace(
            next_seq=nxt,
            in_flight=None,
            retry=None,
            succeeded=(*state.succeeded, index),
            applied=(*state.applied, index),
            results={**state.results, definition.steps[index].name: result},
            doubt=None,
        )
    if kind is EventType.STEP_FAILED:
        detail = event.detail or {}
        retry_at = detail.get("retry_at")
        if retry_at is not None:
            return state._replace(
                next_seq=nxt,
                in_flight=None,
                retry=(False, index, event.attempt + 1, float(retry_at)),
            )
        uncertain = bool(detail.get("uncertain"))
        kind_of_step = definition.steps[index].kind
        if forward_only(definition, state) or (uncertain and kind_of_step is StepKind.PIVOT):
            # Forward-only territory, or a pivot that may have happened and
            # cannot be undone: nothing is compensated; the runner records
            # saga_stuck in the same commit and an operator decides.
            doubt = index if uncertain and kind_of_step is StepKind.PIVOT else None
            return state._replace(
                next_seq=nxt,
                in_flight=None,
                retry=None,
                error=str(detail.get("error")),
                doubt=doubt,
            )
        applied = state.applied
        if uncertain and kind_of_step is StepKind.COMPENSATABLE:
            # Failed with something other than a business refusal (a timeout,
            # a lost connection): the effect may exist, so it is compensated
            # too. Compensations must tolerate an action that never happened.
            applied = (*applied, index)
        return state._replace(
            status=_moved(state, SagaStatus.COMPENSATING),
            next_seq=nxt,
            in_flight=None,
            retry=None,
            applied=applied,
            error=str(detail.get("error", "failed")),
            doubt=None,  # a refusal is an answer: the pivot did not happen
        )
    if kind is EventType.COMPENSATION_REQUESTED:
        if forward_only(definition, state):
            raise IllegalTransitionError("the saga passed its pivot; it can only move forward")
        if pivot_in_doubt(definition, state):
            raise IllegalTransitionError(
                "the pivot's outcome is unknown; resume the execution to learn it"
            )
        reason = str((event.detail or {}).get("reason", "compensation requested"))
        applied = state.applied
        if state.in_flight is not None and not state.in_flight[0]:
            # The step's outcome is unknown: it may have taken effect, so it is
            # compensated too (compensations must tolerate a missing action).
            applied = (*applied, state.in_flight[1])
        return state._replace(
            status=_moved(state, SagaStatus.COMPENSATING),
            next_seq=nxt,
            in_flight=None,
            retry=None,
            applied=applied,
            error=state.error or reason,
        )
    if kind is EventType.COMPENSATION_STARTED:
        status = _moved(state, SagaStatus.COMPENSATING)
        return state._replace(
            status=status, next_seq=nxt, in_flight=(True, index, event.attempt), retry=None
        )
    if kind is EventType.COMPENSATION_SUCCEEDED:
        return state._replace(
            next_seq=nxt,
            in_flight=None,
            retry=None,
            compensated=(*state.compensated, index),
        )
    if kind is EventType.COMPENSATION_FAILED:
        retry_at = (event.detail or {}).get("retry_at")
        if retry_at is not None:
            return state._replace(
                next_seq=nxt,
                in_flight=None,
                retry=(True, index, event.attempt + 1, float(retry_at)),
            )
        # Out of attempts: the runner records saga_stuck in the same commit.
        error = str((event.detail or {}).get("error", "compensation failed"))
        return state._replace(next_seq=nxt, in_flight=None, retry=None, error=error)
    if kind is EventType.SAGA_COMPLETED:
        return state._replace(
            status=_moved(state, SagaStatus.COMPLETED), next_seq=nxt, in_flight=None
        )
    if kind is EventType.SAGA_COMPENSATED:
        return state._replace(
            status=_moved(state, SagaStatus.COMPENSATED), next_seq=nxt, in_flight=None
        )
    if kind is EventType.SAGA_RESOLVED:
        if state.status is not SagaStatus.STUCK:
            raise IllegalTransitionError("only a stuck execution can be resolved by hand")
        resolved = resolution_of(definition, state)
        return state._replace(status=_moved(state, resolved), next_seq=nxt, in_flight=None)
    if kind is EventType.SAGA_STUCK:
        return state._replace(
            status=_moved(state, SagaStatus.STUCK),
            next_seq=nxt,
            in_flight=None,
            retry=None,
            error=str((event.detail or {}).get("error", state.error)),
        )
    raise IllegalTransitionError(f"unknown event type {kind!r}")  # pragma: no cover


def replay(definition: SagaDefinition, events: list[Event]) -> SagaState:
    """Fold a stored event list into the state it describes."""
    state = SagaState()
    for event in events:
        state = apply(definition, state, event)
    return state


_COMPENSATION_OUTCOMES = frozenset(
    {EventType.COMPENSATION_SUCCEEDED, EventType.COMPENSATION_FAILED}
)
_OUTCOMES = _COMPENSATION_OUTCOMES | {EventType.STEP_SUCCEEDED, EventType.STEP_FAILED}


def pivot_in_doubt(definition: SagaDefinition, state: SagaState) -> bool:
    """True when a call to a step that cannot be compensated is in flight.

    Its effect may have happened and nothing could undo it, so the saga must
    not be turned back until a resume has learned the outcome.
    """
    if state.doubt is not None:
        return True  # the pivot's last attempt ended without an answer
    flight = state.in_flight
    return (
        flight is not None
        and not flight[0]
        and definition.steps[flight[1]].kind is not StepKind.COMPENSATABLE
    )


def resolution_of(definition: SagaDefinition, state: SagaState) -> SagaStatus:
    """The status a manual resolution gives a stuck execution.

    Stuck past its point of no return, the operator finished it by hand
    (completed); stuck while compensating, the operator undid the rest
    (compensated).
    """
    return SagaStatus.COMPLETED if forward_only(definition, state) else SagaStatus.COMPENSATED


def forward_only(definition: SagaDefinition, state: SagaState) -> bool:
    """True once the saga passed its point of no return and may only move forward.

    That is once a pivot (or any non-compensatable step) succeeded, or once the
    next step is retriable: retriable steps come only after the pivot or after
    every compensatable step, so the go/no-go decision has been made.
    """
    steps = definition.steps
    if any(steps[i].kind is not StepKind.COMPENSATABLE for i in state.succeeded):
        return True
    following = len(state.succeeded)
    return following < len(steps) and steps[following].kind is StepKind.RETRIABLE


@dataclass(frozen=True, slots=True)
class RunStep:
    """Call step `index`'s action; `record` says whether `started` must be logged first."""

    index: int
    attempt: int
    record: bool
    not_before: float = 0.0


@dataclass(frozen=True, slots=True)
class RunCompensation:
    """Call step `index`'s compensation; `record` as in :class:`RunStep`."""

    index: int
    attempt: int
    record: bool
    not_before: float = 0.0


@dataclass(frozen=True, slots=True)
class Finish:
    """Record the terminal event `event` (completed or compensated)."""

    event: EventType


@dataclass(frozen=True, slots=True)
class Abort:
    """Turn back: record a compensation request with `reason` (a deadline passed)."""

    reason: str


@dataclass(frozen=True, slots=True)
class Rest:
    """Nothing to do: the execution is terminal or stuck."""


Decision = RunStep | RunCompensation | Finish | Abort | Rest


def decide(definition: SagaDefinition, state: SagaState, now: float = 0.0) -> Decision:
    """Say what the runner must do next, given the folded state and the time."""
    status = state.status
    if status in TERMINAL_STATUSES or status is SagaStatus.STUCK:
        return Rest()
    if (
        state.deadline is not None
        and now > state.deadline
        and status is not SagaStatus.COMPENSATING
        and not forward_only(definition, state)
        and not pivot_in_doubt(definition, state)
    ):
        return Abort("the saga's deadline passed")
    if state.in_flight is not None:
        is_comp, index, attempt = state.in_flight
        if is_comp:
            return RunCompensation(index, attempt, record=False)
        return RunStep(index, attempt, record=False)
    if state.retry is not None:
        is_comp, index, attempt, not_before = state.retry
        if is_comp:
            return RunCompensation(index, attempt, record=True, not_before=not_before)
        return RunStep(index, attempt, record=True, not_before=not_before)
    if status is SagaStatus.COMPENSATING:
        done = set(state.compensated)
        for index in reversed(state.applied):
            if index not in done and definition.steps[index].kind is StepKind.COMPENSATABLE:
                return RunCompensation(index, 1, record=True)
        return Finish(EventType.SAGA_COMPENSATED)
    following = len(state.succeeded)
    if following < len(definition.steps):
        return RunStep(following, 1, record=True)
    return Finish(EventType.SAGA_COMPLETED)


def compensation_order(definition: SagaDefinition, events: list[Event]) -> list[str]:
    """Names of steps whose compensation succeeded, in the order it happened."""
    return [
        e.step for e in events if e.type is EventType.COMPENSATION_SUCCEEDED and e.step is not None
    ]
