"""The pure saga model: definitions, statuses, events and the state machine.

Nothing here does I/O. The runner feeds events through :func:`apply` and asks
:func:`decide` what to do next; replaying a stored event list through the same
functions rebuilds the exact state a crashed process had, which is what makes
resume work from the log alone.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import random
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from enum import Enum, StrEnum
from types import MappingProxyType
from typing import Any, Generic, NamedTuple

from typing_extensions import TypeVar

from saga_cli.errors import DefinitionError, IllegalTransitionError

P = TypeVar("P", default=Any)


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
class StepContext(Generic[P]):
    """What a step's action or compensation is given.

    Attributes:
        execution_id: id of the execution in the saga log.
        step: name of the step.
        key: idempotency key for this call; the same on every retry and resume.
            Pass it to the service so that a repeated call does nothing new.
        action_key: the key the step's action used; a compensation cancels
            what was done under it (for an action, the same as `key`).
        attempt: 1 for the first call of this action, 2 for the first retry, ...
        payload: the execution's input: an instance of the saga's payload
            model when it declares one, else the JSON object as stored.
        results: return values of the steps that succeeded so far, by name,
            as the log holds them (so the same after a crash and resume).
        compensating: True when this call is the step's compensation.
    """

    execution_id: str
    step: str
    key: str
    action_key: str
    attempt: int
    payload: P
    results: Mapping[str, Any]
    compensating: bool = False

    @property
    def result(self) -> Any:
        """What this step's action returned (for its compensation), or None."""
        return self.results.get(self.step)


StepFunction = Callable[[StepContext[Any]], Any]


def is_async(function: Any) -> bool:
    """Whether calling `function` gives a coroutine to await (an ``async def`` step)."""
    return inspect.iscoroutinefunction(function) or inspect.iscoroutinefunction(
        getattr(function, "__call__", None)  # noqa: B004  # an object with async __call__
    )


class Inherit(Enum):
    """The type of INHERIT."""

    INHERIT = "inherit"


# A step's timeout when it gives none: its saga's `step_timeout`, and failing
# that the engine's default. `timeout=None` (no limit) must be asked for.
INHERIT = Inherit.INHERIT

Timeout = float | None | Inherit


@dataclass(frozen=True, slots=True)
class Step:
    """One local transaction of a saga and the action that semantically undoes it."""

    name: str
    action: StepFunction
    compensation: StepFunction | None = None
    kind: StepKind = StepKind.COMPENSATABLE
    retry: RetryPolicy = NO_RETRY
    compensation_retry: RetryPolicy = DEFAULT_COMPENSATION_RETRY
    timeout: Timeout = INHERIT
    group: str | None = None


def valid_timeout(timeout: Timeout) -> bool:
    """Whether `timeout` is INHERIT, None (no limit) or a positive finite number of seconds."""
    if timeout is None or isinstance(timeout, Inherit):
        return True
    return isinstance(timeout, int | float) and 0 < timeout < math.inf


def shape_of(steps: tuple[Step, ...]) -> list[list[str | None]]:
    """What a definition version is made of: each step's name, kind and parallel group."""
    return [[s.name, s.kind.value, s.group] for s in steps]


def declared_timeout(step: Step, step_timeout: Timeout = INHERIT) -> float | None:
    """The seconds `step`'s calls may take as the code says: its own, else its saga's.

    None when neither says, or when the step asked for no limit (the engine's
    default applies in the first case; ``saga definitions`` shows both blank).
    """
    for timeout in (step.timeout, step_timeout):
        if not isinstance(timeout, Inherit):
            return timeout
    return None


def policies_of(step: Step, step_timeout: Timeout = INHERIT) -> dict[str, Any]:
    """A step's retry policies and timeout as JSON (``saga definitions`` shows them)."""
    return {
        "retry": asdict(step.retry),
        "compensation_retry": asdict(step.compensation_retry) if step.compensation else None,
        "timeout": declared_timeout(step, step_timeout),
    }


