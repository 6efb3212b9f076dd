"""The orchestrator: drives one execution at a time against the saga log.

The write-ahead rule is kept in one place, :meth:`SagaRunner._drive`: a
participant is called only after its ``started`` record has committed, and
its outcome is recorded after it returns. To keep commits few, an outcome and
the next ``started`` record share one transaction; a participant's own writes
never share a transaction with the log.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from saga_cli import lease
from saga_cli.domain import (
    Event,
    EventType,
    Finish,
    Rest,
    RunCompensation,
    SagaDefinition,
    SagaState,
    SagaStatus,
    Step,
    StepContext,
    StepKind,
    apply,
    decide,
    forward_only,
    is_terminal,
    pivot_in_doubt,
    replay,
)
from saga_cli.errors import (
    BusinessError,
    ExecutionBusyError,
    InvalidInputError,
    UnknownSagaError,
)
from saga_cli.store import ExecutionRecord, SagaStore, Transition

log = logging.getLogger(__name__)
# Results are stored leniently (a datetime becomes its str()); a payload must
# be plain JSON, since the user typed it and expects it back as given.
_encode = json.JSONEncoder(separators=(",", ":"), default=str).encode
_encode_payload = json.JSONEncoder(separators=(",", ":")).encode

EventListener = Callable[[str, Event], None]
DefinitionLookup = Callable[[str], SagaDefinition]


@dataclass(frozen=True, slots=True)
class Outcome:
    """Where an execution stands after the runner let go of it."""

    execution_id: str
    saga: str
    status: SagaStatus
    error: str | None = None
    results: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RecoveryReport:
    """What ``resume --all`` did."""

    outcomes: list[Outcome]
    busy: list[str]


def registry(*definitions: SagaDefinition) -> DefinitionLookup:
    """A lookup of definitions by saga name, for :class:`SagaRunner`."""
    known = {d.name: d for d in definitions}

    def lookup(name: str) -> SagaDefinition:
        try:
            return known[name]
        except KeyError:
            raise UnknownSagaError(
                f"no definition of saga {name!r} is loaded (known: {', '.join(sorted(known))})"
            ) from None

    return lookup


def new_execution_id() -> str:
    """A random 32-hex-digit id; random so that short prefixes stay unique."""
    return uuid.uuid4().hex


class _Run:
    """Mutable bookkeeping of one execution while this process drives it."""

    __slots__ = (
        "definition",
        "id",
        "payload",
        "payload_json",
        "state",
        "version",
        "created",
        "step_name",
    )

    def __init__(
        self,
        definition: SagaDefinition,
        execution_id: str,
        payload: Mapping[str, Any],
        state: SagaState,
        version: int,
        created: bool,
    ) -> None:
        self.definition = definition
        self.id = execution_id
        self.payload = payload
        self.payload_json = ""
        self.state = state
        self.version = version
        self.created = created
        self.step_name: str | None = None


class SagaRunner:
    """Runs, resumes and compensates executions of saga definitions.

    Args:
        store: the saga log.
        definitions: finds a definition by saga name (see :func:`registry`).
        lease_seconds: how long a claim lasts without a new write.
        on_event: called with (execution id, event) once each event is durable.
        clock, sleep, rng: injectable for tests.
    """

    def __init__(
        self,
        store: SagaStore,
        definitions: DefinitionLookup,
        *,
        lease_seconds: float = lease.DEFAULT_LEASE_SECONDS,
        on_event: EventListener | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.definitions = definitions
        self.lease_seconds = lease_seconds
        self.on_event = on_event
        self.clock = clock
        self.sleep = sleep
        self.rng = rng or random.Random()
        self.owner = lease.current_owner()
        self._active: set[str] = set()
        self._active_lock = threading.Lock()

    # -- public entry points -------------------------------------------------

    def run(
        self,
        definition: SagaDefinition,
        payload: Mapping[str, Any],
        *,
        execution_id: str | None = None,
    ) -> Outcome:
        """Start a new execution of `definition` and drive it to rest.

        Returns:
            The outcome: completed, compensated or stuck.
        """
        try:
            payload_json = _encode_payload(payload)
            if not isinstance(payload, Mapping):
                raise TypeError(f"expected an object, got {type(payload).__name__}")
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(
                f"the payload cannot be stored as a JSON object: {exc}"
            ) from None
        execution_id = execution_id or new_execution_id()
        self._enter(execution_id)
        # Steps see the payload as stored, so a resumed run sees the same values.
        stored = json.loads(payload_json)
        run = _Run(definition, execution_id, stored, SagaState(), 0, False)
        run.payload_json = payload_json
        first = Event(seq=1, type=EventType.SAGA_STARTED, at=self.clock())
        run.state = apply(definition, run.state, first)
        return self._drive(run, [first])

    def resume(self, execution_id: str) -> Outcome:
        """Continue an interrupted (or stuck) execution from its log.

        A step whose ``started`` record has no outcome is called again with the
        same idempotency key. A completed or compensated execution is left as it is.

        Raises:
            ExecutionBusyError: another live process holds the lease.
            UnknownSagaError: the execution's saga is not loaded.
        """
        return self._resume(self.store.get(execution_id))

    def _resume(self, record: ExecutionRecord) -> Outcome:
        if is_terminal(record.status):
            return Outcome(record.id, record.saga, record.status)
        definition = self.definitions(record.saga)
        run = self._claim(record, definition, EventType.SAGA_RESUMED, None)
        return self._drive(run, [])

    def compensate(self, execution_id: str, reason: str = "requested by operator") -> Outcome:
        """Abort a non-terminal execution by backward recovery.

        Raises:
            InvalidInputError: the execution completed or passed its pivot.
            ExecutionBusyError: another live process holds the lease.
        """
        record = self.store.get(execution_id)
        if record.status is SagaStatus.COMPENSATED:
            return Outcome(record.id, record.saga, record.status)
        if record.status is SagaStatus.COMPLETED:
            raise InvalidInputError(f"execution {execution_id} completed; it cannot be compensated")
        definition = self.definitions(record.saga)
        state = replay(definition, self.store.events(record.id))
        if forward_only(definition, state):
            raise InvalidInputError(
                f"execution {execution_id} passed its pivot; it can only move forward "
                "(use `saga resume`)"
            )
        if pivot_in_doubt(definition, state):
            raise InvalidInputError(
                f"execution {execution_id} was cut short inside its pivot step, whose effect "
                "cannot be undone; `saga resume` it to learn the outcome"
            )
        if state.status in (SagaStatus.COMPENSATING, SagaStatus.STUCK):
            run = self._claim(record, definition, EventType.SAGA_RESUMED, None, state)
            return self._drive(run, [])
        run = self._claim(
            record, definition, EventType.COMPENSATION_REQUESTED, {"reason": reason}, state
        )
        return self._drive(run, [])

    def resume_all(
        self, *, concurrency: int = 1, progress: Callable[[Outcome], None] | None = None
    ) -> RecoveryReport:
        """Resume every interrupted execution (pending, running or compensating, no live owner).

        Args:
            concurrency: executions resumed at once (threads; their log
                writes are group-committed).
            progress: called after each resumed execution.

        Executions owned by another live process are skipped and reported as busy.
        """
        if concurrency < 1:
            raise InvalidInputError(f"concurrency must be at least 1 (got {concurrency})")
        now = self.clock()
        todo: list[ExecutionRecord] = []
        busy: list[str] = []
        for record in self.store.unfinished():
            if record.owner != self.owner and lease.holds_lease(record, now):
                busy.append(record.id)
            else:
                todo.append(record)

        def one(record: ExecutionRecord) -> Outcome | None:
            try:
                outcome = self._resume(record)
            except ExecutionBusyError:
                busy.append(record.id)  # list.append is atomic under the GIL
                return None
            if progress is not None:
                progress(outcome)
            return outcome

        if concurrency == 1:
            results = [one(record) for record in todo]
        else:
            with ThreadPoolExecutor(concurrency, thread_name_prefix="saga-resume") as pool:
                results = list(pool.map(one, todo))
        return RecoveryReport([o for o in results if o is not None], busy)

    # -- the engine ------------------------------------------------------------

    def _claim(
        self,
        record: ExecutionRecord,
        definition: SagaDefinition,
        kind: EventType,
        detail: Mapping[str, Any] | None,
        state: SagaState | None = None,
    ) -> _Run:
        now = self.clock()
        if record.owner not in (None, self.owner) and lease.holds_lease(record, now):
            raise ExecutionBusyError(
                f"execution {record.id} is being run by {record.owner} (lease held for another "
                f"{record.lease_expires_at - now if record.lease_expires_at else 0:.0f}s); "
                "try again when it finishes"
            )
        self._enter(record.id)
        try:
            if state is None:
                state = replay(definition, self.store.events(record.id))
            event = Event(seq=state.next_seq, type=kind, detail=detail, at=now)
            version = self.store.claim(
                record.id, record.version, self.owner, now + self.lease_seconds, event, now
            )
        except BaseException:
            self._leave(record.id)
            raise
        self._notify(record.id, [event])
        run = _Run(definition, record.id, json.loads(record.payload), state, version, True)
        run.state = apply(definition, state, event)
        run.step_name = record.step
        return run

    def _flush(self, run: _Run, events: list[Event]) -> None:
        """Make `events` durable together with the row's new projection."""
        state = run.state
        now = self.clock()
        current = state.current_step
        if current is not None:
            run.step_name = run.definition.steps[current].name
        resting = is_terminal(state.status) or state.status is SagaStatus.STUCK
        owner = None if resting else self.owner
        lease_until = None if resting else now + self.lease_seconds
        if not run.created:
            self.store.create(
                ExecutionRecord(
                    id=run.id,
                    saga=run.definition.name,
                    payload=run.payload_json,
                    status=state.status,
                    step=run.step_name,
                    created_at=events[0].at,
                    updated_at=now,
                    owner=owner,
                    lease_expires_at=lease_until,
                    version=1,
                ),
                events,
            )
            run.created = True
            run.version = 1
        else:
            run.version = self.store.append(
                Transition(
                    run.id,
                    run.version,
                    events,
                    state.status,
                    run.step_name,
                    owner,
                    lease_until,
                    now,
                )
            )
        self._notify(run.id, events)
        events.clear()

    def _notify(self, execution_id: str, events: list[Event]) -> None:
        if self.on_event is None:
            return
        for event in events:
            try:
                self.on_event(execution_id, event)
            except Exception:  # a broken display must not break a saga
                log.exception("event listener failed on %s", event.type.value)

    def _record(
        self,
        run: _Run,
        pending: list[Event],
        kind: EventType,
        step: str | None,
        attempt: int = 0,
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        event = Event(run.state.next_seq, kind, step, attempt, detail, self.clock())
        run.state = apply(run.definition, run.state, event)
        pending.append(event)

    def _enter(self, execution_id: str) -> None:
        """Mark an execution as driven by this runner; refuse a second driver in-process.

        Leases exclude other processes; threads of this one share the owner id,
        so they are excluded here.
        """
        with self._active_lock:
            if execution_id in self._active:
                raise ExecutionBusyError(
                    f"execution {execution_id} is already being run by this process"
                )
            self._active.add(execution_id)

    def _leave(self, execution_id: str) -> None:
        with self._active_lock:
            self._active.discard(execution_id)

    def _drive(self, run: _Run, pending: list[Event]) -> Outcome:
        """Run `run` until it is completed, compensated or stuck."""
        try:
            return self._drive_to_rest(run, pending)
        finally:
            self._leave(run.id)

    def _drive_to_rest(self, run: _Run, pending: list[Event]) -> Outcome:
        definition = run.definition
        while True:
            decision = decide(definition, run.state)
            if isinstance(decision, Rest):
                if pending:
                    self._flush(run, pending)
                state = run.state
                return Outcome(run.id, definition.name, state.status, state.error, state.results)
            if isinstance(decision, Finish):
                self._record(run, pending, decision.event, None)
                self._flush(run, pending)
                continue
            compensating = isinstance(decision, RunCompensation)
            step = definition.steps[decision.index]
            if decision.record:
                wait = decision.not_before - self.clock()
                if wait > 0:
                    if pending:
                        self._flush(run, pending)
                    self.sleep(wait)
                started = EventType.COMPENSATION_STARTED if compensating else EventType.STEP_STARTED
                self._record(run, pending, started, step.name, decision.attempt)
            if pending:
                self._flush(run, pending)  # the write-ahead rule: durable before the call
            self._call(run, pending, step, decision.attempt, compensating)

    def _call(
        self, run: _Run, pending: list[Event], step: Step, attempt: int, compensating: bool
    ) -> None:
        action_key = f"{run.id}:{step.name}"
        function = step.action
        key = action_key
        policy = step.retry
        if compensating:
            assert step.compensation is not None  # guaranteed by the definition's validation
            function = step.compensation
            key = f"{action_key}:compensate"
            policy = step.compensation_retry
        context = StepContext(
            run.id, step.name, key, action_key, attempt, run.payload, run.state.results
        )
        try:
            result = function(context)
        except Exception as exc:
            self._failed(run, pending, step, attempt, compensating, exc, policy.max_attempts)
            return
        if compensating:
            self._record(run, pending, EventType.COMPENSATION_SUCCEEDED, step.name, attempt)
        else:
            # Keep what the log will hold, so later steps see the same values
            # whether or not the execution is resumed in between.
            if result is not None and not isinstance(result, str | int | float | bool):
                result = json.loads(_encode(result))
            self._record(
                run, pending, EventType.STEP_SUCCEEDED, step.name, attempt, {"result": result}
            )

    def _failed(
        self,
        run: _Run,
        pending: list[Event],
        step: Step,
        attempt: int,
        compensating: bool,
        exc: Exception,
        max_attempts: int,
    ) -> None:
        error = str(exc) or type(exc).__name__
        detail: dict[str, Any] = {"error": error, "kind": type(exc).__name__}
        business = isinstance(exc, BusinessError) and not compensating
        policy = step.compensation_retry if compensating else step.retry
        if not business and attempt < max_attempts:
            detail["retry_at"] = self.clock() + policy.delay_before(attempt + 1, self.rng)
        elif not business and not compensating:
            detail["uncertain"] = True  # the effect may exist: compensate it too
        failed = EventType.COMPENSATION_FAILED if compensating else EventType.STEP_FAILED
        self._record(run, pending, failed, step.name, attempt, detail)
        if "retry_at" in detail:
            return
        uncertain_pivot = "uncertain" in detail and step.kind is StepKind.PIVOT
        if compensating or uncertain_pivot or forward_only(run.definition, run.state):
            why = "compensation" if compensating else f"{step.kind.value} step"
            self._record(
                run,
                pending,
                EventType.SAGA_STUCK,
                step.name,
                attempt,
                {"error": f"{why} {step.name!r} gave up after {attempt} attempt(s): {error}"},
            )
