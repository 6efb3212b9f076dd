"""The orchestrator: drives one execution at a time against the saga log.

The write-ahead rule is kept in one place, :meth:`SagaRunner._drive`: a
participant is called only after its ``started`` record has committed, and
its outcome is recorded after it returns. To keep commits few, an outcome and
the next ``started`` record share one transaction; a participant's own writes
never share a transaction with the log.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from saga_cli import lease
from saga_cli.domain import (
    Abort,
    Calls,
    Event,
    EventType,
    Finish,
    Rest,
    RunCompensation,
    RunStep,
    SagaDefinition,
    SagaState,
    SagaStatus,
    Step,
    StepContext,
    StepFunction,
    StepKind,
    apply,
    decide,
    definition_changes,
    forward_only,
    is_terminal,
    pivot_in_doubt,
    recorded_steps,
    replay,
    resolution_of,
    shape_of,
)
from saga_cli.errors import (
    BusinessError,
    ConcurrencyKeyBusyError,
    DefinitionChangedError,
    ExecutionBusyError,
    InvalidInputError,
    NotSentError,
    SagaError,
    StepTimeoutError,
    UnknownSagaError,
)
from saga_cli.saga import SagaLike, as_definition
from saga_cli.store import (
    Claim,
    Creation,
    DefinitionRecord,
    ExecutionRecord,
    SagaStore,
    Transition,
)

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
    failed: dict[str, str] = field(default_factory=dict)


def registry(*definitions: SagaLike) -> DefinitionLookup:
    """A lookup of definitions (or :class:`~saga_cli.saga.Saga` objects) by saga name."""
    known = {d.name: d for d in map(as_definition, definitions)}

    def lookup(name: str) -> SagaDefinition:
        try:
            return known[name]
        except KeyError:
            raise UnknownSagaError(
                f"no definition of saga {name!r} is loaded (known: {', '.join(sorted(known))})"
            ) from None

    return lookup


def concurrency_key_of(definition: SagaDefinition, payload: Any) -> str | None:
    """The execution's concurrency key, computed by the definition from its payload.

    Raises:
        InvalidInputError: the key function failed or returned something other
            than a non-empty string.
    """
    compute = definition.concurrency_key
    if compute is None:
        return None
    try:
        key = compute(payload)
    except Exception as exc:
        raise InvalidInputError(
            f"saga {definition.name!r} could not compute the concurrency key of this payload: "
            f"{exc or type(exc).__name__}"
        ) from None
    if not isinstance(key, str) or not key or len(key) > 300:
        raise InvalidInputError(
            f"saga {definition.name!r}: the concurrency key must be a string of 1 to 300 "
            f"characters, got {key!r:.60}"
        )
    return key


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
        "key",
        "_typed",
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
        self.key: str | None = None
        self._typed: Any = None

    def typed_payload(self) -> Any:
        """The payload as steps see it: an instance of the saga's model, if it has one.

        Built from the stored JSON once per process, so a resumed execution
        sees exactly what the first run saw.

        Raises:
            InvalidInputError: the stored payload no longer fits the model
                (the model changed since the execution started).
        """
        model = self.definition.payload
        if model is None:
            return self.payload
        if self._typed is None:
            from saga_cli.payloads import validate_payload

            self._typed = validate_payload(model, self.payload, self.definition.name)
        return self._typed


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
        # Versions of the executions this runner drives, for the heartbeat.
        self._held: dict[str, int] = {}
        self._heartbeat: threading.Thread | None = None
        # Definition versions this runner has seen registered in the log.
        self._registered: set[tuple[str, str]] = set()

    # -- public entry points -------------------------------------------------

    def run(
        self,
        definition: SagaLike,
        payload: Any,
        *,
        execution_id: str | None = None,
        deadline: float | None = None,
        key_wait: float = 0.0,
    ) -> Outcome:
        """Start a new execution of `definition` and drive it to rest.

        Args:
            definition: the saga (a SagaDefinition or a Saga).
            payload: its input: a JSON object, or an instance of the saga's
                payload model.
            execution_id: the id to use; a new random one by default.
            deadline: epoch seconds; past it, an execution that has not reached
                its point of no return is compensated (checked between steps,
                and when it is resumed). It is kept in the log.
            key_wait: seconds to wait for the saga's concurrency key when an
                unfinished execution holds it (0: refuse at once; math.inf:
                wait as long as it takes).

        Returns:
            The outcome: completed, compensated or stuck.

        Raises:
            ConcurrencyKeyBusyError: the key stayed held past `key_wait`;
                nothing was written.
        """
        definition = as_definition(definition)
        give_up_at = time.monotonic() + key_wait
        pause = 0.02
        while True:
            try:
                return self._drive(*self._new_run(definition, payload, execution_id, deadline))
            except ConcurrencyKeyBusyError:
                if time.monotonic() + pause > give_up_at:
                    raise
            self.sleep(pause)  # nothing was written: try again once the holder may be done
            pause = min(pause * 2, 0.5)

    def _new_run(
        self,
        definition: SagaDefinition,
        payload: Any,
        execution_id: str | None,
        deadline: float | None = None,
    ) -> tuple[_Run, list[Event]]:
        """A new execution and its first event, not yet written.

        Raises:
            InvalidInputError: the payload is not a JSON object, does not fit
                the saga's payload model, or its concurrency key cannot be computed.
        """
        if definition.payload is not None:
            from saga_cli.payloads import payload_as_json

            if hasattr(payload, "model_dump"):  # an instance of the model itself
                payload = payload.model_dump(mode="json")
            payload = payload_as_json(definition.payload, payload, definition.name)
        try:
            payload_json = _encode_payload(payload)
            if not isinstance(payload, Mapping):
                raise TypeError(f"expected an object, got {type(payload).__name__}")
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(
                f"the payload cannot be stored as a JSON object: {exc}"
            ) from None
        # Steps see the payload as stored, so a resumed run sees the same values.
        stored = json.loads(payload_json)
        run = _Run(definition, execution_id or new_execution_id(), stored, SagaState(), 0, False)
        run.payload_json = payload_json
        run.key = concurrency_key_of(definition, run.typed_payload())
        self._enter(run.id)
        detail = None if deadline is None else {"deadline_at": deadline}
        first = Event(seq=1, type=EventType.SAGA_STARTED, detail=detail, at=self.clock())
        run.state = apply(definition, run.state, first)
        return run, [first]

    def resume(self, execution_id: str, *, force: bool = False) -> Outcome:
        """Continue an interrupted (or stuck) execution from its log.

        A step whose ``started`` record has no outcome is called again with the
        same idempotency key. A completed or compensated execution is left as it is.

        Args:
            execution_id: the full id.
            force: run it under the loaded definition even if its steps
                changed incompatibly since the execution started.

        Raises:
            ExecutionBusyError: another live process holds the lease.
            UnknownSagaError: the execution's saga is not loaded.
            DefinitionChangedError: the saga's steps changed incompatibly.
        """
        return self._resume(self.store.get(execution_id), force)

    def _resume(self, record: ExecutionRecord, force: bool = False) -> Outcome:
        if is_terminal(record.status):
            return Outcome(record.id, record.saga, record.status)
        definition = self.definitions(record.saga)
        self._check_definition(record, definition, force)
        run = self._claim(record, definition, EventType.SAGA_RESUMED, None)
        return self._drive(run, [])

    def compensate(
        self, execution_id: str, reason: str = "requested by operator", *, force: bool = False
    ) -> Outcome:
        """Abort an unfinished execution by backward recovery.

        Raises:
            InvalidInputError: the execution completed, passed its point of no
                return, or is inside its pivot.
            ExecutionBusyError: another live process holds the lease.
        """
        return self._turn_back(execution_id, reason, take_over=False, force=force)

    def cancel(
        self, execution_id: str, reason: str = "cancelled by operator", *, force: bool = False
    ) -> Outcome:
        """Cancel an execution on request: compensate it, even from under a live owner.

        The lease is taken over (the owner's next write is refused, so it
        stops), a step it was calling counts as possibly done and is
        compensated too, and the compensation runs here. A compensation in
        progress is never cancelled: it is resumed instead.

        Raises:
            InvalidInputError: the execution completed, passed its point of no
                return, or is inside its pivot.
        """
        return self._turn_back(execution_id, reason, take_over=True, force=force)

    def _turn_back(
        self, execution_id: str, reason: str, *, take_over: bool, force: bool
    ) -> Outcome:
        tries = 3 if take_over else 1
        for attempt in range(1, tries + 1):
            record = self.store.get(execution_id)
            if record.status is SagaStatus.COMPENSATED:
                return Outcome(record.id, record.saga, record.status)
            definition = self.definitions(record.saga)
            self._check_definition(record, definition, force)
            state = replay(definition, self.store.events(record.id))
            self._refuse_turning_back(record, definition, state)
            if state.status in (SagaStatus.COMPENSATING, SagaStatus.STUCK):
                kind, detail = EventType.SAGA_RESUMED, None
            else:
                kind, detail = EventType.COMPENSATION_REQUESTED, {"reason": reason}
            try:
                run = self._claim(record, definition, kind, detail, state, force=take_over)
            except ExecutionBusyError:
                if attempt == tries:
                    raise
                continue  # a live owner wrote between our read and our claim: read again
            return self._drive(run, [])
        raise AssertionError("unreachable")  # pragma: no cover

    def _refuse_turning_back(
        self, record: ExecutionRecord, definition: SagaDefinition, state: SagaState
    ) -> None:
        """Raise InvalidInputError when `record` can no longer be compensated."""
        if record.status is SagaStatus.COMPLETED:
            raise InvalidInputError(f"execution {record.id} completed; it cannot be compensated")
        if forward_only(definition, state):
            raise InvalidInputError(
                f"execution {record.id} passed its pivot; it can only move forward "
                "(use `saga resume`)"
            )
        if pivot_in_doubt(definition, state):
            raise InvalidInputError(
                f"execution {record.id} was cut short inside its pivot step, whose effect "
                "cannot be undone; `saga resume` it to learn the outcome"
            )

    def resolve(self, execution_id: str, note: str) -> Outcome:
        """Record an operator's manual resolution of a stuck execution.

        The execution becomes compensated (or completed, if it was stuck past
        its point of no return), with `note` in the log.

        Raises:
            InvalidInputError: the note is empty or the execution is not stuck.
            LeaseLostError: it changed while this ran.
        """
        if not note.strip():
            raise InvalidInputError("a resolution needs a note saying what was done (--note)")
        record = self.store.get(execution_id)
        if record.status is not SagaStatus.STUCK:
            raise InvalidInputError(
                f"execution {execution_id} is {record.status.value}; only a stuck execution "
                "can be resolved by hand"
            )
        definition = self.definitions(record.saga)
        state = replay(definition, self.store.events(record.id))
        if state.doubt is not None:
            raise InvalidInputError(
                f"execution {execution_id} is stuck on a pivot whose outcome is unknown; "
                "`saga resume` it to learn the outcome before resolving anything by hand"
            )
        resolved = resolution_of(definition, state)
        event = Event(
            state.next_seq,
            EventType.SAGA_RESOLVED,
            detail={"note": note, "status": resolved.value, "by": self.owner},
            at=self.clock(),
        )
        state = apply(definition, state, event)
        self.store.append(
            Transition(
                record.id,
                record.version,
                [event],
                state.status,
                record.step,
                None,
                None,
                event.at,
                record.concurrency_key,
            )
        )
        self._notify(record.id, [event])
        return Outcome(record.id, record.saga, state.status, state.error, state.results)

    def resume_all(
        self,
        *,
        concurrency: int = 1,
        progress: Callable[[Outcome], None] | None = None,
        force: bool = False,
    ) -> RecoveryReport:
        """Resume every interrupted execution (pending, running or compensating, no live owner).

        Leases are taken in batches (one commit each), and `concurrency`
        executions advance together, their log writes sharing commits (see
        :meth:`_drive_window`).

        Args:
            concurrency: executions in flight at once.
            progress: called after each resumed execution.
            force: resume executions whose saga changed incompatibly too.

        Returns:
            The outcomes; executions owned by another live process are listed
            as busy, and those that could not be resumed (an unknown saga, a
            corrupt log, a lease lost mid-way) as failed, with the reason.
        """
        if concurrency < 1:
            raise InvalidInputError(f"concurrency must be at least 1 (got {concurrency})")
        report = RecoveryReport([], [], {})
        claim_batch = max(concurrency, 16)

        def feed() -> Iterator[tuple[_Run, list[Event]] | Outcome]:
            for page in self.store.unfinished_pages(page=claim_batch):
                now = self.clock()
                todo = []
                for record in page:
                    if record.id in self._active:
                        continue  # this process is driving it already (an earlier page)
                    if record.owner != self.owner and lease.holds_lease(record, now):
                        report.busy.append(record.id)
                    else:
                        todo.append(record)
                for item in self._claim_many(todo, report, force):
                    yield item if isinstance(item, Outcome) else (item, [])

        def finished(outcome: Outcome) -> None:
            report.outcomes.append(outcome)
            if progress is not None:
                progress(outcome)

        def failed(execution_id: str, error: SagaError) -> None:
            report.failed[execution_id] = str(error)

        self._drive_window(feed(), concurrency, finished, failed)
        return report

    def run_many(
        self,
        definition: SagaLike,
        payloads: Iterable[Any],
        *,
        concurrency: int = 1,
        deadline: float | None = None,
        progress: Callable[[Outcome], None] | None = None,
    ) -> list[Outcome]:
        """Start an execution per payload, `concurrency` of them in flight at once.

        `deadline` (epoch seconds) applies to each execution, as in :meth:`run`.

        The executions advance together and share commits (group commit), so
        a batch runs faster than one execution after another, with the same
        write-ahead guarantees.

        Returns:
            The outcomes, in the order the executions came to rest.

        Raises:
            LeaseLostError: another process took one of them over.
        """
        if concurrency < 1:
            raise InvalidInputError(f"concurrency must be at least 1 (got {concurrency})")
        outcomes: list[Outcome] = []

        definition = as_definition(definition)

        def feed() -> Iterator[tuple[_Run, list[Event]] | Outcome]:
            for payload in payloads:
                yield self._new_run(definition, payload, None, deadline)

        def finished(outcome: Outcome) -> None:
            outcomes.append(outcome)
            if progress is not None:
                progress(outcome)

        def failed(_execution_id: str, error: SagaError) -> None:
            raise error

        self._drive_window(feed(), concurrency, finished, failed)
        return outcomes

    def submit(
        self,
        definition: SagaLike,
        payload: Any,
        *,
        execution_id: str | None = None,
        deadline: float | None = None,
    ) -> str:
        """Write a new execution as pending, for a worker to run, and return its id at once.

        One commit writes the row (status pending, no owner, no lease) and
        its ``saga_started`` record, with the definition version and the
        concurrency key exactly as :meth:`run` writes them; nothing is called.

        Raises:
            InvalidInputError: the payload does not fit the saga.
            ConcurrencyKeyBusyError: an unfinished execution holds the key;
                nothing was written.
        """
        (submitted,) = self.submit_many(
            definition, [payload], deadline=deadline, execution_ids=[execution_id]
        )
        if isinstance(submitted, SagaError):
            raise submitted
        return submitted

    def submit_many(
        self,
        definition: SagaLike,
        payloads: Iterable[Any],
        *,
        deadline: float | None = None,
        execution_ids: Iterable[str | None] | None = None,
    ) -> list[str | SagaError]:
        """Submit one pending execution per payload, all in one commit (see :meth:`submit`).

        Returns:
            Per payload, the new execution's id, or the error that refused it
            (a busy concurrency key); the others are written regardless.

        Raises:
            InvalidInputError: a payload does not fit the saga; nothing was written.
        """
        definition = as_definition(definition)
        ids = iter(execution_ids or ())
        creations: list[Creation] = []
        for payload in payloads:
            run, first = self._new_run(definition, payload, next(ids, None), deadline)
            self._leave(run.id)  # nobody drives it here
            write = self._write_for(run, first)
            assert isinstance(write, Creation)
            pending = dataclasses.replace(
                write.record, status=SagaStatus.PENDING, owner=None, lease_expires_at=None
            )
            creations.append(Creation(pending, write.events, write.definition))
        if not creations:
            return []
        results = self.store.commit_all(creations)
        self._registered.add((definition.name, definition.version))
        return [
            result if isinstance(result, SagaError) else write.record.id
            for write, result in zip(creations, results, strict=True)
        ]

    def run_claimed(
        self,
        feed: Iterator[Sequence[ExecutionRecord]],
        *,
        concurrency: int,
        finished: Callable[[Outcome], None],
        failed: Callable[[str, SagaError], None],
        stop: Callable[[], bool] | None = None,
    ) -> None:
        """Drive executions this process claimed with SagaStore.claim_ready, in one window.

        Their logs already end with the claim's ``saga_resumed`` record; each
        is replayed and driven in the lockstep window, `concurrency` at a
        time, the heartbeat renewing the leases. `feed` yields batches of
        claimed records, or an empty batch when nothing is ready now (the
        window goes on with what it has); it ends the window by returning.
        Between rounds, once `stop` returns true, the executions in hand have
        what they recorded committed and their leases released.

        An execution that cannot be driven here (its saga is unknown or
        changed incompatibly) is reported to `failed` and keeps its claim
        until the lease expires, so a worker with the right code can take it.
        """
        if concurrency < 1:
            raise InvalidInputError(f"concurrency must be at least 1 (got {concurrency})")

        def runs() -> Iterator[tuple[_Run, list[Event]] | Outcome | _NothingYet]:
            for batch in feed:
                if not batch:
                    yield NOTHING_YET
                    continue
                histories = self.store.events_of([record.id for record in batch])
                for record in batch:
                    adopted = self._adopt(record, histories[record.id])
                    if isinstance(adopted, SagaError):
                        failed(record.id, adopted)
                    else:
                        yield adopted, []

        self._drive_window(runs(), concurrency, finished, failed, stop)

    def _adopt(self, record: ExecutionRecord, events: list[Event]) -> _Run | SagaError:
        """The in-hand execution for a record claimed with claim_ready (its events replayed)."""
        try:
            definition = self.definitions(record.saga)
            self._check_definition(record, definition, False)
            state = replay(definition, events)
            self._enter(record.id)
        except SagaError as exc:
            return exc
        self._notify(record.id, events[-1:])
        run = _Run(definition, record.id, json.loads(record.payload), state, record.version, True)
        run.step_name = record.step
        run.key = record.concurrency_key
        self._held[record.id] = record.version
        return run

    def _claim_many(
        self, records: list[ExecutionRecord], report: RecoveryReport, force: bool = False
    ) -> list[_Run | Outcome]:
        """Claim `records` in one commit; return what to drive (or what needs no driving)."""
        now = self.clock()
        histories = self.store.events_of([r.id for r in records])
        ready: list[tuple[ExecutionRecord, SagaDefinition, SagaState, Event]] = []
        done: list[_Run | Outcome] = []
        for record in records:
            if is_terminal(record.status):
                done.append(Outcome(record.id, record.saga, record.status))
                continue
            try:
                self._enter(record.id)
            except ExecutionBusyError:
                report.busy.append(record.id)
                continue
            try:
                definition = self.definitions(record.saga)
                self._check_definition(record, definition, force)
                state = replay(definition, histories[record.id])
            except SagaError as exc:
                self._leave(record.id)
                report.failed[record.id] = str(exc)
                continue
            event = Event(seq=state.next_seq, type=EventType.SAGA_RESUMED, at=now)
            ready.append((record, definition, state, event))
        try:
            versions = self.store.claim_many(
                [Claim(r.id, r.version, e) for r, _, _, e in ready],
                self.owner,
                now + self.lease_seconds,
                now,
            )
        except BaseException:
            for record, *_ in ready:
                self._leave(record.id)
            raise
        for (record, definition, state, event), version in zip(ready, versions, strict=True):
            if version is None:
                self._leave(record.id)
                report.busy.append(record.id)
                continue
            done.append(self._claimed(record, definition, state, event, version))
        return done

    def _check_definition(
        self, record: ExecutionRecord, definition: SagaDefinition, force: bool
    ) -> None:
        """Refuse to drive `record` here: its steps changed, or its precondition refuses.

        Raises:
            DefinitionChangedError: the steps changed, and `force` is off.
            SagaError: the definition's precondition refused the execution.
        """
        if definition.precondition is not None:
            definition.precondition(json.loads(record.payload))
        started = record.definition_version
        if force or started is None or started == definition.version:
            return
        versions = {v.version: v for v in self.store.definition_versions(record.saga)}
        old = versions.get(started)
        if old is None:
            return  # the log lost that version's shape: nothing to compare with
        changes = definition_changes(old.steps, shape_of(definition.steps))
        if changes:
            raise DefinitionChangedError(
                f"saga {record.saga!r} changed since execution {record.id} started under "
                f"version {started} (now {definition.version}): {'; '.join(changes)}. "
                "Restore the old steps, or resume with --force to run it under the new ones"
            )

    # -- the engine ------------------------------------------------------------

    def _claim(
        self,
        record: ExecutionRecord,
        definition: SagaDefinition,
        kind: EventType,
        detail: Mapping[str, Any] | None,
        state: SagaState | None = None,
        *,
        force: bool = False,
    ) -> _Run:
        """Take the lease of `record` and record why; `force` takes it from a live owner."""
        now = self.clock()
        if not force and record.owner not in (None, self.owner) and lease.holds_lease(record, now):
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
        return self._claimed(record, definition, state, event, version)

    def _claimed(
        self,
        record: ExecutionRecord,
        definition: SagaDefinition,
        state: SagaState,
        event: Event,
        version: int,
    ) -> _Run:
        """The in-hand execution after its claim (with `event`) committed at `version`."""
        self._notify(record.id, [event])
        run = _Run(definition, record.id, json.loads(record.payload), state, version, True)
        run.state = apply(definition, state, event)
        run.step_name = record.step
        run.key = record.concurrency_key
        self._held[record.id] = version
        return run

    def _flush(self, run: _Run, events: list[Event]) -> None:
        """Make `events` durable together with the row's new projection.

        Raises:
            LeaseLostError: another owner took the execution over.
        """
        (result,) = self.store.commit_all([self._write_for(run, events)])
        self._settle(run, events, result)

    def _write_for(self, run: _Run, events: list[Event]) -> Creation | Transition:
        """The store write that records `events` and the row's new projection."""
        state = run.state
        now = self.clock()
        current = state.current_step
        if current is not None:
            run.step_name = run.definition.steps[current].name
        resting = is_terminal(state.status) or state.status is SagaStatus.STUCK
        owner = None if resting else self.owner
        lease_until = None if resting else now + self.lease_seconds
        if run.created:
            return Transition(
                run.id,
                run.version,
                events,
                state.status,
                run.step_name,
                owner,
                lease_until,
                now,
                run.key if is_terminal(state.status) else None,
            )
        definition = run.definition
        registration = None
        if (definition.name, definition.version) not in self._registered:
            registration = DefinitionRecord(
                definition.name,
                definition.version,
                recorded_steps(definition.steps),
                definition.source,
                now,
            )
        record = ExecutionRecord(
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
            definition_version=definition.version,
            concurrency_key=run.key,
        )
        return Creation(record, list(events), registration)

    def _settle(self, run: _Run, events: list[Event], result: int | SagaError) -> None:
        """Take note of a committed (or refused) write of `run`."""
        if isinstance(result, SagaError):
            raise result
        run.version = result
        if not run.created:
            self._registered.add((run.definition.name, run.definition.version))
        run.created = True
        if is_terminal(run.state.status) or run.state.status is SagaStatus.STUCK:
            self._held.pop(run.id, None)  # the write released the lease
        else:
            self._held[run.id] = result
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
        self._held.pop(execution_id, None)

    def _start_heartbeat(self) -> None:
        """Keep the leases of the executions in hand alive while a step runs long.

        Every write renews a lease, but a participant call may outlast it; a
        daemon thread renews the held leases every third of the lease time,
        without bumping the version, so fencing is unchanged: a process that
        is stopped (SIGSTOP) or hung cannot beat, loses its lease, and its
        late writes are refused.
        """
        if self._heartbeat is not None and self._heartbeat.is_alive():
            return
        self._heartbeat = threading.Thread(target=self._beat, name="saga-heartbeat", daemon=True)
        self._heartbeat.start()

    def _beat(self) -> None:
        interval = max(0.05, self.lease_seconds / 3)
        while True:
            time.sleep(interval)
            held = dict(self._held)
            if not held:
                continue
            try:
                self.store.renew_leases(self.owner, held, self.clock() + self.lease_seconds)
            except Exception:  # a missed beat only shortens the lease
                log.warning("could not renew %d lease(s)", len(held), exc_info=True)

    def _drive(self, run: _Run, pending: list[Event]) -> Outcome:
        """Run `run` until it is completed, compensated or stuck.

        Raises:
            LeaseLostError: another owner took the execution over.
        """
        outcomes: list[Outcome] = []

        def lost(_execution_id: str, error: SagaError) -> None:
            raise error

        self._drive_window(iter([(run, pending)]), 1, outcomes.append, lost)
        return outcomes[0]

    def _drive_window(
        self,
        feed: Iterator[tuple[_Run, list[Event]] | Outcome | _NothingYet],
        window: int,
        finished: Callable[[Outcome], None],
        failed: Callable[[str, SagaError], None],
        stop: Callable[[], bool] | None = None,
    ) -> None:
        """Drive executions from `feed`, up to `window` at a time, in lockstep rounds.

        Each round asks every active execution what to do next and writes
        everything they made ready (outcomes, the next ``started`` records,
        terminal events) in ONE commit; only then are the participants called.
        That keeps the write-ahead rule (no call before its ``started`` record
        is durable) while a whole window shares each fsync: group commit
        without threads. One execution at a time is the plain sequential case.

        A feed that has nothing now but may have more later (a worker's
        queue) yields NOTHING_YET: the round goes on with what is active.
        When `stop` returns true between rounds, the executions still active
        have their recorded outcomes committed and their leases released
        (see :meth:`_let_go`), and the window returns.
        """
        self._start_heartbeat()
        active: list[tuple[_Run, list[Event]]] = []
        more = True
        slept_until = 0.0  # after a back-off sleep, what is due counts as due
        try:
            while True:
                while more and len(active) < window:
                    item = next(feed, None)
                    if item is None:
                        more = False
                    elif item is NOTHING_YET:
                        break
                    elif isinstance(item, Outcome):
                        finished(item)
                    elif isinstance(item, tuple):
                        active.append(item)
                if not active:
                    return
                active, slept_until = self._round(active, finished, failed, slept_until)
                if stop is not None and stop():
                    self._let_go(active, failed)
                    return
        finally:
            for run, _pending in active:
                self._leave(run.id)

    def _let_go(
        self, active: list[tuple[_Run, list[Event]]], failed: Callable[[str, SagaError], None]
    ) -> None:
        """Commit what `active` recorded since the last commit and release their leases.

        One commit sets owner and lease to NULL (and bumps the version like
        any write, so this process is fenced off at once); the executions
        keep their status and are ready for any worker to claim straight away.
        """
        if not active:
            return
        now = self.clock()
        writes = []
        for run, pending in active:
            current = run.state.current_step
            if current is not None:
                run.step_name = run.definition.steps[current].name
            ended = is_terminal(run.state.status)
            writes.append(
                Transition(
                    run.id,
                    run.version,
                    list(pending),
                    run.state.status,
                    run.step_name,
                    None,
                    None,
                    now,
                    run.key if ended else None,
                )
            )
        results = self.store.commit_all(writes)
        for (run, pending), result in zip(active, results, strict=True):
            self._held.pop(run.id, None)
            if isinstance(result, SagaError):
                failed(run.id, result)
            else:
                run.version = result
                self._notify(run.id, pending)
                pending.clear()

    def _round(
        self,
        active: list[tuple[_Run, list[Event]]],
        finished: Callable[[Outcome], None],
        failed: Callable[[str, SagaError], None],
        slept_until: float,
    ) -> tuple[list[tuple[_Run, list[Event]]], float]:
        """One lockstep round.

        Returns:
            The executions still on their way, and the time this round slept
            until (so that a retry that was waited for is due next round even
            under an injected clock).
        """
        now = max(self.clock(), slept_until)
        calls: list[tuple[_Run, list[Event], list[RunStep | RunCompensation]]] = []
        resting: set[str] = set()
        wake: float | None = None
        for run, pending in active:
            while True:
                decision = decide(run.definition, run.state, now)
                if isinstance(decision, Calls):
                    ready: list[RunStep | RunCompensation] = []
                    for call in decision.calls:
                        if call.record:
                            if call.not_before > now:
                                # backing off: its failure record is flushed below
                                wake = (
                                    call.not_before if wake is None else min(wake, call.not_before)
                                )
                                continue
                            compensating = isinstance(call, RunCompensation)
                            started = (
                                EventType.COMPENSATION_STARTED
                                if compensating
                                else EventType.STEP_STARTED
                            )
                            name = run.definition.steps[call.index].name
                            self._record(run, pending, started, name, call.attempt)
                        ready.append(call)
                    if ready:
                        calls.append((run, pending, ready))
                    break
                if isinstance(decision, Rest):
                    resting.add(run.id)
                    break
                if isinstance(decision, Abort):
                    reason = {"reason": decision.reason}
                    self._record(run, pending, EventType.COMPENSATION_REQUESTED, None, 0, reason)
                elif isinstance(decision, Finish):
                    self._record(run, pending, decision.event, None)
                else:
                    name = run.definition.steps[decision.index].name
                    error = {"error": decision.error}
                    self._record(run, pending, EventType.SAGA_STUCK, name, decision.attempt, error)
        ready_runs = [(run, pending) for run, pending in active if pending]
        dropped: set[str] = set()
        if ready_runs:
            # The write-ahead rule: these commit before any participant below runs.
            results = self.store.commit_all([self._write_for(r, p) for r, p in ready_runs])
            for (run, pending), result in zip(ready_runs, results, strict=True):
                if isinstance(result, SagaError):
                    dropped.add(run.id)
                    self._leave(run.id)
                    failed(run.id, result)
                else:
                    self._settle(run, pending, result)
        still: list[tuple[_Run, list[Event]]] = []
        for run, pending in active:
            if run.id in dropped:
                continue
            if run.id in resting:
                self._leave(run.id)
                state = run.state
                finished(
                    Outcome(run.id, run.definition.name, state.status, state.error, state.results)
                )
            else:
                still.append((run, pending))
        for run, pending, ready in calls:
            if run.id not in dropped:
                self._make_calls(run, pending, ready)
        if not calls and not ready_runs and wake is not None:
            self.sleep(max(0.0, wake - self.clock()))
            return still, wake
        return still, slept_until

    def _make_calls(
        self, run: _Run, pending: list[Event], calls: list[RunStep | RunCompensation]
    ) -> None:
        """Call the participants of `calls` (concurrently if several) and record the outcomes.

        A parallel group's outcomes are recorded successes first and failures
        that turn the saga back last, so that every member that succeeded is
        known, and compensated, whichever member failed.
        """
        if len(calls) == 1:
            call = calls[0]
            compensating = isinstance(call, RunCompensation)
            step = run.definition.steps[call.index]
            outcome = self._invoke(run, step, call.attempt, compensating)
            self._record_outcome(run, pending, step, call.attempt, compensating, outcome)
            return
        with ThreadPoolExecutor(max_workers=len(calls), thread_name_prefix="saga-group") as pool:
            futures = [
                pool.submit(
                    self._invoke,
                    run,
                    run.definition.steps[call.index],
                    call.attempt,
                    isinstance(call, RunCompensation),
                )
                for call in calls
            ]
            outcomes = [future.result() for future in futures]
        answered = []
        for call, outcome in zip(calls, outcomes, strict=True):
            compensating = isinstance(call, RunCompensation)
            step = run.definition.steps[call.index]
            if isinstance(outcome, _Failure):
                outcome.detail = self._failure_detail(step, call.attempt, compensating, outcome)
            answered.append((_order_of(outcome), call, step, compensating, outcome))
        answered.sort(key=lambda item: item[0])
        for _order, call, step, compensating, outcome in answered:
            self._record_outcome(run, pending, step, call.attempt, compensating, outcome)

    def _invoke(self, run: _Run, step: Step, attempt: int, compensating: bool) -> Any:
        """Call a step's action (or compensation); return its result or a :class:`_Failure`."""
        action_key = f"{run.id}:{step.name}"
        function = step.action
        key = action_key
        if compensating:
            assert step.compensation is not None  # guaranteed by the definition's validation
            function = step.compensation
            key = f"{action_key}:compensate"
        context = StepContext(
            run.id,
            step.name,
            key,
            action_key,
            attempt,
            run.typed_payload(),
            run.state.results,
            compensating,
        )
        try:
            if step.timeout is not None and not compensating:
                return _call_with_timeout(function, context, step.timeout)
            return function(context)
        except Exception as exc:
            return _Failure(exc)

    def _record_outcome(
        self,
        run: _Run,
        pending: list[Event],
        step: Step,
        attempt: int,
        compensating: bool,
        outcome: Any,
    ) -> None:
        if isinstance(outcome, _Failure):
            self._failed(run, pending, step, attempt, compensating, outcome)
        elif compensating:
            self._record(run, pending, EventType.COMPENSATION_SUCCEEDED, step.name, attempt)
        else:
            # Keep what the log will hold, so later steps see the same values
            # whether or not the execution is resumed in between.
            result = outcome
            if result is not None and not isinstance(result, str | int | float | bool):
                result = json.loads(_encode(result))
            self._record(
                run, pending, EventType.STEP_SUCCEEDED, step.name, attempt, {"result": result}
            )

    def _failure_detail(
        self, step: Step, attempt: int, compensating: bool, failure: _Failure
    ) -> dict[str, Any]:
        """What a failed call's record says: the error, and a retry time or uncertainty."""
        exc = failure.error
        error = str(exc) or type(exc).__name__
        detail: dict[str, Any] = {"error": error, "kind": type(exc).__name__}
        business = isinstance(exc, BusinessError) and not compensating
        timed_out = isinstance(exc, StepTimeoutError)
        # Never sent (an open breaker): nothing happened. A step before the
        # pivot fails fast (that is the breaker's point) and is not compensated.
        not_sent = isinstance(exc, NotSentError)
        policy = step.compensation_retry if compensating else step.retry
        retrying = not business and not timed_out and attempt < policy.max_attempts
        # A compensation, or a retriable step past the pivot, must get through
        # in the end: they wait out an open breaker instead of giving up.
        must_get_through = compensating or step.kind is StepKind.RETRIABLE
        if retrying and (must_get_through or not not_sent):
            delay = policy.delay_before(attempt + 1, self.rng)
            if not_sent:
                delay = max(delay, getattr(exc, "retry_after", 0.0))
            detail["retry_at"] = self.clock() + delay
        elif not business and not compensating and not not_sent:
            detail["uncertain"] = True  # the effect may exist: compensate it too
        return detail

    def _failed(
        self,
        run: _Run,
        pending: list[Event],
        step: Step,
        attempt: int,
        compensating: bool,
        failure: _Failure,
    ) -> None:
        detail = failure.detail or self._failure_detail(step, attempt, compensating, failure)
        failed = EventType.COMPENSATION_FAILED if compensating else EventType.STEP_FAILED
        self._record(run, pending, failed, step.name, attempt, detail)
        if "uncertain" in detail and step.kind is StepKind.PIVOT:
            # The pivot may have happened and nothing can undo it: stop here;
            # a resume asks again under the same key. (A call that gave up
            # otherwise is recorded stuck by decide(), once its group answered.)
            self._record(
                run,
                pending,
                EventType.SAGA_STUCK,
                step.name,
                attempt,
                {
                    "error": f"pivot step {step.name!r} gave up after {attempt} attempt(s): "
                    f"{detail['error']}"
                },
            )