def recorded_steps(steps: tuple[Step, ...], step_timeout: Timeout = INHERIT) -> list[list[Any]]:
    """What the log records of a definition version: each step's shape, then its policies.

    The shape (see shape_of) makes the version; the policies ride along so that
    ``saga definitions`` shows them without the saga's code. They are not part
    of the version (they may change without a new one), so the log keeps those
    of the version's first execution.
    """
    return [
        [*shape, policies_of(step, step_timeout)]
        for shape, step in zip(shape_of(steps), steps, strict=True)
    ]


def definition_changes(old: list[list[str | None]], new: list[list[str | None]]) -> list[str]:
    """What makes `new` unable to continue an execution started under `old` (empty: nothing).

    Compatible: the old steps are kept in the same order, with the same kinds
    and groups, and new steps may follow them. Anything else would make the
    log name steps out of place (a removed or reordered step, a step that
    became the pivot), so resuming under `new` could skip or repeat work.
    """
    changes: list[str] = []
    old_names = [s[0] for s in old]
    new_names = [s[0] for s in new]
    removed = [n for n in old_names if n not in new_names]
    if removed:
        changes.append(f"step(s) removed: {', '.join(str(n) for n in removed)}")
    kept = [n for n in new_names if n in old_names]
    if kept != [n for n in old_names if n in new_names]:
        changes.append(
            f"steps reordered (was {' > '.join(map(str, old_names))}, "
            f"now {' > '.join(map(str, new_names))})"
        )
    elif new_names[: len(kept)] != kept:
        inserted = [n for n in new_names[: new_names.index(kept[-1]) + 1] if n not in old_names]
        changes.append(f"step(s) inserted before old ones: {', '.join(map(str, inserted))}")
    was = {s[0]: s for s in old}
    for step in new:
        before = was.get(step[0])
        if before is not None and before[1] != step[1]:
            changes.append(f"step {step[0]!r} changed from {before[1]} to {step[1]}")
        elif before is not None and before[2] != step[2]:
            changes.append(f"step {step[0]!r} moved between parallel groups")
    return changes


@dataclass(frozen=True, slots=True)
class SagaDefinition:
    """An ordered list of steps, validated when built.

    Consecutive steps that share a `group` form a parallel group: they run
    concurrently, and so do their compensations.

    Attributes:
        name: the saga's name, stored with each execution.
        steps: the steps in order.
        payload: a pydantic model (a SQLModel works) that validates the input
            of each new execution; steps then receive an instance of it.
        concurrency_key: computes a key from the validated payload; executions
            with the same key never run at the same time.
        description: one line for ``saga definitions``.
        source: where the code was loaded from (``file.py:attr`` or
            ``module:attr``), so a resume can load it again.
        precondition: called with an execution's stored payload before this
            process resumes, compensates or claims it; it raises a SagaError
            when this process cannot drive it (its environment differs).
        step_timeout: seconds any step's call may take when the step gives
            no timeout of its own (INHERIT: the engine's default; None: no limit).
        version: a hash of the steps' names, kinds and groups (computed): a
            resume under a different version is checked for compatibility.

    Raises:
        DefinitionError: names repeat, a compensatable step lacks a compensation,
            the kinds are out of order (compensatable* pivot? retriable*), or a
            parallel group is split, mixes kinds or holds the pivot.
    """

    name: str
    steps: tuple[Step, ...]
    payload: type[Any] | None = field(default=None, compare=False)
    concurrency_key: Callable[[Any], str] | None = field(default=None, compare=False)
    description: str = field(default="", compare=False)
    source: str | None = field(default=None, compare=False)
    precondition: Callable[[Mapping[str, Any]], None] | None = field(default=None, compare=False)
    step_timeout: Timeout = field(default=INHERIT, compare=False)
    index: Mapping[str, int] = field(init=False, repr=False, compare=False)
    spans: tuple[tuple[int, int], ...] = field(init=False, repr=False, compare=False)
    version: str = field(init=False, repr=False, compare=False)

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
            if not valid_timeout(step.timeout):
                raise DefinitionError(
                    f"saga {self.name!r}: step {step.name!r} has timeout {step.timeout}; "
                    "give a positive number of seconds or None"
                )
        if not valid_timeout(self.step_timeout):
            raise DefinitionError(
                f"saga {self.name!r} has step_timeout {self.step_timeout}; "
                "give a positive number of seconds or None"
            )
        object.__setattr__(self, "index", {n: i for i, n in enumerate(names)})
        object.__setattr__(self, "spans", _group_spans(self.name, self.steps))
        digest = hashlib.sha256(json.dumps(shape_of(self.steps)).encode()).hexdigest()
        object.__setattr__(self, "version", digest[:12])

    @property
    def step_names(self) -> tuple[str, ...]:
        """Names of the steps, in order."""
        return tuple(s.name for s in self.steps)

    def members(self, index: int) -> range:
        """Indices of the steps that run together with step `index` (itself alone if ungrouped)."""
        return range(*self.spans[index])


