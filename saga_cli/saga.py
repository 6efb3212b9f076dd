"""Declaring a saga with decorators: the form the README teaches.

A :class:`Saga` collects steps in the order they are declared and builds the
validated :class:`~saga_cli.domain.SagaDefinition` the engine runs::

    transfer = Saga("bank-transfer", payload=Transfer, concurrency_key=lambda t: t.source)

    @transfer.step()
    def debit(ctx: StepContext[Transfer]) -> dict[str, int]:
        return bank.debit(ctx.key, ctx.payload.source, ctx.payload.amount)

    @debit.compensation
    def refund(ctx: StepContext[Transfer]) -> None:
        bank.credit(ctx.key, ctx.payload.source, ctx.payload.amount)

The plain form, ``SagaDefinition(name, (Step(...), ...))``, builds the same thing.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import Any, Generic

from typing_extensions import TypeVar

from saga_cli.domain import (
    DEFAULT_COMPENSATION_RETRY,
    DEFAULT_RETRIABLE_RETRY,
    INHERIT,
    NO_RETRY,
    RetryPolicy,
    SagaDefinition,
    Step,
    StepContext,
    StepKind,
    Timeout,
)
from saga_cli.errors import DefinitionError

P = TypeVar("P", default=Any)
R = TypeVar("R", default=Any)


class StepHandle(Generic[P, R]):
    """A declared step: callable like its function; ``.compensation`` attaches the undo."""

    def __init__(
        self,
        saga: Saga[P],
        name: str,
        action: Callable[[StepContext[P]], R],
        kind: StepKind,
        retry: RetryPolicy,
        compensation_retry: RetryPolicy,
        timeout: Timeout,
        group: str | None,
    ) -> None:
        self.saga = saga
        self.name = name
        self.action = action
        self.kind = kind
        self.retry = retry
        self.compensation_retry = compensation_retry
        self.timeout = timeout
        self.group = group
        self.compensate: Callable[[StepContext[P]], Any] | None = None
        self.__doc__ = action.__doc__
        self.__wrapped__ = action

    def __call__(self, ctx: StepContext[P]) -> R:
        """Run the action directly (handy in unit tests)."""
        return self.action(ctx)

    def compensation(
        self, function: Callable[[StepContext[P]], Any]
    ) -> Callable[[StepContext[P]], Any]:
        """Decorator: `function` semantically undoes this step (ctx.action_key names it).

        Raises:
            DefinitionError: the step already has one.
        """
        if self.compensate is not None:
            raise DefinitionError(f"step {self.name!r} already has a compensation")
        self.compensate = function
        self.saga._changed()
        return function

    def to_step(self) -> Step:
        """The engine's :class:`Step` for this declaration."""
        return Step(
            self.name,
            self.action,
            self.compensate,
            self.kind,
            self.retry,
            self.compensation_retry,
            self.timeout,
            self.group,
        )


