"""Options and arguments that several commands take, each declared once.

A command's parameter is ``name: SomeOption = default``; options only one
command takes are written inline in that command.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

import typer

from saga_cli.faults import TRAVEL_SERVICES, TRAVEL_STEPS

DEFAULT_DB = "saga.db"


class Finite:
    """Parser of a number option: finite (no nan, no inf) and within [low, high].

    Every float option is parsed by one (a test checks), so no option can hand
    the library a value it would choke on later (an infinite lease, a NaN delay).
    """

    __name__ = "number"

    def __init__(self, low: float, high: float) -> None:
        self.low, self.high = low, high

    def __call__(self, value: Any) -> float:
        """`value` as a float, or typer's usage error (one line, exit 2)."""
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise typer.BadParameter(f"{value!r} is not a number") from None
        if not (math.isfinite(number) and self.low <= number <= self.high):
            raise typer.BadParameter(
                f"{value!r} is not a number from {self.low:g} to {self.high:g}"
            )
        return number


def seconds_between(low: float, high: float) -> Finite:
    """The parser of an option given in seconds: a finite number from `low` to `high`."""
    return Finite(low, high)


def secret_bearing(value: str | None) -> str | None:
    """Callback of an option that holds URLs: their credentials are never printed.

    The value may name a file of URLs (``--services``): its URLs count too.
    """
    if value:
        from pathlib import Path

        from saga_cli.redact import remember

        remember(value)
        if "://" not in value and "=" not in value and Path(value).is_file():
            from saga_cli.errors import SagaError
            from saga_cli.limits import MAX_SETTINGS_BYTES, read_capped

            try:
                remember(read_capped(value, MAX_SETTINGS_BYTES, f"the services file {value}"))
            except SagaError:
                pass  # reported when the option is used
    return value


IdArgument = Annotated[str, typer.Argument(metavar="ID", help="Execution id or a unique prefix.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON on stdout instead of tables.")]
SagaOption = Annotated[
    str | None, typer.Option("--saga", metavar="NAME", help="Only executions of this saga.")
]
StatusOption = Annotated[
    str | None,
    typer.Option(
        help="Only this status: pending, running, compensating, completed, compensated, stuck."
    ),
]
ForceOption = Annotated[
    bool,
    typer.Option(
        "--force",
        help="Drive executions whose saga's steps changed incompatibly since they started.",
    ),
]
SubmitOption = Annotated[
    bool,
    typer.Option(
        "--submit",
        help="Only write the execution as pending and print its id; a `saga worker` runs it.",
    ),
]
DeadlineOption = Annotated[
    str | None,
    typer.Option(
        "--deadline",
        metavar="DURATION",
        help="Compensate a booking not paid for within DURATION (e.g. 30s, 2m).",
    ),
]

# -- the remote travel services -------------------------------------------------------

ServicesOption = Annotated[
    str | None,
    typer.Option(
        "--services",
        envvar="SAGA_SERVICES",
        callback=secret_bearing,
        metavar="URLS",
        help="The flight, hotel and car services over HTTP (`saga serve`): three URLs "
        "in that order, NAME=URL pairs, or a file of NAME=URL lines. New bookings use them; "
        "an execution in the log always uses the services it recorded (a URL given here "
        "lends it its user:password, which the log never keeps).",
    ),
]
ServiceTimeoutOption = Annotated[
    float | None,
    typer.Option(
        "--service-timeout",
        envvar="SAGA_SERVICE_TIMEOUT",
        metavar="SECONDS",
        parser=seconds_between(0.001, 3600),
        help="With --services: seconds a call may take, 0.001 to 3600; a reservation "
        "without a reply by then is compensated (default 2).",
    ),
]

# -- failure injection (`saga faults` lists them all) ---------------------------------

FailOption = Annotated[
    list[str] | None,
    typer.Option(
        "--fail",
        metavar="STEP",
        help=f"Make STEP's service decline ({', '.join(TRAVEL_STEPS)}); "
        "see `saga faults`. Repeatable.",
    ),
]
CrashOption = Annotated[
    str | None,
    typer.Option(
        "--crash-at",
        metavar="POINT",
        help="SIGKILL this process at POINT: STEP:before|after or compensate-STEP:before|after.",
    ),
]
FlakyOption = Annotated[
    list[str] | None,
    typer.Option(
        "--flaky",
        metavar="STEP[:N]",
        help="STEP's first N attempts (default 1) fail with a transient error; retried.",
    ),
]
FailCompensationOption = Annotated[
    list[str] | None,
    typer.Option(
        "--fail-compensation",
        metavar="STEP[:N|always]",
        help="The first N attempts of STEP's compensation fail (always: every one -> stuck).",
    ),
]
SlowOption = Annotated[
    list[str] | None,
    typer.Option("--slow", metavar="STEP:SECONDS", help="Each call to STEP takes SECONDS longer."),
]
TimeoutOption = Annotated[
    list[str] | None,
    typer.Option(
        "--timeout",
        metavar="STEP",
        help="STEP times out (0.25 s) and its call completes late (1 s). Repeatable.",
    ),
]
OutageOption = Annotated[
    list[str] | None,
    typer.Option(
        "--outage",
        metavar="SERVICE",
        help=f"Every call to SERVICE fails ({', '.join(TRAVEL_SERVICES)}), compensations too.",
    ),
]
