"""Circuit breakers: stop calling a service that keeps failing, then try it again.

A breaker counts consecutive failures of one service (business refusals are
answers, not failures). At the threshold it opens: calls fail at once with
:class:`CircuitOpenError` (a transient error, so the runner's retry policy and
backoff apply) until the cool-down is over. Then one trial call goes through
(half-open): success closes the breaker, failure opens it again.

State changes are handed to a callback, which the travel demo uses to keep
them in the saga log's database, so `saga services` shows them and a new
process starts from what the last one saw.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, TypeVar

from saga_cli.errors import BusinessError, DefinitionError, NotSentError

T = TypeVar("T")


class CircuitOpenError(NotSentError):
    """Raised instead of calling a service whose breaker is open (nothing was sent)."""


class BreakerState(StrEnum):
    """Where a breaker stands; the values are stored verbatim."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    """When a breaker opens and how long it stays open.

    Attributes:
        failure_threshold: consecutive failures that open it.
        cooldown: seconds it stays open before one trial call.
    """

    failure_threshold: int = 5
    cooldown: float = 5.0

    def __post_init__(self) -> None:
        if self.failure_threshold < 1 or not self.cooldown > 0:
            raise DefinitionError("a breaker needs failure_threshold >= 1 and cooldown > 0")


@dataclass(frozen=True, slots=True)
class BreakerSnapshot:
    """A breaker's state at one moment (what is stored and shown)."""

    service: str
    state: BreakerState = BreakerState.CLOSED
    failures: int = 0
    opened_at: float | None = None
    last_error: str | None = None
    updated_at: float = 0.0


class CircuitBreaker:
    """The breaker of one service; thread-safe.

    Args:
        snapshot: where it starts (e.g. as a previous process left it).
        policy: threshold and cool-down.
        on_change: called with the new snapshot whenever the state or the
            failure count changes (not on the common success-while-closed).
        clock: injectable for tests.
    """

    def __init__(
        self,
        snapshot: BreakerSnapshot,
        policy: BreakerPolicy = BreakerPolicy(),
        on_change: Callable[[BreakerSnapshot], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._snapshot = snapshot
        self.policy = policy
        self._on_change = on_change
        self._clock = clock
        self._lock = threading.Lock()
        self._trial_running = False

    @property
    def snapshot(self) -> BreakerSnapshot:
        """The current state."""
        return self._snapshot

    def call(self, function: Callable[..., T], *args: Any) -> T:
        """Call `function` through the breaker.

        Raises:
            CircuitOpenError: the breaker is open (or a trial call is running).
        """
        self._admit()
        try:
            result = function(*args)
        except BusinessError:
            self._succeeded()  # the service answered: it is up
            raise
        except Exception as exc:
            self._failed(exc)
            raise
        self._succeeded()
        return result

    async def call_async(self, function: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Await `function` through the breaker (see :meth:`call`).

        Raises:
            CircuitOpenError: the breaker is open (or a trial call is running).
        """
        self._admit()
        try:
            result = await function(*args)
        except BusinessError:
            self._succeeded()  # the service answered: it is up
            raise
        except Exception as exc:
            self._failed(exc)
            raise
        except asyncio.CancelledError:
            # No answer in time (the step's timeout cancelled the call): a failure too.
            self._failed(TimeoutError("no answer before the call was cancelled"))
            raise
        self._succeeded()
        return result

    def reset(self) -> None:
        """Close the breaker by hand, forgetting its failures."""
        with self._lock:
            self._trial_running = False
            self._change(
                replace(
                    self._snapshot,
                    state=BreakerState.CLOSED,
                    failures=0,
                    opened_at=None,
                    updated_at=self._clock(),
                )
            )

    def _admit(self) -> None:
        with self._lock:
            s = self._snapshot
            if s.state is BreakerState.CLOSED:
                return
            now = self._clock()
            if s.state is BreakerState.OPEN:
                remaining = (s.opened_at or now) + self.policy.cooldown - now
                if remaining > 0:
                    raise CircuitOpenError(
                        f"{s.service} circuit open after {s.failures} failures; "
                        f"failing fast for {remaining:.1f}s more",
                        retry_after=remaining,
                    )
                self._change(replace(s, state=BreakerState.HALF_OPEN, updated_at=now))
            if self._trial_running:
                raise CircuitOpenError(
                    f"{s.service} circuit half-open; a trial call is running", retry_after=0.1
                )
            self._trial_running = True

    def _succeeded(self) -> None:
        with self._lock:
            self._trial_running = False
            s = self._snapshot
            if s.state is not BreakerState.CLOSED or s.failures:
                self._change(
                    replace(
                        s,
                        state=BreakerState.CLOSED,
                        failures=0,
                        opened_at=None,
                        updated_at=self._clock(),
                    )
                )

    def _failed(self, exc: Exception) -> None:
        with self._lock:
            self._trial_running = False
            s = self._snapshot
            now = self._clock()
            failures = s.failures + 1
            opens = s.state is BreakerState.HALF_OPEN or failures >= self.policy.failure_threshold
            self._change(
                replace(
                    s,
                    state=BreakerState.OPEN if opens else s.state,
                    failures=failures,
                    opened_at=now if opens else s.opened_at,
                    last_error=str(exc) or type(exc).__name__,
                    updated_at=now,
                )
            )

    def _change(self, snapshot: BreakerSnapshot) -> None:
        self._snapshot = snapshot
        if self._on_change is not None:
            self._on_change(snapshot)