def _group_spans(saga: str, steps: tuple[Step, ...]) -> tuple[tuple[int, int], ...]:
    """Per step, the [start, end) of its parallel group; validates the groups."""
    spans: list[tuple[int, int]] = []
    start = 0
    closed: set[str] = set()
    while start < len(steps):
        group = steps[start].group
        end = start + 1
        while group is not None and end < len(steps) and steps[end].group == group:
            end += 1
        if group is not None:
            if group in closed:
                raise DefinitionError(
                    f"saga {saga!r}: the steps of parallel group {group!r} must be consecutive"
                )
            closed.add(group)
            kinds = {steps[i].kind for i in range(start, end)}
            if end - start > 1 and (StepKind.PIVOT in kinds or len(kinds) > 1):
                raise DefinitionError(
                    f"saga {saga!r}: parallel group {group!r} must be all compensatable or "
                    "all retriable steps (the pivot runs alone)"
                )
        spans.extend([(start, end)] * (end - start))
        start = end
    return tuple(spans)


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
        succeeded: indices of forward steps that succeeded, in the order
            their outcomes were recorded.
        applied: indices of forward steps whose effect may exist, in order:
            the succeeded ones plus any whose outcome is unknown (a step cut
            short by `saga compensate`); these are what gets compensated.
        compensated: indices of steps whose compensation succeeded, in order.
        in_flight: (is_compensation, index, attempt) of each call whose
            `started` record is durable and whose outcome is not (several
            for a parallel group).
        retry: (is_compensation, index, next_attempt, not_before) of each
            failed attempt that will be retried.
        gave_up: (is_compensation, index, attempts, error) of each call out
            of attempts whose saga cannot go on; once the rest of its parallel
            group has answered, the execution is recorded stuck with them all.
        results: step results by name.
        error: the failure that sent the saga backwards, if any.
        deadline: epoch seconds past which an execution that has not reached
            its point of no return is compensated, if one was set.
        doubt: index of a pivot whose last attempt failed without an answer
            (a timeout): it may have happened, so a resume re-runs it (same
            key) to learn the outcome instead of compensating.
        turning_back: a member of a parallel group failed for good while
            siblings were still answering; the saga turns back on the last answer.
        trace: the trace context (W3C traceparent) recorded when the execution
            started, opaque here: every process that drives it continues that trace.
        cause: the first failure that sent the saga backwards, kept when a
            compensation that gave up replaces `error`: a stuck execution
            resumed to rest reports why it turned back, not the old error.
    """

    status: SagaStatus = SagaStatus.PENDING
    next_seq: int = 1
    succeeded: tuple[int, ...] = ()
    applied: tuple[int, ...] = ()
    compensated: tuple[int, ...] = ()
    in_flight: tuple[tuple[bool, int, int], ...] = ()
    retry: tuple[tuple[bool, int, int, float], ...] = ()
    gave_up: tuple[tuple[bool, int, int, str], ...] = ()
    results: Mapping[str, Any] = MappingProxyType({})
    error: str | None = None
    deadline: float | None = None
    doubt: int | None = None
    turning_back: bool = False
    trace: str | None = None
    cause: str | None = None

    @property
    def current_step(self) -> int | None:
        """Index of the step being run or compensated, for the execution row."""
        if self.in_flight:
            return self.in_flight[0][1]
        if self.retry:
            return self.retry[0][1]
        return None


def _moved(state: SagaState, status: SagaStatus) -> SagaStatus:
    if status is state.status:
        return status
    if status not in ALLOWED_TRANSITIONS[state.status]:
        raise IllegalTransitionError(f"cannot go from {state.status.value} to {status.value}")
    return status


def _without(calls: tuple[Any, ...], compensating: bool, index: int) -> tuple[Any, ...]:
    """`calls` (in_flight or retry entries) less the one for (compensating, index)."""
    if len(calls) == 1:  # the common, sequential case
        entry = calls[0]
        return () if entry[0] is compensating and entry[1] == index else calls
    return tuple(c for c in calls if not (c[0] is compensating and c[1] == index))


def _gave_up_message(definition: SagaDefinition, state: SagaState) -> str:
    """One line naming every call that gave up, for the saga_stuck record."""
    parts = []
    for compensating, index, attempts, error in state.gave_up:
        step = definition.steps[index]
        why = "compensation" if compensating else f"{step.kind.value} step"
        parts.append(f"{why} {step.name!r} gave up after {attempts} attempt(s): {error}")
    return "; ".join(parts)


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
        if expected not in state.in_flight:
            raise IllegalTransitionError(
                f"event {event.seq} ({kind.value} of {event.step!r}, attempt {event.attempt}) "
                "answers no call in flight"
            )
    nxt = max(state.next_seq, event.seq + 1)
    if kind is EventType.SAGA_STARTED:
        detail = event.detail or {}
        deadline = detail.get("deadline_at")
        return state._replace(
            next_seq=nxt,
            deadline=None if deadline is None else float(deadline),
            trace=detail.get("traceparent"),
        )
    if kind is EventType.SAGA_RESUMED:
        if state.status is not SagaStatus.STUCK:
            return state._replace(next_seq=nxt)
        # A stuck execution gets a fresh round: forward if it passed its
        # pivot (it can only move forward), otherwise back to compensating.
        forward = forward_only(definition, state) or state.doubt is not None
        back = SagaStatus.RUNNING if forward else SagaStatus.COMPENSATING
        return state._replace(
            status=_moved(state, back), next_seq=nxt, gave_up=(), error=state.cause
        )
    if kind is EventType.STEP_STARTED:
        status = _moved(state, SagaStatus.RUNNING)
        return state._replace(
            status=status,
            next_seq=nxt,
            in_flight=(*state.in_flight, (False, index, event.attempt)),
            retry=_without(state.retry, False, index) if state.retry else (),
        )
    if kind is EventType.STEP_SUCCEEDED:
        result = (event.detail or {}).get("result")
        state = state._replace(
            next_seq=nxt,
            in_flight=_without(state.in_flight, False, index),
            succeeded=(*state.succeeded, index),
            applied=(*state.applied, index),
            results={**state.results, definition.steps[index].name: result},
            doubt=None,
        )
        return _after_answer(state, nxt) if state.turning_back else state
    if kind is EventType.STEP_FAILED:
        return _step_failed(definition, state, event, index, nxt)
    if kind is EventType.COMPENSATION_REQUESTED:
        if forward_only(definition, state):
            raise IllegalTransitionError("the saga passed its pivot; it can only move forward")
        if pivot_in_doubt(definition, state):
            raise IllegalTransitionError(
                "the pivot's outcome is unknown; resume the execution to learn it"
            )
        reason = str((event.detail or {}).get("reason", "compensation requested"))
        return _turned_back(state, nxt, state.error or reason)
    if kind is EventType.COMPENSATION_STARTED:
        status = _moved(state, SagaStatus.COMPENSATING)
        return state._replace(
            status=status,
            next_seq=nxt,
            in_flight=(*state.in_flight, (True, index, event.attempt)),
            retry=_without(state.retry, True, index) if state.retry else (),
        )
    if kind is EventType.COMPENSATION_SUCCEEDED:
        return state._replace(
            next_seq=nxt,
            in_flight=_without(state.in_flight, True, index),
            compensated=(*state.compensated, index),
        )
    if kind is EventType.COMPENSATION_FAILED:
        detail = event.detail or {}
        in_flight = _without(state.in_flight, True, index)
        retry_at = detail.get("retry_at")
        if retry_at is not None:
            entry = (True, index, event.attempt + 1, float(retry_at))
            return state._replace(next_seq=nxt, in_flight=in_flight, retry=(*state.retry, entry))
        # Out of attempts: once the rest of its group answered, the saga is stuck.
        error = str(detail.get("error", "compensation failed"))
        return state._replace(
            next_seq=nxt,
            in_flight=in_flight,
            gave_up=(*state.gave_up, (True, index, event.attempt, error)),
            error=error,
        )
    if kind is EventType.SAGA_COMPLETED:
        return state._replace(
            status=_moved(state, SagaStatus.COMPLETED), next_seq=nxt, in_flight=()
        )
    if kind is EventType.SAGA_COMPENSATED:
        return state._replace(
            status=_moved(state, SagaStatus.COMPENSATED), next_seq=nxt, in_flight=()
        )
    if kind is EventType.SAGA_RESOLVED:
        if state.status is not SagaStatus.STUCK:
            raise IllegalTransitionError("only a stuck execution can be resolved by hand")
        resolved = resolution_of(definition, state)
        return state._replace(status=_moved(state, resolved), next_seq=nxt, in_flight=())
    if kind is EventType.SAGA_STUCK:
        return state._replace(
            status=_moved(state, SagaStatus.STUCK),
            next_seq=nxt,
            in_flight=(),
            retry=(),
            gave_up=(),
            error=str((event.detail or {}).get("error", state.error)),
        )
    raise IllegalTransitionError(f"unknown event type {kind!r}")  # pragma: no cover


def _step_failed(
    definition: SagaDefinition, state: SagaState, event: Event, index: int, nxt: int
) -> SagaState:
    """The state after a forward step's failure (retried, given up, or turning back)."""
    detail = event.detail or {}
    in_flight = _without(state.in_flight, False, index)
    retry_at = detail.get("retry_at")
    if retry_at is not None:
        entry = (False, index, event.attempt + 1, float(retry_at))
        state = state._replace(next_seq=nxt, in_flight=in_flight, retry=(*state.retry, entry))
        return _after_answer(state, nxt) if state.turning_back else state
    uncertain = bool(detail.get("uncertain"))
    kind_of_step = definition.steps[index].kind
    error = str(detail.get("error", "failed"))
    if uncertain and kind_of_step is StepKind.PIVOT:
        # A pivot that may have happened and cannot be undone: the runner
        # records saga_stuck in the same commit and a resume re-asks.
        return state._replace(next_seq=nxt, in_flight=in_flight, retry=(), error=error, doubt=index)
    if forward_only(definition, state):
        # Forward-only territory: nothing is compensated; once the rest of
        # its group answered, the saga is stuck and an operator decides.
        return state._replace(
            next_seq=nxt,
            in_flight=in_flight,
            gave_up=(*state.gave_up, (False, index, event.attempt, error)),
            error=error,
            doubt=None,
        )
    state = state._replace(in_flight=in_flight, doubt=None)  # a refusal is an answer
    if uncertain and kind_of_step is StepKind.COMPENSATABLE:
        # Failed with something other than a business refusal (a timeout,
        # a lost connection): the effect may exist, so it is compensated
        # too. Compensations must tolerate an action that never happened.
        state = state._replace(applied=(*state.applied, index))
    first_error = state.error if state.turning_back and state.error else error
    if any(not compensating for compensating, _i, _a in in_flight):
        # Siblings in its parallel group are still answering (their outcomes
        # follow in the same commit): turn back once the last has answered,
        # so that every outcome is recorded against its own call.
        return state._replace(next_seq=nxt, error=first_error, turning_back=True)
    return _turned_back(state, nxt, first_error)