class Saga(Generic[P]):
    """A saga declared with decorators; its steps run in the order they are declared.

    Args:
        name: the saga's name, stored with every execution (keep it stable).
        payload: a pydantic model (SQLModel works) validating each execution's
            input; steps get an instance of it as ``ctx.payload``.
        concurrency_key: computes a key from the payload; two unfinished
            executions with the same key never run at once (the second waits
            or is refused). Keys are shared by every saga of a log: prefix them.
        description: one line for ``saga definitions``.
        step_timeout: seconds a step's call may take when the step gives no
            timeout of its own (by default the engine's, 60 s; None: no limit).
    """

    def __init__(
        self,
        name: str,
        *,
        payload: type[P] | None = None,
        concurrency_key: Callable[[P], str] | None = None,
        description: str = "",
        step_timeout: Timeout = INHERIT,
    ) -> None:
        self.name = name
        self.step_timeout = step_timeout
        self.payload = payload
        self.concurrency_key = concurrency_key
        self.description = description
        self.source: str | None = None
        self.handles: list[StepHandle[P, Any]] = []
        self._group: str | None = None
        self._groups = 0
        self._built: SagaDefinition | None = None
        # Where the saga was declared, so that a resume can import it again.
        self._module: str = sys._getframe(1).f_globals.get("__name__", "")

    def step(
        self,
        name: str | None = None,
        *,
        kind: StepKind | str = StepKind.COMPENSATABLE,
        retry: RetryPolicy | None = None,
        compensation_retry: RetryPolicy = DEFAULT_COMPENSATION_RETRY,
        timeout: Timeout = INHERIT,
        compensation: Callable[[StepContext[P]], Any] | None = None,
    ) -> Callable[[Callable[[StepContext[P]], R]], StepHandle[P, R]]:
        """Decorator: declare the next step.

        Args:
            name: the step's name in the log (default: the function's name).
            kind: compensatable (the default; needs a compensation), pivot
                (the point of no return) or retriable (after the pivot;
                retried until it succeeds).
            retry: attempts and backoff for the action (retriable steps
                default to 10 attempts with backoff, others to 1).
            compensation_retry: attempts and backoff for the compensation.
            timeout: seconds to wait for an answer; past it the call counts
                as failed with its effect unknown. By default the saga's
                `step_timeout` applies; None waits for good.
            compensation: the compensation, if already defined (or use
                ``@step.compensation`` below the step).
        """
        step_kind = StepKind(kind)
        policy = retry or (DEFAULT_RETRIABLE_RETRY if step_kind is StepKind.RETRIABLE else NO_RETRY)

        def declare(action: Callable[[StepContext[P]], R]) -> StepHandle[P, R]:
            handle: StepHandle[P, R] = StepHandle(
                self,
                name or action.__name__,
                action,
                step_kind,
                policy,
                compensation_retry,
                timeout,
                self._group,
            )
            handle.compensate = compensation
            self.handles.append(handle)
            self._changed()
            return handle

        return declare

    @contextlib.contextmanager
    def parallel(self, name: str | None = None) -> Iterator[None]:
        """Steps declared inside this block run concurrently, and so do their compensations.

        Example::

            with trip.parallel():
                @trip.step()
                def hotel(ctx): ...
                @trip.step()
                def car(ctx): ...
        """
        if self._group is not None:
            raise DefinitionError("parallel blocks cannot be nested")
        self._groups += 1
        self._group = name or f"parallel-{self._groups}"
        try:
            yield
        finally:
            self._group = None

    def _changed(self) -> None:
        self._built = None

    @property
    def definition(self) -> SagaDefinition:
        """The validated definition the engine runs (built once, rebuilt after changes).

        Raises:
            DefinitionError: the steps do not make a valid saga.
        """
        if self._built is None:
            self._built = SagaDefinition(
                self.name,
                tuple(handle.to_step() for handle in self.handles),
                payload=self.payload,
                concurrency_key=self.concurrency_key,
                description=self.description,
                source=self.source or self._guess_source(),
                step_timeout=self.step_timeout,
            )
        return self._built

    def _guess_source(self) -> str | None:
        """``module:attr`` (or ``file.py:attr`` for a script) naming this saga, if it is global."""
        module = sys.modules.get(self._module)
        if module is None:
            return None
        for attr, value in vars(module).items():
            if value is self:
                where = getattr(module, "__file__", None) if self._module == "__main__" else None
                return f"{where or self._module}:{attr}"
        return None

    def __repr__(self) -> str:
        return f"Saga({self.name!r}, steps={[h.name for h in self.handles]})"


SagaLike = Saga[Any] | SagaDefinition


def as_definition(saga: SagaLike) -> SagaDefinition:
    """The definition behind a :class:`Saga` (or the definition itself)."""
    if isinstance(saga, Saga):
        return saga.definition
    if isinstance(saga, SagaDefinition):
        return saga
    raise DefinitionError(f"expected a Saga or a SagaDefinition, got {type(saga).__name__}")
