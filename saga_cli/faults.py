"""Failure injection for any saga: make steps fail, flake, slow down, or kill the process.

``saga run`` takes these options for users' sagas, ``saga book`` for the
travel demo, and :mod:`saga_cli.testing` kills a child process at every
crash point with them. They wrap a definition's functions and leave its
steps, and so its version, unchanged.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from saga_cli.errors import BusinessError, InvalidInputError, TransientError
from saga_cli.limits import whole

# The most attempts a fault may count (--flaky car:N, --crash-at car:after@N).
MAX_ATTEMPT = 1_000_000

if TYPE_CHECKING:
    from saga_cli.domain import SagaDefinition, StepContext

# The option tables below are read by the CLI's --help, which must stay fast:
# the domain (and asyncio) are imported by the functions that need them.
Call = Callable[["StepContext[Any]"], Any]


def is_async(call: Call) -> bool:
    """Whether `call` is an ``async def`` (see saga_cli.domain.is_async)."""
    from saga_cli.domain import is_async as domain_is_async

    return domain_is_async(call)


class InjectedFailureError(BusinessError):
    """Raised by ``--fail STEP``: the step declines, as its service would."""


class FlakyError(TransientError):
    """Raised by ``--flaky`` and ``--fail-compensation``: a failure worth retrying."""


@dataclass(frozen=True, slots=True)
class CrashPoint:
    """Where ``--crash-at`` kills the process: ``STEP:before|after`` or ``compensate-STEP:…``.

    ``before`` dies once the call's ``started`` record is durable, before the
    participant runs; ``after`` dies once it ran, before its outcome is
    recorded. ``@N`` picks the attempt (``hotel:before@2`` dies between a
    failed first attempt and the second); without it, the first call dies.
    """

    step: str
    compensation: bool
    when: str
    attempt: int | None = None

    @classmethod
    def parse(cls, text: str, steps: Sequence[str], compensatable: Sequence[str]) -> CrashPoint:
        """Parse ``car:after``, ``compensate-hotel:before`` or ``hotel:before@2``.

        Args:
            text: the point.
            steps: the saga's step names.
            compensatable: the names of the steps that have a compensation.

        Raises:
            InvalidInputError: unknown step, moment or attempt.
        """
        spec, _, attempt_text = text.partition("@")
        attempt = None
        if attempt_text:
            attempt = whole(attempt_text, 1, MAX_ATTEMPT)
            if attempt is None:
                raise InvalidInputError(
                    f"crash point {text[:100]!r}: after @ give an attempt from 1 to {MAX_ATTEMPT}"
                )
        target, _, when = spec.partition(":")
        compensation = target.startswith("compensate-")
        step = target.removeprefix("compensate-")
        if when not in ("before", "after"):
            raise InvalidInputError(
                f"crash point {text!r} must end in :before or :after (e.g. {steps[0]}:after)"
            )
        valid = compensatable if compensation else steps
        if step not in valid:
            prefix = "compensate-" if compensation else ""
            raise InvalidInputError(
                f"unknown step {step!r} in crash point {text!r}; choose from "
                + ", ".join(f"{prefix}{s}" for s in valid)
            )
        return cls(step, compensation, when, attempt)

    def __str__(self) -> str:
        attempt = "" if self.attempt is None else f"@{self.attempt}"
        return f"{'compensate-' if self.compensation else ''}{self.step}:{self.when}{attempt}"


def crash_points(definition: SagaDefinition) -> list[CrashPoint]:
    """Every crash point of a saga: before and after each step, then each compensation."""
    points = [CrashPoint(s.name, False, w) for s in definition.steps for w in ("before", "after")]
    points += [
        CrashPoint(s.name, True, w)
        for s in reversed(definition.steps)
        if s.compensation is not None
        for w in ("before", "after")
    ]
    return points


def die() -> None:
    """Kill this process the hard way: SIGKILL, no cleanup, no finally blocks, no flush."""
    os.kill(os.getpid(), signal.SIGKILL)


def crashing(call: Call, when: str, attempt: int | None) -> Call:
    """`call`, dying before or after it (at `attempt`, or the first call)."""

    def due(ctx: StepContext[Any]) -> bool:
        return attempt is None or ctx.attempt == attempt

    if is_async(call):

        async def crash_async(ctx: StepContext[Any]) -> Any:
            if not due(ctx):
                return await call(ctx)
            if when == "before":
                die()
            result = await call(ctx)
            die()
            return result

        return crash_async

    def crash(ctx: StepContext[Any]) -> Any:
        if not due(ctx):
            return call(ctx)
        if when == "before":
            die()
        result = call(ctx)
        die()
        return result

    return crash


def failing_first(call: Call, attempts: int | None, what: str) -> Call:
    """`call`, whose first `attempts` attempts (None: all) fail with a transient error."""

    def check(ctx: StepContext[Any]) -> None:
        if attempts is None or ctx.attempt <= attempts:
            budget = "every attempt" if attempts is None else f"the first {attempts}"
            raise FlakyError(
                f"{ctx.step} {what} failed on attempt {ctx.attempt} (injected: {budget})"
            )

    if is_async(call):

        async def failing_async(ctx: StepContext[Any]) -> Any:
            check(ctx)
            return await call(ctx)

        return failing_async

    def failing(ctx: StepContext[Any]) -> Any:
        check(ctx)
        return call(ctx)

    return failing


def slowed(call: Call, seconds: float) -> Call:
    """`call`, `seconds` slower: an ``async def`` waits without holding a thread."""
    if is_async(call):
        import asyncio

        async def slow_async(ctx: StepContext[Any]) -> Any:
            await asyncio.sleep(seconds)
            return await call(ctx)

        return slow_async

    def slow(ctx: StepContext[Any]) -> Any:
        time.sleep(seconds)
        return call(ctx)

    return slow


def declining(step: str) -> Call:
    """A call that declines at once, as a service refusing the request would."""

    def decline(ctx: StepContext[Any]) -> Any:
        raise InjectedFailureError(f"{step} declined (--fail {step})")

    return decline


def parse_step_count(
    text: str, option: str, valid: Collection[str], *, always: bool = False
) -> tuple[str, int | None]:
    """Parse ``STEP[:N]`` (or ``STEP:always`` where allowed) for a fault option.

    Raises:
        InvalidInputError: unknown step or malformed count.
    """
    step, _, count = text.partition(":")
    if step not in valid:
        raise InvalidInputError(
            f"unknown step {step!r} in {option} {text!r}; choose from {', '.join(valid)}"
        )
    if not count:
        return step, 1
    if always and count == "always":
        return step, None
    number = whole(count, 1, MAX_ATTEMPT)
    if number is None:
        shape = f"N (a whole number from 1 to {MAX_ATTEMPT})"
        shape += " or always" if always else ""
        raise InvalidInputError(f"{option} {text[:100]!r}: after the colon give {shape}")
    return step, number


def parse_flaky(
    flaky: Sequence[str],
    fail_compensation: Sequence[str],
    steps: Collection[str],
    compensatable: Collection[str],
) -> tuple[dict[str, int], dict[str, int | None]]:
    """Parse ``--flaky STEP[:N]`` and ``--fail-compensation STEP[:N|always]`` values.

    Raises:
        InvalidInputError: an unknown step or a malformed count.
    """
    flaky_steps: dict[str, int] = {}
    for text in flaky:
        step, count = parse_step_count(text, "--flaky", steps)
        flaky_steps[step] = count or 1
    failing = dict(
        parse_step_count(text, "--fail-compensation", compensatable, always=True)
        for text in fail_compensation
    )
    return flaky_steps, failing


def parse_slow(text: str, valid: Collection[str]) -> tuple[str, float]:
    """Parse ``STEP:SECONDS`` for ``--slow``.

    Raises:
        InvalidInputError: unknown step or a delay outside 0..3600 s.
    """
    step, _, seconds = text.partition(":")
    if step not in valid:
        raise InvalidInputError(
            f"unknown step {step!r} in --slow {text!r}; choose from {', '.join(valid)}"
        )
    try:
        delay = float(seconds)
    except ValueError:
        delay = -1.0
    if not 0 <= delay <= 3600:
        raise InvalidInputError(f"--slow {text!r}: give STEP:SECONDS, 0 to 3600 seconds")
    return step, delay


@dataclass(frozen=True, slots=True)
class StepFaults:
    """Faults injected into one process's calls of a saga (``saga run`` options).

    They describe this run's environment, not the execution: a resumed
    execution meets whatever faults the resuming process was given.
    """

    fail: frozenset[str] = frozenset()
    crash_at: CrashPoint | None = None
    flaky: dict[str, int] = field(default_factory=dict)
    fail_compensation: dict[str, int | None] = field(default_factory=dict)
    slow: dict[str, float] = field(default_factory=dict)

    @classmethod
    def parse(
        cls,
        definition: SagaDefinition,
        *,
        fail: Sequence[str] = (),
        crash_at: str | None = None,
        flaky: Sequence[str] = (),
        fail_compensation: Sequence[str] = (),
        slow: Sequence[str] = (),
    ) -> StepFaults:
        """Check the options against `definition`'s steps and build the plan.

        Raises:
            InvalidInputError: an unknown step or a malformed value.
        """
        names = definition.step_names
        compensatable = [s.name for s in definition.steps if s.compensation is not None]
        for step in fail:
            if step not in names:
                raise InvalidInputError(
                    f"unknown step {step!r} in --fail; choose from {', '.join(names)}"
                )
        flaky_steps, failing = parse_flaky(flaky, fail_compensation, names, compensatable)
        return cls(
            frozenset(fail),
            CrashPoint.parse(crash_at, names, compensatable) if crash_at is not None else None,
            flaky_steps,
            failing,
            dict(parse_slow(text, names) for text in slow),
        )

    def apply(self, definition: SagaDefinition) -> SagaDefinition:
        """`definition` with the faults wrapped around its functions (same steps, same version)."""
        from saga_cli.domain import StepKind

        steps = []
        for step in definition.steps:
            action: Call = step.action
            compensation = step.compensation
            if step.name in self.fail:
                action = declining(step.name)
                if step.kind is StepKind.RETRIABLE:
                    action = _transient(step.name)  # past the pivot, a failure is retried
            if step.name in self.flaky:
                action = failing_first(action, self.flaky[step.name], "call")
            if compensation is not None and step.name in self.fail_compensation:
                compensation = failing_first(
                    compensation, self.fail_compensation[step.name], "compensation"
                )
            if step.name in self.slow:
                action = slowed(action, self.slow[step.name])
            point = self.crash_at
            if point is not None and point.step == step.name:
                if point.compensation and compensation is not None:
                    compensation = crashing(compensation, point.when, point.attempt)
                elif not point.compensation:
                    action = crashing(action, point.when, point.attempt)
            steps.append(dataclasses.replace(step, action=action, compensation=compensation))
        return dataclasses.replace(definition, steps=tuple(steps))

    def __bool__(self) -> bool:
        return bool(self.fail or self.crash_at or self.flaky or self.fail_compensation or self.slow)


def _transient(step: str) -> Call:
    def fail(ctx: StepContext[Any]) -> Any:
        raise FlakyError(f"{step} failed (--fail {step})")

    return fail


# -- the travel demo's fault options, as `saga faults`, `--help` and the README list them ----

# The travel saga's steps (saga_cli.services.travel builds it from this).
TRAVEL_STEPS = ("flight", "hotel", "car", "payment", "confirm", "notify")
TRAVEL_SERVICES = TRAVEL_STEPS[:3]


@dataclass(frozen=True, slots=True)
class FaultOption:
    """One failure-injection option, as ``saga faults`` and the README's table list it."""

    option: str
    commands: str
    effect: str


