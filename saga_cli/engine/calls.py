"""Calling participants: ``async def`` steps on the event loop, plain ``def`` steps on threads.

Every call is bounded by a timeout (the step's, else the saga's, else the
engine's default), so no call waits forever unless a step asks for that with
``timeout=None``. An async call that times out is cancelled; a sync one is
abandoned on its thread (Python cannot stop a thread) and may still land
later, which is what a late request does to a real service: its effect is
unknown, so the step is compensated and the participant's tombstone refuses
the late arrival.

A call's outcome is its JSON result or a :class:`Failure`; what the log then
records about a failure (the exception's type and the user's frames of its
traceback, retry when, or effect uncertain) is decided by :func:`failure_detail`.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import math
import os
import random
import threading
import time
import traceback
from typing import Any

from saga_cli.domain import (
    Inherit,
    SagaDefinition,
    Step,
    StepContext,
    StepFunction,
    StepKind,
    is_async,
)
from saga_cli.engine.execution import Execution
from saga_cli.engine.observer import EngineObserver
from saga_cli.engine.threads import CallPool
from saga_cli.errors import (
    BusinessError,
    NotSentError,
    StepResultError,
    StepTimeoutError,
)
from saga_cli.tracing import Tracing

# What a step may return, checked strictly: the log must hold it as JSON
# (no NaN, no Infinity, nothing stringified), and later steps must see the
# same value whether or not the execution was resumed in between.
_encode_result = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode

# A failure's traceback in the log is bounded: the newest frames of each
# exception in its chain, each line cut short, the whole cut to its tail.
TRACEBACK_FRAMES = 20
TRACEBACK_CHAIN = 3
TRACEBACK_LINE = 300
TRACEBACK_CHARS = 4000
# Frames in these directories and files are the engine's and asyncio's
# plumbing, not the user's code: they say nothing about why a step failed.
_PLUMBING = tuple(os.path.dirname(path) + os.sep for path in (__file__, asyncio.__file__))
_PLUMBING_FILES = frozenset({threading.__file__})


class Failure:
    """A call that raised: the exception, and the record it gets once classified."""

    __slots__ = ("detail", "error")

    def __init__(self, error: BaseException) -> None:
        self.error = error
        self.detail: dict[str, Any] | None = None


def order_of(outcome: Any) -> int:
    """Where a parallel group member's outcome is recorded among its siblings'.

    Successes first, then failures that will be retried, then failures that
    turn the saga back: so every member that succeeded is known, and
    compensated, whichever member failed.
    """
    if not isinstance(outcome, Failure):
        return 0
    return 1 if outcome.detail is not None and "retry_at" in outcome.detail else 2


class StepCaller:
    """Invokes steps and compensations with their timeouts.

    Args:
        pool: the threads plain ``def`` steps run on.
        default_timeout: seconds a call may take when neither the step nor the
            saga says (None: no limit).
    """

    def __init__(self, pool: CallPool, default_timeout: float | None) -> None:
        self.pool = pool
        self.default_timeout = default_timeout
        # Spans of calls, when traces are wanted (None costs one check per call).
        self.tracing: Tracing | None = None
        # Told each call's duration, for metrics (None costs one check per call).
        self.observer: EngineObserver | None = None
        self._async: dict[Any, bool] = {}

    def timeout_of(self, definition: SagaDefinition, step: Step) -> float | None:
        """The seconds a call of `step` may take: its own, else its saga's, else the default."""
        if not isinstance(step.timeout, Inherit):
            return step.timeout
        if not isinstance(definition.step_timeout, Inherit):
            return definition.step_timeout
        return self.default_timeout

    async def call(self, run: Execution, step: Step, attempt: int, compensating: bool) -> Any:
        """Call a step's action (or compensation); return its JSON result or a :class:`Failure`."""
        observer = self.observer
        if observer is None:
            return await self._call(run, step, attempt, compensating)
        started = time.perf_counter()
        outcome = await self._call(run, step, attempt, compensating)
        observer.call_finished(
            run.definition.name,
            step.name,
            compensating,
            isinstance(outcome, Failure),
            time.perf_counter() - started,
        )
        return outcome

    async def _call(self, run: Execution, step: Step, attempt: int, compensating: bool) -> Any:
        action_key = f"{run.id}:{step.name}"
        function: StepFunction = step.action
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
        timeout = self.timeout_of(run.definition, step)
        if self.tracing is not None:
            return await self._traced(run, step, compensating, function, context, timeout)
        try:
            result = await self._invoke(function, context, timeout)
        except Exception as exc:
            return Failure(exc)
        return _as_json(result, step, compensating)

    async def _traced(
        self,
        run: Execution,
        step: Step,
        compensating: bool,
        function: StepFunction,
        context: StepContext[Any],
        timeout: float | None,
    ) -> Any:
        """:meth:`call` inside a span of its own, current while the step runs."""
        tracing = self.tracing
        assert tracing is not None
        span = tracing.start_call(
            run.span,
            saga=run.definition.name,
            execution_id=run.id,
            step=step.name,
            kind=step.kind.value,
            attempt=context.attempt,
            compensating=compensating,
            key=context.key,
        )
        token = tracing.attach(span)
        try:
            result = await self._invoke(function, context, timeout, span)
        except Exception as exc:
            tracing.end_call(span, exc)
            return Failure(exc)
        except BaseException:
            tracing.end_call(span, None, cancelled=True)
            raise
        finally:
            tracing.detach(token)
        outcome = _as_json(result, step, compensating)
        tracing.end_call(span, outcome.error if isinstance(outcome, Failure) else None)
        return outcome

    async def _invoke(
        self,
        function: StepFunction,
        context: StepContext[Any],
        timeout: float | None,
        span: Any = None,
    ) -> Any:
        runs_async = self._async.get(function)
        if runs_async is None:
            runs_async = self._async[function] = is_async(function)
        if timeout is None:  # asked for no limit
            return await self._run(function, context, runs_async, span)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            async with asyncio.timeout_at(deadline):
                return await self._run(function, context, runs_async, span)
        except TimeoutError:
            if loop.time() >= deadline:
                raise StepTimeoutError(
                    f"{context.step} did not answer within {timeout:g}s"
                ) from None
            raise

    async def _run(
        self, function: StepFunction, context: StepContext[Any], runs_async: bool, span: Any
    ) -> Any:
        if runs_async:
            return await function(context)
        if span is not None and self.tracing is not None:
            # A thread does not inherit the loop's context: hand it the span.
            function = self.tracing.bound(span, function)
        result = await self._on_thread(function, context)
        if inspect.isawaitable(result):  # a plain function that returned a coroutine
            result = await result
        return result

    async def _on_thread(self, function: StepFunction, context: StepContext[Any]) -> Any:
        job, future = self.pool.call(function, context)
        try:
            return await future
        except BaseException:
            # Timed out or cancelled: the thread goes on alone, outside the bound.
            self.pool.abandon(job)
            raise


