"""The engine's front: run, resume and compensate executions, from sync or async code.

:class:`SagaRunner` composes the engine's parts: :mod:`~saga_cli.engine.claims`
(who drives what), :mod:`~saga_cli.engine.drive` (one execution's loop),
:mod:`~saga_cli.engine.calls` (calling participants),
:mod:`~saga_cli.engine.writer` (shared commits) and
:mod:`~saga_cli.engine.scheduler` (how many in flight). Every operation is a
coroutine; the sync methods run it on an event loop this runner keeps per
calling thread, the ``*_async`` ones on the caller's own loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import random
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Sequence
from functools import partial
from typing import Any, TypeVar

from saga_cli import lease
from saga_cli.domain import (
    Event,
    EventType,
    SagaDefinition,
    SagaState,
    SagaStatus,
    apply,
    forward_only,
    is_terminal,
    pivot_in_doubt,
    recorded_steps,
    replay,
    resolution_of,
)
from saga_cli.engine.alerting import DEFAULT_POLICY, AlertPolicy, alerts_for
from saga_cli.engine.calls import StepCaller
from saga_cli.engine.claims import Leases
from saga_cli.engine.drive import Driver, Sleep
from saga_cli.engine.execution import (
    DefinitionLookup,
    EventListener,
    Execution,
    Outcome,
    RecoveryReport,
    concurrency_key_of,
    encode_payload,
    new_execution_id,
)
from saga_cli.engine.observer import EngineObserver
from saga_cli.engine.outage import Outage
from saga_cli.engine.scheduler import NOTHING_YET, Feed, Window, _NothingYet
from saga_cli.engine.threads import CallPool
from saga_cli.engine.writer import CommitThread, LogWriter, Write
from saga_cli.errors import (
    ConcurrencyKeyBusyError,
    ExecutionBusyError,
    InvalidInputError,
    LogUnavailableError,
    SagaError,
)
from saga_cli.saga import SagaLike, as_definition
from saga_cli.store import (
    Creation,
    DefinitionRecord,
    ExecutionRecord,
    SagaStore,
    Transition,
)
from saga_cli.tracing import TRACE_KEY, Tracing

T = TypeVar("T")
log = logging.getLogger(__name__)

# Seconds a step's call may take when neither the step nor its saga says.
DEFAULT_STEP_TIMEOUT = 60.0
# Threads for plain ``def`` steps when the caller does not say; a window of K
# executions grows the pool to K, so K blocking calls can wait at once.
DEFAULT_THREADS = 32


class SagaRunner:
    """Runs, resumes and compensates executions of saga definitions.

    Args:
        store: the saga log.
        definitions: finds a definition by saga name (see :func:`registry`).
        lease_seconds: how long a claim lasts without a new write.
        on_event: called with (execution id, event) once each event is durable.
        step_timeout: seconds a step's call may take when neither the step nor
            its saga says (None: no limit).
        threads: how many plain ``def`` steps may run at once (at least the
            concurrency asked of a window).
        alerts: when to write an alert with the event behind it (see
            saga_cli.engine.alerting); None writes none.
        tracing: makes OpenTelemetry spans of executions and calls (see
            saga_cli.tracing); None (the default) makes none and costs nothing.
        clock, sleep, rng: injectable for tests (`sleep` waits out retry
            back-offs; it may be a plain function or a coroutine function).
    """

    def __init__(
        self,
        store: SagaStore,
        definitions: DefinitionLookup,
        *,
        lease_seconds: float = lease.DEFAULT_LEASE_SECONDS,
        on_event: EventListener | None = None,
        step_timeout: float | None = DEFAULT_STEP_TIMEOUT,
        threads: int = DEFAULT_THREADS,
        alerts: AlertPolicy | None = DEFAULT_POLICY,
        tracing: Tracing | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Sleep | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.definitions = definitions
        self.on_event = on_event
        self.alerts = alerts
        self.clock = clock
        self.rng = rng or random.Random()
        # Shared by all that talk to the log here: they wait its outages out
        # together, inside the batch operations (a single run fails at once).
        self.outage = Outage(waits=False)
        self.leases = Leases(
            store,
            definitions,
            lease.current_owner(),
            lease_seconds,
            clock,
            self._notify,
            self.outage,
        )
        self.pool = CallPool(threads)
        self.caller = StepCaller(self.pool, step_timeout)
        self._tracing = tracing
        self.caller.tracing = tracing
        self._sleep = sleep
        self._commits = CommitThread(store, self.outage, self.leases.expired)
        self._drivers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Driver] = (
            weakref.WeakKeyDictionary()
        )
        self._own_loops: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()
        self._local = threading.local()
        # Definition versions this runner has seen registered in the log.
        self._registered: set[tuple[str, str]] = set()

    # -- settings ------------------------------------------------------------------

    @property
    def owner(self) -> str:
        """The owner id this runner writes into the executions it holds."""
        return self.leases.owner

    @owner.setter
    def owner(self, value: str) -> None:
        self.leases.owner = value

    @property
    def lease_seconds(self) -> float:
        """How long a claim lasts without a write or a heartbeat."""
        return self.leases.lease_seconds

    @lease_seconds.setter
    def lease_seconds(self, value: float) -> None:
        self.leases.lease_seconds = value

    @property
    def sleep(self) -> Sleep | None:
        """What waits out retry back-offs (None: asyncio's sleep, cut short by a stop)."""
        return self._sleep

    @sleep.setter
    def sleep(self, value: Sleep | None) -> None:
        self._sleep = value
        for driver in list(self._drivers.values()):
            driver.sleep = value

    @property
    def tracing(self) -> Tracing | None:
        """What makes spans of executions and their calls (None: no traces, no cost)."""
        return self._tracing

    @tracing.setter
    def tracing(self, value: Tracing | None) -> None:
        self._tracing = value
        self.caller.tracing = value
        for driver in list(self._drivers.values()):
            driver.tracing = value

    @property
    def observer(self) -> EngineObserver | None:
        """Told each participant call's and each commit's duration (None: nobody, no cost)."""
        return self.caller.observer

    @observer.setter
    def observer(self, value: EngineObserver | None) -> None:
        self.caller.observer = value
        self._commits.observer = value

    @property
    def step_timeout(self) -> float | None:
        """Seconds a step's call may take when neither the step nor its saga says."""
        return self.caller.default_timeout

    @step_timeout.setter
    def step_timeout(self, value: float | None) -> None:
        self.caller.default_timeout = value

    # -- running -------------------------------------------------------------------

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
            InvalidInputError: the payload does not fit the saga.
            ConcurrencyKeyBusyError: the key stayed held past `key_wait`;
                nothing was written.
        """
        return self._sync(
            lambda: self.run_async(
                definition, payload, execution_id=execution_id, deadline=deadline, key_wait=key_wait
            )
        )

    async def run_async(
        self,
        definition: SagaLike,
        payload: Any,
        *,
        execution_id: str | None = None,
        deadline: float | None = None,
        key_wait: float = 0.0,
    ) -> Outcome:
        """:meth:`run` on the caller's event loop, which it never blocks for long."""
        definition = as_definition(definition)
        give_up_at = time.monotonic() + key_wait
        pause = 0.02
        while True:
            run = self._new_run(definition, payload, execution_id, deadline)
            try:
                return await self._drive_one(run)
            except ConcurrencyKeyBusyError:
                if time.monotonic() + pause > give_up_at:
                    raise
            await self._pause(pause)  # nothing was written: try again once the holder may be done
            pause = min(pause * 2, 0.5)

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
        Each execution advances on its own (a slow call holds up only its own
        execution) and their log writes share commits.

        Returns:
            The outcomes, in the order the executions came to rest.

        Raises:
            InvalidInputError: a payload does not fit the saga (the executions
                already started come to rest first).
            LeaseLostError: another process took one of them over.
        """
        return self._sync(
            lambda: self.run_many_async(
                definition,
                payloads,
                concurrency=concurrency,
                deadline=deadline,
                progress=progress,
            )
        )

    async def run_many_async(
        self,
        definition: SagaLike,
        payloads: Iterable[Any],
        *,
        concurrency: int = 1,
        deadline: float | None = None,
        progress: Callable[[Outcome], None] | None = None,
    ) -> list[Outcome]:
        """:meth:`run_many` on the caller's event loop."""
        _check_concurrency(concurrency)
        definition = as_definition(definition)
        outcomes: list[Outcome] = []

        async def feed() -> AsyncIterator[Execution]:
            for payload in payloads:
                yield self._new_run(definition, payload, None, deadline)

        def finished(outcome: Outcome) -> None:
            outcomes.append(outcome)
            if progress is not None:
                progress(outcome)

        def failed(_execution_id: str, error: SagaError) -> None:
            raise error

        with self.outage.waiting():  # a batch: its outages are waited out
            await self._window(feed(), concurrency, finished, failed)
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
            run = self._new_run(definition, payload, next(ids, None), deadline)
            self.leases.leave(run.id)  # nobody drives it here
            if run.span is not None and self._tracing is not None:
                self._tracing.end_execution(run.span, SagaStatus.PENDING.value)
            write = self._write_for(run, run.pending)
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

    # -- resuming and turning back -----------------------------------------------------

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
        return self._sync(lambda: self.resume_async(execution_id, force=force))

    async def resume_async(self, execution_id: str, *, force: bool = False) -> Outcome:
        """:meth:`resume` on the caller's event loop."""
        claimed = await self._blocking(self._claim_for_resume, execution_id, force)
        if isinstance(claimed, Outcome):
            return claimed
        return await self._drive_one(claimed)

    def _claim_for_resume(self, execution_id: str, force: bool) -> Execution | Outcome:
        record = self.store.get(execution_id)
        if is_terminal(record.status):
            return Outcome(record.id, record.saga, record.status)
        definition = self.definitions(record.saga)
        self.leases.check_definition(record, definition, force)
        return self.leases.claim(record, definition, EventType.SAGA_RESUMED, None)

    def compensate(
        self, execution_id: str, reason: str = "requested by operator", *, force: bool = False
    ) -> Outcome:
        """Abort an unfinished execution by backward recovery.

        Raises:
            InvalidInputError: the execution completed, passed its point of no
                return, or is inside its pivot.
            ExecutionBusyError: another live process holds the lease.
        """
        return self._sync(lambda: self.compensate_async(execution_id, reason, force=force))

    async def compensate_async(
        self, execution_id: str, reason: str = "requested by operator", *, force: bool = False
    ) -> Outcome:
        """:meth:`compensate` on the caller's event loop."""
        return await self._turn_back(execution_id, reason, take_over=False, force=force)

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
        return self._sync(lambda: self.cancel_async(execution_id, reason, force=force))

    async def cancel_async(
        self, execution_id: str, reason: str = "cancelled by operator", *, force: bool = False
    ) -> Outcome:
        """:meth:`cancel` on the caller's event loop."""
        return await self._turn_back(execution_id, reason, take_over=True, force=force)

    async def _turn_back(
        self, execution_id: str, reason: str, *, take_over: bool, force: bool
    ) -> Outcome:
        claimed = await self._blocking(
            self._claim_for_turning_back, execution_id, reason, take_over, force
        )
        if isinstance(claimed, Outcome):
            return claimed
        return await self._drive_one(claimed)

    def _claim_for_turning_back(
        self, execution_id: str, reason: str, take_over: bool, force: bool
    ) -> Execution | Outcome:
        tries = 3 if take_over else 1
        for attempt in range(1, tries + 1):
            record = self.store.get(execution_id)
            if record.status is SagaStatus.COMPENSATED:
                return Outcome(record.id, record.saga, record.status)
            definition = self.definitions(record.saga)
            self.leases.check_definition(record, definition, force)
            state = replay(definition, self.store.events(record.id))
            _refuse_turning_back(record, definition, state)
            if state.status in (SagaStatus.COMPENSATING, SagaStatus.STUCK):
                kind, detail = EventType.SAGA_RESUMED, None
            else:
                kind, detail = EventType.COMPENSATION_REQUESTED, {"reason": reason}
            try:
                return self.leases.claim(record, definition, kind, detail, state, force=take_over)
            except ExecutionBusyError:
                if attempt == tries:
                    raise
                # a live owner wrote between our read and our claim: read again
        raise AssertionError("unreachable")  # pragma: no cover

    def resolve(self, execution_id: str, note: str) -> Outcome:
        """Record an operator's manual resolution of a stuck execution.

        The execution becomes compensated (or completed, if it was stuck past
        its point of no return), with `note` in the log.

        Raises:
            InvalidInputError: the note is empty, too long or not plain text, or
                the execution is not stuck.
            LeaseLostError: it changed while this ran.
        """
        from saga_cli.limits import check_note

        check_note(note)
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
        executions are in flight at once, each on its own, their log writes
        sharing commits.

        Args:
            concurrency: executions in flight at once.
            progress: called after each resumed execution.
            force: resume executions whose saga changed incompatibly too.

        Returns:
            The outcomes; executions owned by another live process are listed
            as busy, and those that could not be resumed (an unknown saga, a
            corrupt log, a lease lost mid-way) as failed, with the reason.
        """
        return self._sync(
            lambda: self.resume_all_async(concurrency=concurrency, progress=progress, force=force)
        )

    async def resume_all_async(
        self,
        *,
        concurrency: int = 1,
        progress: Callable[[Outcome], None] | None = None,
        force: bool = False,
    ) -> RecoveryReport:
        """:meth:`resume_all` on the caller's event loop."""
        _check_concurrency(concurrency)
        report = RecoveryReport([], [], {})
        claim_batch = max(concurrency, 16)

        def claim_page(page: list[ExecutionRecord]) -> list[Execution | Outcome]:
            now = self.clock()
            todo = []
            busy = []
            for record in page:
                if self.leases.driving(record.id):
                    continue  # this process is driving it already (an earlier page)
                if record.owner != self.owner and lease.holds_lease(record, now):
                    busy.append(record.id)
                else:
                    todo.append(record)
            claimed = self.leases.claim_many(todo, report, force)
            report.busy.extend(busy)  # once the claims committed: a retried page counts once
            return claimed

        pages = self.store.unfinished_pages(page=claim_batch)

        def next_page() -> list[ExecutionRecord] | None:
            nonlocal pages
            try:
                return next(pages, None)
            except LogUnavailableError:
                # Start over once the log answers: what this process took
                # meanwhile is skipped, what it finished is no longer unfinished.
                pages = self.store.unfinished_pages(page=claim_batch)
                raise

        def claim_again(page: list[ExecutionRecord]) -> list[Execution | Outcome]:
            # The claim may have committed before the log went away: read the
            # rows again, so the retry expects their versions as they are now.
            return claim_page([self.store.get(record.id) for record in page])

        async def feed() -> AsyncIterator[Execution | Outcome]:
            while True:
                page = await self._waiting_out(next_page, read=True)
                if page is None:
                    return
                try:
                    items = await self._blocking(claim_page, page)
                except LogUnavailableError as exc:
                    self.outage.failed(exc)
                    items = await self._waiting_out(claim_again, page)
                for item in items:
                    yield item

        def finished(outcome: Outcome) -> None:
            report.outcomes.append(outcome)
            if progress is not None:
                progress(outcome)

        def failed(execution_id: str, error: SagaError) -> None:
            report.failed[execution_id] = str(error)

        with self.outage.waiting():
            await self._window(feed(), concurrency, finished, failed)
        return report

    def run_claimed(
        self,
        claim: Callable[[int], Sequence[ExecutionRecord]],
        *,
        concurrency: int,
        finished: Callable[[Outcome], None],
        failed: Callable[[str, SagaError], None],
        stop: Callable[[], bool] | None = None,
        stop_now: Callable[[], bool] | None = None,
        poll: float = 1.0,
        exit_when_idle: bool = False,
        grace: float | None = None,
    ) -> int:
        """Drive executions that `claim` takes from the log (a worker's loop).

        `claim(limit)` takes up to `limit` ready executions with
        SagaStore.claim_ready (their logs then end with the claim's
        ``saga_resumed`` record); it runs on a thread. It is called whenever
        the window has room; when it finds nothing, the next look comes
        `poll` seconds later. Each execution is replayed and driven,
        `concurrency` at a time, the heartbeat renewing their leases.

        An execution that cannot be driven here (its saga is unknown or
        changed incompatibly, or its precondition refuses) is reported to
        `failed`. A worker asks before it claims (SagaStore.claim_ready's
        `admit`, with Leases.refusal), so such an execution is left untouched;
        one that `claim` took anyway keeps its claim until the lease expires.

        Once `stop` returns true, nothing more is claimed, each execution in
        hand has what it recorded committed and its lease released after the
        call it is making (calls still running `grace` seconds later, or at
        once when `stop_now` returns true, are abandoned and their executions
        released too), and the method returns.

        Returns:
            How many executions were released on a stop.
        """
        return self._sync(
            lambda: self.run_claimed_async(
                claim,
                concurrency=concurrency,
                finished=finished,
                failed=failed,
                stop=stop,
                stop_now=stop_now,
                poll=poll,
                exit_when_idle=exit_when_idle,
                grace=grace,
            )
        )

    async def run_claimed_async(
        self,
        claim: Callable[[int], Sequence[ExecutionRecord]],
        *,
        concurrency: int,
        finished: Callable[[Outcome], None],
        failed: Callable[[str, SagaError], None],
        stop: Callable[[], bool] | None = None,
        stop_now: Callable[[], bool] | None = None,
        poll: float = 1.0,
        exit_when_idle: bool = False,
        grace: float | None = None,
    ) -> int:
        """:meth:`run_claimed` on the caller's event loop."""
        _check_concurrency(concurrency)
        window = self._make_window(concurrency, finished, failed, grace)
        not_runnable: set[str] = set()  # claimed, and left to a worker with the right code

        def halt() -> bool:  # read on the feed's threads: only flags, never the loop
            return window.stopping.is_set() or (stop is not None and stop())

        def adopt(records: Sequence[ExecutionRecord]) -> list[Execution]:
            ids = [record.id for record in records]
            histories = self.outage.call(lambda: self.store.events_of(ids), halt, read=True)
            runs = []
            for record in records:
                adopted = self.leases.adopt(record, histories[record.id])
                if isinstance(adopted, SagaError):
                    not_runnable.add(record.id)
                    failed(record.id, adopted)
                else:
                    runs.append(adopted)
            return runs

        def orphaned() -> list[str]:
            """Executions the log says this process holds, yet it does not drive.

            A claim or a commit whose answer an outage cut off took or kept
            their leases; they are ready again once those run out.
            """
            held = self.store.held_executions([self.owner], self.clock())[self.owner]
            return [i for i in held if i not in not_runnable and not self.leases.driving(i)]

        async def feed() -> AsyncIterator[Execution | _NothingYet]:
            loop = asyncio.get_running_loop()
            while not window.stopping.is_set():
                # The window took a slot for what this yields next: it is free too.
                limit = window.free_slots() + 1
                try:
                    # During an outage nothing new is claimed: this waits for the log.
                    batch = await loop.run_in_executor(
                        None, self.outage.call, partial(claim, limit), halt
                    )
                    if batch:
                        for run in await loop.run_in_executor(None, adopt, batch):
                            yield run
                        continue
                    if exit_when_idle and window.in_flight <= 1:
                        look = partial(self.outage.call, orphaned, halt, read=True)
                        if not await loop.run_in_executor(None, look):
                            return
                except LogUnavailableError:
                    return  # stopped during an outage: nothing more to take
                try:
                    async with asyncio.timeout(poll):
                        await window.stopping.wait()
                except TimeoutError:
                    pass
                yield NOTHING_YET

        with self.outage.waiting():
            await self._run_window(window, feed(), stop, stop_now)
        return window.released

    # -- the engine's plumbing -------------------------------------------------------

    def _sync(self, operation: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Run an operation on this thread's event loop (made once, kept for later calls)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise RuntimeError(
                "this SagaRunner method blocks; inside a running event loop await its "
                "*_async counterpart instead"
            )
        loop: asyncio.AbstractEventLoop | None = getattr(self._local, "loop", None)
        if loop is None or loop.is_closed():
            loop = self._local.loop = asyncio.new_event_loop()
            self._own_loops.add(loop)
        task = loop.create_task(operation())
        try:
            return loop.run_until_complete(task)
        except BaseException:
            # Ctrl-C or a bug: executions in hand are handed back before we go.
            if not task.done():
                task.cancel()
                try:
                    loop.run_until_complete(task)
                except BaseException:  # noqa: S110  # the first error is the one to raise
                    pass
            raise

    async def _blocking(self, function: Callable[..., T], *args: Any) -> T:
        """Call a blocking store function: inline on our own loops, on a thread on a caller's."""
        if asyncio.get_running_loop() in self._own_loops:
            return function(*args)
        return await asyncio.to_thread(function, *args)

    async def _waiting_out(self, function: Callable[..., T], *args: Any, read: bool = False) -> T:
        """:meth:`_blocking`, called again (after a back-off) while the log does not answer.

        A `read` that succeeds does not end the outage (see Outage.call).

        Raises:
            OutageTooLongError: the outage outlasted the tracker's max_seconds.
        """
        while True:
            try:
                result = await self._blocking(function, *args)
            except LogUnavailableError as exc:
                self.outage.failed(exc)
                self.outage.check()
                await asyncio.sleep(self.outage.delay())
                continue
            if not read:
                self.outage.succeeded()
            return result

    async def _pause(self, seconds: float) -> None:
        if self._sleep is None:
            await asyncio.sleep(seconds)
            return
        slept = self._sleep(seconds)
        if slept is not None:
            await slept

    def _driver(self) -> Driver:
        """The driver of the running loop (one per loop: its executions share commits)."""
        loop = asyncio.get_running_loop()
        driver = self._drivers.get(loop)
        if driver is None:
            writer = LogWriter(
                loop,
                self._commits,
                self.store,
                self._write_for,
                self._committed,
                own=loop in self._own_loops,
                driving=lambda: driving.driving,
                calling=lambda: driving.calling,
            )
            driving = driver = Driver(writer, self.caller, self.clock, self.rng, self._sleep)
            driver.tracing = self._tracing
            self._drivers[loop] = driver
        return driver

    def _make_window(
        self,
        size: int,
        finished: Callable[[Outcome], None],
        failed: Callable[[str, SagaError], None],
        grace: float | None = None,
    ) -> Window:
        self.pool.grow(size)
        return Window(self._driver(), size, finished, failed, self.leases.leave, grace)

    async def _window(
        self,
        feed: Feed,
        size: int,
        finished: Callable[[Outcome], None],
        failed: Callable[[str, SagaError], None],
    ) -> None:
        await self._run_window(self._make_window(size, finished, failed), feed, None)

    async def _run_window(
        self,
        window: Window,
        feed: Feed,
        stop: Callable[[], bool] | None,
        stop_now: Callable[[], bool] | None = None,
    ) -> None:
        self.leases.start_heartbeat()
        await window.run(feed, stop, stop_now)

    async def _drive_one(self, run: Execution) -> Outcome:
        """Drive one execution to rest and return its outcome (its last records durable).

        Raises:
            LeaseLostError, ConcurrencyKeyBusyError, StoreError: as the writes were refused.
        """
        outcomes: list[Outcome] = []

        async def feed() -> AsyncIterator[Execution]:
            yield run

        def lost(_execution_id: str, error: SagaError) -> None:
            raise error

        await self._window(feed(), 1, outcomes.append, lost)
        return outcomes[0]

    def _new_run(
        self,
        definition: SagaDefinition,
        payload: Any,
        execution_id: str | None,
        deadline: float | None = None,
    ) -> Execution:
        """A new execution with its first event recorded, not yet written.

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
            payload_json = encode_payload(payload)
            if not isinstance(payload, dict):
                raise TypeError(f"expected an object, got {type(payload).__name__}")
        except (TypeError, ValueError, RecursionError) as exc:
            raise InvalidInputError(
                f"the payload cannot be stored as a JSON object: {exc}"
            ) from None
        # Steps see the payload as stored, so a resumed run sees the same values.
        stored = json.loads(payload_json)
        run = Execution(
            definition, execution_id or new_execution_id(), stored, SagaState(), 0, False
        )
        run.payload_json = payload_json
        run.key = concurrency_key_of(definition, run.typed_payload())
        detail: dict[str, Any] | None = None if deadline is None else {"deadline_at": deadline}
        if self._tracing is not None:
            # The trace starts here; the log keeps its context for whoever resumes it.
            run.span = self._tracing.start_execution(definition.name, run.id, None, resumed=False)
            traceparent = self._tracing.traceparent(run.span)
            if traceparent is not None:
                detail = {**(detail or {}), TRACE_KEY: traceparent}
        first = Event(seq=1, type=EventType.SAGA_STARTED, detail=detail, at=self.clock())
        run.state = apply(definition, run.state, first)
        run.pending.append(first)
        self.leases.enter(run.id)
        return run

    def _write_for(self, run: Execution, events: list[Event]) -> Write:
        """The store write that records `events` and the row's new projection."""
        state = run.state
        now = self.clock()
        current = state.current_step
        if current is not None:
            run.step_name = run.definition.steps[current].name
        resting = is_terminal(state.status) or state.status is SagaStatus.STUCK
        owner = None if resting or run.release else self.owner
        lease_until = None if owner is None else now + self.lease_seconds
        if lease_until is not None:
            self.leases.writing[run.id] = lease_until
        definition = run.definition
        alerts = (
            () if self.alerts is None else alerts_for(self.alerts, run.id, definition.name, events)
        )
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
                alerts,
            )
        registration = None
        if (definition.name, definition.version) not in self._registered:
            registration = DefinitionRecord(
                definition.name,
                definition.version,
                recorded_steps(definition.steps, definition.step_timeout),
                definition.source,
                now,
            )
        record = ExecutionRecord(
            id=run.id,
            saga=definition.name,
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
        return Creation(record, list(events), registration, alerts)

    def _committed(self, run: Execution, events: list[Event], version: int) -> None:
        """Take note of a committed write of `run` (on its loop's thread)."""
        run.version = version
        if not run.created:
            self._registered.add((run.definition.name, run.definition.version))
            run.created = True
        status = run.state.status
        lease_until = self.leases.writing.pop(run.id, None)
        if run.release or is_terminal(status) or status is SagaStatus.STUCK:
            self.leases.held.pop(run.id, None)  # the write released the lease
        else:
            self.leases.held[run.id] = version
            if lease_until is not None:
                self.leases.valid_until[run.id] = lease_until
        self._notify(run.id, events)

    def _notify(self, execution_id: str, events: list[Event]) -> None:
        if self.on_event is None:
            return
        for event in events:
            try:
                self.on_event(execution_id, event)
            except Exception:  # a broken display must not break a saga
                log.exception("event listener failed on %s", event.type.value)


def _check_concurrency(concurrency: int) -> None:
    if concurrency < 1:
        raise InvalidInputError(f"concurrency must be at least 1 (got {concurrency})")


def _refuse_turning_back(
    record: ExecutionRecord, definition: SagaDefinition, state: SagaState
) -> None:
    """Raise InvalidInputError when `record` can no longer be compensated."""
    if record.status is SagaStatus.COMPLETED:
        raise InvalidInputError(f"execution {record.id} completed; it cannot be compensated")
    if forward_only(definition, state):
        raise InvalidInputError(
            f"execution {record.id} passed its pivot; it can only move forward (use `saga resume`)"
        )
    if pivot_in_doubt(definition, state):
        raise InvalidInputError(
            f"execution {record.id} was cut short inside its pivot step, whose effect "
            "cannot be undone; `saga resume` it to learn the outcome"
        )