class _NothingYet:
    """The type of NOTHING_YET."""

    __slots__ = ()


# What a worker's feed yields when nothing is ready now but more may come.
NOTHING_YET = _NothingYet()


class _Failure:
    """A call that raised: the exception, and the record it gets once classified."""

    __slots__ = ("detail", "error")

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.detail: dict[str, Any] | None = None


def _order_of(outcome: Any) -> int:
    """Where a group member's outcome goes among its siblings' (see _make_calls)."""
    if not isinstance(outcome, _Failure):
        return 0
    return 1 if outcome.detail is not None and "retry_at" in outcome.detail else 2


# Calls given up on by a timeout, still running; a process that wants their late
# effects to land before it exits joins them (see wait_for_abandoned_calls).
ABANDONED_CALLS: list[threading.Thread] = []


def wait_for_abandoned_calls(timeout: float) -> None:
    """Let calls abandoned by a step timeout finish, waiting at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while ABANDONED_CALLS:
        ABANDONED_CALLS.pop().join(max(0.0, deadline - time.monotonic()))


def _call_with_timeout(function: StepFunction, context: StepContext, timeout: float) -> Any:
    """Call `function` on a helper thread and wait at most `timeout` seconds.

    A call still running then is abandoned, not stopped (Python cannot stop
    a thread): it may still complete later, which is what a late-arriving
    request does to a real service, and why compensations must leave a
    tombstone for an action that has not arrived yet.

    Raises:
        StepTimeoutError: no answer in time.
    """
    box: dict[str, Any] = {}
    answered = threading.Event()

    def call() -> None:
        try:
            box["result"] = function(context)
        except BaseException as exc:  # handed to the waiting thread
            box["error"] = exc
        finally:
            answered.set()

    thread = threading.Thread(target=call, name=f"saga-step-{context.step}", daemon=True)
    thread.start()
    if not answered.wait(timeout):
        ABANDONED_CALLS.append(thread)
        raise StepTimeoutError(f"{context.step} did not answer within {timeout:g}s")
    if "error" in box:
        raise box["error"]
    return box["result"]
