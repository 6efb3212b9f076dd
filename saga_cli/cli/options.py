"""Options and arguments that several commands take, each declared once.

A command's parameter is ``name: SomeOption = default``; options only one
command takes are written inline in that command.
"""

from __future__ import annotations

from typing import Annotated

import typer

from saga_cli.faults import TRAVEL_SERVICES, TRAVEL_STEPS

DEFAULT_DB = "saga.db"

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
        min=0.001,
        help="With --services: seconds a call may take; a reservation without a reply "
        "by then is compensated (default 2).",
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