def _after_answer(state: SagaState, nxt: int) -> SagaState:
    """Turn back if a sibling's failure was waiting for this, the group's last answer."""
    if state.turning_back and not any(not c for c, _i, _a in state.in_flight):
        return _turned_back(state, nxt, state.error or "failed")
    return state


def _turned_back(state: SagaState, nxt: int, error: str) -> SagaState:
    """The state once the saga turns back to compensating.

    A step still in flight (cut short by `saga compensate`, or a sibling in
    its parallel group) may have taken effect: it is compensated too. Retries
    waiting are dropped: their failed attempts were answers, not unknowns.
    """
    applied = state.applied
    for compensating, index, _attempt in state.in_flight:
        if not compensating:
            applied = (*applied, index)
    return state._replace(
        status=_moved(state, SagaStatus.COMPENSATING),
        next_seq=nxt,
        in_flight=(),
        retry=(),
        applied=applied,
        error=error,
        turning_back=False,
        cause=state.cause or error,
    )


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
    return any(
        not compensating and definition.steps[index].kind is not StepKind.COMPENSATABLE
        for compensating, index, _attempt in state.in_flight
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
class Calls:
    """Make these calls, concurrently when there are several (a parallel group).

    A call whose `not_before` lies ahead is waited for (a retry backing off).
    """

    calls: tuple[RunStep | RunCompensation, ...]


@dataclass(frozen=True, slots=True)
class Finish:
    """Record the terminal event `event` (completed or compensated)."""

    event: EventType


@dataclass(frozen=True, slots=True)
class Abort:
    """Turn back: record a compensation request with `reason` (a deadline passed)."""

    reason: str


@dataclass(frozen=True, slots=True)
class Halt:
    """Record the execution stuck: calls gave up and nothing else can run.

    `index` and `attempt` name the first call that gave up; `error` all of them.
    """

    error: str
    index: int
    attempt: int


@dataclass(frozen=True, slots=True)
class Rest:
    """Nothing to do: the execution is terminal or stuck."""


Decision = Calls | Finish | Abort | Halt | Rest


def _call(compensating: bool, index: int, attempt: int, record: bool, not_before: float) -> Any:
    kind = RunCompensation if compensating else RunStep
    return kind(index, attempt, record, not_before)


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
    if state.in_flight or state.retry:
        # Calls begun and not answered (a crash) are repeated under the same
        # key; retries wait for their time. A group's other members that
        # already answered are not called again.
        calls = [_call(c, i, a, False, 0.0) for c, i, a in state.in_flight]
        calls += [_call(c, i, a, True, t) for c, i, a, t in state.retry]
        return Calls(tuple(calls))
    if state.gave_up:
        _compensating, index, attempts, _error = state.gave_up[0]
        return Halt(_gave_up_message(definition, state), index, attempts)
    steps = definition.steps
    if status is SagaStatus.COMPENSATING:
        done = state.compensated
        for index in reversed(state.applied):
            if index not in done and steps[index].kind is StepKind.COMPENSATABLE:
                group = definition.members(index)
                if len(group) == 1:
                    return Calls((RunCompensation(index, 1, record=True),))
                # The whole group's applied members are compensated together.
                return Calls(
                    tuple(
                        RunCompensation(i, 1, record=True)
                        for i in group
                        if i in state.applied and i not in done
                    )
                )
        return Finish(EventType.SAGA_COMPENSATED)
    following = len(state.succeeded)
    if following < len(steps):
        group = definition.members(following)
        if len(group) == 1:
            return Calls((RunStep(following, 1, record=True),))
        return Calls(tuple(RunStep(i, 1, record=True) for i in group if i not in state.succeeded))
    return Finish(EventType.SAGA_COMPLETED)


def compensation_order(definition: SagaDefinition, events: list[Event]) -> list[str]:
    """Names of steps whose compensation succeeded, in the order it happened."""
    return [
        e.step for e in events if e.type is EventType.COMPENSATION_SUCCEEDED and e.step is not None
    ]
