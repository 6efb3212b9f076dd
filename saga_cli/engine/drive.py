"""One execution's loop: ask the state machine, log the intent, call, log the outcome.

Read this module first to understand the engine. Each execution in flight
is an asyncio task running :meth:`Driver.drive`:

    while not at rest:
        decision = decide(definition, state, now)       # pure (saga_cli.domain)
        record the `started` events of the calls it asks for
        await writer.commit(execution)                  # durable: the write-ahead rule
        outcomes = await the calls                       # overlaps with every other execution
        record the outcomes                              # they ride on the next commit

A slow call holds up only its own execution; commits are shared by every
execution on the loop (see :mod:`saga_cli.engine.writer`).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from saga_cli.domain import (
    Abort,
    Calls,
    Event,
    EventType,
    Finish,
    Rest,
    RunCompensation,
    RunStep,
    Step,
    StepKind,
    apply,
    decide,
)
from saga_cli.engine.calls import Failure, StepCaller, failure_detail, order_of
from saga_cli.engine.execution import Execution, Outcome
from saga_cli.engine.writer import LogWriter
from saga_cli.tracing import Tracing

Sleep = Callable[[float], Awaitable[None] | None]
log = logging.getLogger(__name__)


class Stop(Protocol):
    """Whether the executions of a window must hand themselves back."""

    stopping: asyncio.Event

    def requested(self) -> bool:
        """True once a stop was asked for (looked at before each new call)."""


Call = RunStep | RunCompensation


class Driver:
    """Drives executions on one event loop, all sharing its log writer.

    Args:
        writer: commits the executions' records.
        caller: calls their participants.
        clock: the time, for records and retry schedules.
        rng: jitter of retry delays.
        sleep: waits out a retry's back-off (None: an asyncio sleep that a
            stop request cuts short); tests inject their own.
    """

    def __init__(
        self,
        writer: LogWriter,
        caller: StepCaller,
        clock: Callable[[], float],
        rng: random.Random,
        sleep: Sleep | None = None,
    ) -> None:
        self.writer = writer
        self.caller = caller
        self.clock = clock
        self.rng = rng
        self.sleep = sleep
        # Spans of executions, when traces are wanted (None costs one check per drive).
        self.tracing: Tracing | None = None
        # Executions taken by the windows on this loop and not yet at rest: while
        # it is 1, nothing else could use the loop during a commit's fsync, so
        # the writer commits inline rather than hand each commit to its thread.
        self.driving = 0
        # Executions inside a participant call: while none is, every execution
        # in hand reaches its next commit in this pass of the loop (they advance
        # in step), so a commit waits for them all; while some are, it goes at once.
        self.calling = 0

    async def drive(self, run: Execution, stop: Stop) -> Outcome | None:
        """Run `run` until it is completed, compensated or stuck; its last records may be pending.

        Returns:
            The outcome (the caller makes its last records durable with
            LogWriter.settle), or None when a stop was requested and the
            execution was handed back, its lease released, for any process
            to claim.

        Raises:
            LeaseLostError: another owner took the execution over.
            StoreError: the log failed; what was not committed is lost and
                the execution is left for a resume.
        """
        if self.tracing is not None:
            return await self._drive_traced(run, stop, self.tracing)
        return await self._drive(run, stop)

    async def _drive_traced(self, run: Execution, stop: Stop, tracing: Tracing) -> Outcome | None:
        """:meth:`drive` inside the execution's span (continuing its trace if it was resumed)."""
        if run.span is None:
            run.span = tracing.start_execution(
                run.definition.name, run.id, run.state.trace, resumed=True
            )
        try:
            outcome = await self._drive(run, stop)
        except BaseException as exc:
            tracing.fail_execution(run.span, exc)
            run.span = None
            raise
        if outcome is None:
            tracing.end_execution(run.span, None)
        else:
            tracing.end_execution(run.span, outcome.status.value, outcome.error)
        run.span = None
        return outcome

    async def _drive(self, run: Execution, stop: Stop) -> Outcome | None:
        slept_until = 0.0  # after a back-off sleep, what is due counts as due
        try:
            while True:
                if stop.requested():
                    await self.let_go(run)
                    return None
                now = max(self.clock(), slept_until)
                decision = decide(run.definition, run.state, now)
                if isinstance(decision, Calls):
                    ready, wake = self._start(run, decision, now)
                    # The write-ahead rule: the started records are durable
                    # before any participant is called.
                    await self.writer.commit(run)
                    if ready:
                        await self._make_calls(run, ready)
                    elif wake is not None:  # every call waits for its retry time
                        await self._pause(max(0.0, wake - self.clock()), stop.stopping)
                        slept_until = wake
                    continue
                if isinstance(decision, Rest):
                    return run.outcome()
                if isinstance(decision, Abort):
                    # deadline_at marks the engine's own request (an alert's cause)
                    reason = {"reason": decision.reason, "deadline_at": run.state.deadline}
                    self.record(run, EventType.COMPENSATION_REQUESTED, None, 0, reason)
                elif isinstance(decision, Finish):
                    self.record(run, decision.event, None)
                else:  # Halt: calls gave up and nothing else can run
                    name = run.definition.steps[decision.index].name
                    error = {"error": decision.error}
                    self.record(run, EventType.SAGA_STUCK, name, decision.attempt, error)
        except asyncio.CancelledError:
            # Told to stop now (a grace period ran out): hand the execution
            # back with what it recorded; a call still running is abandoned,
            # and its step is called again, under the same key, by the next owner.
            await self._hand_back(run)
            raise

    async def _hand_back(self, run: Execution) -> None:
        """:meth:`let_go`, unless the log is unreachable: then the lease runs out instead.

        Shielded from the cancellation being handled (a second one cuts it short).
        """
        release = asyncio.ensure_future(self.let_go(run))
        try:
            while not release.done():
                if self.writer.outage.active:  # the release would wait for the log
                    return
                await asyncio.wait({release}, timeout=0.05)
            release.result()
        finally:
            release.cancel()  # a no-op once done

    async def let_go(self, run: Execution) -> None:
        """Commit what `run` recorded and release its lease, in one write.

        Its status stays as it is, and it is ready for any process to claim at
        once; the write bumps the version like any other, so this process is
        fenced off it.
        """
        if not run.created and not run.pending:
            return
        run.release = True
        await self.writer.commit(run)

    def record(
        self,
        run: Execution,
        kind: EventType,
        step: str | None,
        attempt: int = 0,
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        """Fold an event into `run`'s state; it joins the records of its next commit."""
        event = Event(run.state.next_seq, kind, step, attempt, detail, self.clock())
        run.state = apply(run.definition, run.state, event)
        run.pending.append(event)

    def _start(
        self, run: Execution, decision: Calls, now: float
    ) -> tuple[list[Call], float | None]:
        """Record the started events of the calls due now; return them and the next wake-up."""
        ready: list[Call] = []
        wake: float | None = None
        steps = run.definition.steps
        for call in decision.calls:
            if call.record:
                if call.not_before > now:  # backing off
                    wake = call.not_before if wake is None else min(wake, call.not_before)
                    continue
                compensating = isinstance(call, RunCompensation)
                started = EventType.COMPENSATION_STARTED if compensating else EventType.STEP_STARTED
                self.record(run, started, steps[call.index].name, call.attempt)
            ready.append(call)
        return ready, wake

    async def _make_calls(self, run: Execution, calls: list[Call]) -> None:
        """Call the participants of `calls` (concurrently if several) and record the outcomes."""
        self.calling += 1
        try:
            await self._call_and_record(run, calls)
        finally:
            self.calling -= 1

    async def _call_and_record(self, run: Execution, calls: list[Call]) -> None:
        steps = run.definition.steps
        if len(calls) == 1:
            call = calls[0]
            compensating = isinstance(call, RunCompensation)
            step = steps[call.index]
            outcome = await self.caller.call(run, step, call.attempt, compensating)
            self._record_outcome(run, step, call.attempt, compensating, outcome)
            return
        outcomes = await asyncio.gather(
            *(
                self.caller.call(
                    run, steps[call.index], call.attempt, isinstance(call, RunCompensation)
                )
                for call in calls
            )
        )
        answered = []
        for call, outcome in zip(calls, outcomes, strict=True):
            compensating = isinstance(call, RunCompensation)
            step = steps[call.index]
            if isinstance(outcome, Failure):
                outcome.detail = failure_detail(
                    step, call.attempt, compensating, outcome, self.clock(), self.rng
                )
            answered.append((order_of(outcome), call, step, compensating, outcome))
        answered.sort(key=lambda item: item[0])
        for _order, call, step, compensating, outcome in answered:
            self._record_outcome(run, step, call.attempt, compensating, outcome)

    def _record_outcome(
        self, run: Execution, step: Step, attempt: int, compensating: bool, outcome: Any
    ) -> None:
        if isinstance(outcome, Failure):
            self._record_failure(run, step, attempt, compensating, outcome)
        elif compensating:
            self.record(run, EventType.COMPENSATION_SUCCEEDED, step.name, attempt)
        else:
            self.record(run, EventType.STEP_SUCCEEDED, step.name, attempt, {"result": outcome})

    def _record_failure(
        self, run: Execution, step: Step, attempt: int, compensating: bool, failure: Failure
    ) -> None:
        detail = failure.detail or failure_detail(
            step, attempt, compensating, failure, self.clock(), self.rng
        )
        failed = EventType.COMPENSATION_FAILED if compensating else EventType.STEP_FAILED
        self.record(run, failed, step.name, attempt, detail)
        if log.isEnabledFor(logging.INFO):  # -v
            log.info(
                "%s %s of %s failed (attempt %d): %s: %s%s",
                "compensation of" if compensating else "step",
                step.name,
                run.id,
                attempt,
                detail.get("exception"),
                detail["error"],
                f"\n{detail['traceback']}" if "traceback" in detail else "",
            )
        if "uncertain" in detail and step.kind is StepKind.PIVOT:
            # The pivot may have happened and nothing can undo it: stop here;
            # a resume asks again under the same key. (A call that gave up
            # otherwise is recorded stuck by decide(), once its group answered.)
            message = (
                f"pivot step {step.name!r} gave up after {attempt} attempt(s): {detail['error']}"
            )
            self.record(run, EventType.SAGA_STUCK, step.name, attempt, {"error": message})

    async def _pause(self, seconds: float, stopping: asyncio.Event) -> None:
        """Wait out a back-off, returning early when a stop is requested."""
        if self.sleep is not None:
            slept = self.sleep(seconds)
            if inspect.isawaitable(slept):
                await slept
            return
        if seconds <= 0 or stopping.is_set():
            return
        try:
            async with asyncio.timeout(seconds):
                await stopping.wait()
        except TimeoutError:
            pass