FAULT_OPTIONS = (
    FaultOption(
        "--fail STEP",
        "book, simulate",
        f"STEP's service declines (a business failure, not retried); completed steps are "
        f"compensated in reverse. STEP is one of {', '.join(TRAVEL_STEPS)}: `payment` is the "
        "pivot (a declined card), `confirm` and `notify` come after it (retried, then stuck). "
        "Stored with the booking, so a resumed execution fails the same way. Repeatable.",
    ),
    FaultOption(
        "--fail-rate P",
        "simulate",
        "Each booking fails with probability P at a flight, hotel or car step drawn at "
        "random; reproducible with `--seed`.",
    ),
    FaultOption(
        "--flaky STEP[:N]",
        "book, simulate, worker",
        "STEP's first N attempts (default 1) fail with a transient error; reservations are "
        "retried up to 4 times with backoff, so N < 4 still succeeds. Repeatable.",
    ),
    FaultOption(
        "--fail-compensation STEP[:N|always]",
        "book, simulate, worker",
        "The first N attempts of STEP's compensation fail (retried up to 5 times with "
        "backoff); `always`, or N >= 5, leaves the execution stuck (exit 4) for "
        "`saga resume` or `saga resolve`. Repeatable.",
    ),
    FaultOption(
        "--slow STEP:SECONDS",
        "book, simulate, worker",
        "Each call to STEP takes SECONDS longer (the step's duration in `saga show` shows it).",
    ),
    FaultOption(
        "--timeout STEP",
        "book, simulate, worker",
        "STEP gets a 0.25 s timeout and answers only after 1 s: it counts as failed with its "
        "effect unknown and is compensated; its late arrival is refused by the tombstone "
        "(or undone if it lands first). A pivot that times out leaves the execution stuck "
        "for `saga resume`.",
    ),
    FaultOption(
        "--outage SERVICE",
        "book, simulate, worker",
        f"Every call to SERVICE ({', '.join(TRAVEL_SERVICES)}) fails, its compensations and "
        "the confirmation too: retried, compensated, and stuck until `saga resume` runs "
        "without the outage. Its breaker opens: `saga services --reset SERVICE` closes it.",
    ),
    FaultOption(
        "--crash-at STEP:before",
        "book, simulate, worker",
        "SIGKILL the process after STEP's started record is durable, before its service "
        "runs; `saga resume` calls the service again with the same key. `STEP:before@2` "
        "picks the attempt (a crash between a failed first attempt and the retry).",
    ),
    FaultOption(
        "--crash-at STEP:after",
        "book, simulate, worker",
        "SIGKILL after STEP's service committed, before the outcome is recorded; the "
        "resumed call is answered from the service's idempotency record.",
    ),
    FaultOption(
        "--crash-at compensate-STEP:before|after",
        "book, simulate, worker",
        "The same around STEP's compensation (combine with `--fail`: `--fail car` reaches "
        "hotel and flight; the car is compensated only by `saga compensate`).",
    ),
    FaultOption(
        "(scarce catalogue)",
        "book, simulate",
        "Capacities are small, cars the scarcest, so bookings run out of cars naturally "
        "and compensate; `saga inventory --restock N` refills every resource to N.",
    ),
)


def fault_table_markdown() -> str:
    """The README's table of FAULT_OPTIONS (a test keeps the README's copy equal to it)."""
    lines = ["| option | commands | what it does |", "|---|---|---|"]
    for fault in FAULT_OPTIONS:
        option = fault.option.replace("|", "\\|")
        shown = option if option.startswith("(") else f"`{option}`"  # not an option: prose
        lines.append(f"| {shown} | {fault.commands} | {fault.effect} |")
    return "\n".join(lines)