def _as_json(result: Any, step: Step, compensating: bool) -> Any:
    """`result` as the log will hold it, or a Failure when JSON cannot hold it."""
    if result is None or isinstance(result, str | int | bool):
        return result
    if isinstance(result, float) and math.isfinite(result):
        return result
    try:
        return json.loads(_encode_result(result))
    except (TypeError, ValueError, RecursionError) as exc:
        what = "compensation of step" if compensating else "step"
        return Failure(
            StepResultError(
                f"{what} {step.name!r} returned a {type(result).__name__}, which the saga log "
                f"cannot store as JSON ({exc}); return JSON data (dict, list, str, number, "
                "bool, None)"
            )
        )


def failure_detail(
    step: Step,
    attempt: int,
    compensating: bool,
    failure: Failure,
    now: float,
    rng: random.Random,
) -> dict[str, Any]:
    """What a failed call's record says: the error, and a retry time or uncertainty."""
    exc = failure.error
    error = str(exc) or type(exc).__name__
    detail: dict[str, Any] = {"error": error, "kind": type(exc).__name__}
    kind = type(exc)
    detail["exception"] = (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )
    # A business refusal is an answer, its message the whole story; anything
    # else may be a bug, and its traceback says where.
    if not isinstance(exc, BusinessError):
        trace = user_traceback(exc)
        if trace is not None:
            detail["traceback"] = trace
    business = isinstance(exc, BusinessError) and not compensating
    # An action that timed out is not retried: its effect is unknown, so it is
    # compensated. A compensation that timed out is retried: it must get through.
    timed_out = isinstance(exc, StepTimeoutError) and not compensating
    # A result the log cannot hold would come back the same on a retry.
    unstorable = isinstance(exc, StepResultError)
    # Never sent (an open breaker): nothing happened. A step before the
    # pivot fails fast (that is the breaker's point) and is not compensated.
    not_sent = isinstance(exc, NotSentError)
    policy = step.compensation_retry if compensating else step.retry
    retrying = not (business or timed_out or unstorable) and attempt < policy.max_attempts
    # A compensation, or a retriable step past the pivot, must get through
    # in the end: they wait out an open breaker instead of giving up.
    must_get_through = compensating or step.kind is StepKind.RETRIABLE
    if retrying and (must_get_through or not not_sent):
        delay = policy.delay_before(attempt + 1, rng)
        if not_sent:
            delay = max(delay, getattr(exc, "retry_after", 0.0))
        detail["retry_at"] = now + delay
    elif not business and not compensating and not not_sent:
        detail["uncertain"] = True  # the effect may exist: compensate it too
    return detail


def user_traceback(exc: BaseException) -> str | None:
    """The user's frames of `exc`'s traceback (and of its causes), bounded; None if none.

    Frames of the engine and of asyncio are left out. No frame's local
    variables are captured (they may hold secrets): only file, line,
    function and source line, as Python prints them.
    """
    chain: list[BaseException] = []
    link: BaseException | None = exc
    while link is not None and len(chain) < TRACEBACK_CHAIN and link not in chain:
        chain.append(link)
        link = link.__cause__ or (None if link.__suppress_context__ else link.__context__)
    parts: list[str] = []
    user_frames = 0
    for position, link in enumerate(reversed(chain)):
        frames = [
            frame
            for frame in traceback.extract_tb(link.__traceback__)
            if not frame.filename.startswith(_PLUMBING) and frame.filename not in _PLUMBING_FILES
        ]
        user_frames += len(frames)
        if position:
            parts.append("\nThe above exception led to the following one:\n\n")
        if frames:
            parts.append("Traceback (most recent call last):\n")
            if len(frames) > TRACEBACK_FRAMES:
                parts.append(f"  ... {len(frames) - TRACEBACK_FRAMES} earlier frame(s)\n")
                frames = frames[-TRACEBACK_FRAMES:]
            parts += traceback.StackSummary.from_list(frames).format()
        parts += traceback.format_exception_only(type(link), link)
    if not user_frames:
        return None
    lines = "".join(parts).splitlines()
    text = "\n".join(
        line if len(line) <= TRACEBACK_LINE else line[:TRACEBACK_LINE] + "…" for line in lines
    )
    if len(text) > TRACEBACK_CHARS:
        text = "…" + text[-(TRACEBACK_CHARS - 1) :]
    return text
