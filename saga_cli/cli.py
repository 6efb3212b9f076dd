"""The ``saga`` command line: parse, call the library, render, exit.

Only Typer is imported at start-up; each command imports the library and rich
when it runs, so ``saga --help`` stays fast.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import IntEnum
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from saga_cli.booking import TravelBooking
    from saga_cli.engine import Outcome
    from saga_cli.orchestrator import Orchestrator
    from saga_cli.services.travel import FaultPlan
    from saga_cli.store import SagaStore


class ExitCode(IntEnum):
    """Exit codes, the same for every command (and listed in the README)."""

    OK = 0
    ERROR = 1
    USAGE = 2
    COMPENSATED = 3
    STUCK = 4


app = typer.Typer(
    name="saga",
    help=(
        "Durable sagas on a saga log (SQLite, or PostgreSQL shared by many workers): book "
        "the demo trip or run your own saga, kill the process, resume it, and every "
        "execution ends consistent.\n\n"
        "Try:  saga book --flight FL100 --hotel GRAND --car ECONOMY\n\n"
        'Your own:  saga run shop/sagas.py:order --payload \'{"sku": "A1"}\''
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
    # Plain help: rendering it with rich costs ~0.1 s of imports, and
    # `saga --help` must answer in under 0.15 s.
    rich_markup_mode=None,
)
db_app = typer.Typer(
    help="Inspect and migrate the saga log's schema.", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(db_app, name="db")

DEFAULT_DB = "saga.db"
IdArgument = Annotated[str, typer.Argument(metavar="ID", help="Execution id or a unique prefix.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON on stdout instead of tables.")]
FailOption = Annotated[
    list[str] | None,
    typer.Option(
        "--fail",
        metavar="STEP",
        help="Make STEP's service decline (flight, hotel, car, confirm). Repeatable.",
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
        help="Every call to SERVICE fails (flight, hotel, car), compensations too.",
    ),
]


SubmitOption = Annotated[
    bool,
    typer.Option(
        "--submit",
        help="Only write the execution as pending and print its id; a `saga worker` runs it.",
    ),
]
ServicesOption = Annotated[
    str | None,
    typer.Option(
        "--services",
        envvar="SAGA_SERVICES",
        metavar="URLS",
        help="Call the flight, hotel and car services over HTTP (`saga serve`): three URLs "
        "in that order, NAME=URL pairs, or a file of NAME=URL lines. Resume with the same.",
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


def _refuse_local_faults(**given: object) -> None:
    """With --submit a worker runs the saga: this process's fault options would do nothing."""
    from saga_cli.errors import InvalidInputError

    for name, value in given.items():
        if value:
            option = "--" + name.replace("_", "-")
            raise InvalidInputError(
                f"{option} acts on the process that runs the saga; with --submit, "
                "give it to `saga worker` instead"
            )


def _submitted(execution_id: str, as_json: bool) -> None:
    if as_json:
        _print_json({"id": execution_id, "status": "pending"})
    else:
        typer.echo(execution_id)


ForceOption = Annotated[
    bool,
    typer.Option(
        "--force",
        help="Drive executions whose saga's steps changed incompatibly since they started.",
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


def _seconds(text: str | None) -> float | None:
    from saga_cli.durations import parse_duration

    return None if text is None else parse_duration(text)


def _faults(
    crash_at: str | None,
    flaky: list[str] | None,
    fail_compensation: list[str] | None,
    slow: list[str] | None,
    outage: list[str] | None,
    hang: list[str] | None,
) -> FaultPlan:
    from saga_cli.services.travel import FaultPlan

    return FaultPlan.parse(
        crash_at=crash_at,
        flaky=flaky or (),
        fail_compensation=fail_compensation or (),
        slow=slow or (),
        outage=outage or (),
        hang=hang or (),
    )


class _State:
    """Options given before the command name."""

    db: str = DEFAULT_DB
    load: tuple[str, ...] = ()
    quiet: bool = False
    step_timeout: str | None = None

    def step_timeout_seconds(self) -> float | None:
        """--step-timeout in seconds (None: no limit), or the engine's default.

        Raises:
            InvalidInputError: not a duration, nor "none".
        """
        from saga_cli.engine import DEFAULT_STEP_TIMEOUT

        text = self.step_timeout
        if text is None:
            return DEFAULT_STEP_TIMEOUT
        if text.strip().lower() == "none":
            return None
        return _seconds(text)


def _configure_logging(verbose: int, quiet: bool) -> None:
    """Logs go to stderr (stdout carries only data): errors only with --quiet, more with -v."""
    import logging

    levels = (logging.WARNING, logging.INFO, logging.DEBUG)
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.ERROR if quiet else levels[min(verbose, 2)],
        format="%(levelname)s %(name)s: %(message)s",
    )


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"saga {version('saga-cli')}")
        raise typer.Exit()


@app.callback()
def _main(
    ctx: typer.Context,
    db: Annotated[
        str,
        typer.Option(
            "--db",
            envvar="SAGA_DB",
            metavar="PATH_OR_URL",
            help="The saga log: a file path, sqlite:///PATH?synchronous=FULL&busy_timeout=5000,"
            " or postgresql+psycopg://USER@HOST:PORT/DBNAME.",
        ),
    ] = DEFAULT_DB,
    load: Annotated[
        list[str] | None,
        typer.Option(
            "--load",
            envvar="SAGA_LOAD",
            metavar="MODULE_OR_FILE",
            help="Import your sagas from a module or .py file (repeatable; SAGA_LOAD: "
            "space-separated). Not needed to resume: the log remembers where each saga came from.",
        ),
    ] = None,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = False,
    verbose: Annotated[
        int,
        typer.Option(
            "--verbose", "-v", count=True, help="Log more on stderr (-v: info, -vv: debug)."
        ),
    ] = 0,
    quiet: Annotated[
        bool,
        typer.Option("--quiet", "-q", help="Only errors on stderr: no logs, hints or progress."),
    ] = False,
    step_timeout: Annotated[
        str | None,
        typer.Option(
            "--step-timeout",
            envvar="SAGA_STEP_TIMEOUT",
            metavar="DURATION",
            help="How long a step's call may take when its saga gives no timeout "
            "(default 60s; `none`: no limit). Past it the call counts as failed, effect unknown.",
        ),
    ] = None,
) -> None:
    if verbose and quiet:
        typer.echo("Error: --verbose and --quiet exclude each other", err=True)
        raise typer.Exit(ExitCode.USAGE)
    _configure_logging(verbose, quiet)
    state = _State()
    state.db = db
    state.load = tuple(load or ())
    state.quiet = quiet
    state.step_timeout = step_timeout
    ctx.obj = state


F = TypeVar("F", bound=Callable[..., Any])


def _errors_to_exit_codes(command: F) -> F:
    """Turn the library's errors into ``Error: …`` on stderr and an exit code."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from saga_cli.errors import SagaError

        try:
            return command(*args, **kwargs)
        except SagaError as exc:
            typer.echo(f"Error: {exc}", err=True)
            code = ExitCode.USAGE if exc.bad_input else ExitCode.ERROR
            raise typer.Exit(code) from None
        except KeyboardInterrupt:
            typer.echo(
                "Interrupted; unfinished executions continue with `saga resume --all`.", err=True
            )
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def _quiet(ctx: typer.Context) -> bool:
    return bool(ctx.obj and ctx.obj.quiet)


def _hint(ctx: typer.Context, message: str) -> None:
    """A note for people on stderr (not data, so not on stdout); --quiet drops it."""
    if not _quiet(ctx):
        typer.echo(message, err=True)


def _console(*, stderr: bool = False) -> Console:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


@contextmanager
def _store(ctx: typer.Context) -> Iterator[SagaStore]:
    import logging
    import time

    from saga_cli.store import open_store

    began = time.perf_counter()
    store = open_store(ctx.obj.db if ctx.obj else DEFAULT_DB)
    log = logging.getLogger("saga_cli")
    where = getattr(store, "display_url", store.url)  # a PostgreSQL URL without its password
    log.info("opened saga log %s in %.3f s", where, time.perf_counter() - began)
    try:
        yield store
    finally:
        store.close()


@contextmanager
def _travel(
    ctx: typer.Context,
    *,
    faults: FaultPlan | None = None,
    show_steps: bool = False,
    services: str | None = None,
    service_timeout: float | None = None,
) -> Iterator[TravelBooking]:
    from saga_cli.booking import TravelBooking

    urls = None
    if services:
        from saga_cli.services.http_client import parse_services

        urls = parse_services(services)

    listener = None
    if show_steps:
        from saga_cli import render

        console = _console()

        def listener(execution_id: str, event: Any) -> None:
            render.event_line(console, execution_id, event)

    with _store(ctx) as store:
        booking = TravelBooking(
            store,
            step_timeout=(ctx.obj or _State()).step_timeout_seconds(),
            on_event=listener,
            faults=faults,
            services=urls,
            service_timeout=service_timeout,
        )
        try:
            for reference in ctx.obj.load if ctx.obj else ():
                booking.orchestrator.load(reference)
            yield booking
        finally:
            booking.close()


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def _outcome_code(result: Outcome) -> int:
    from saga_cli.domain import SagaStatus

    return {
        SagaStatus.COMPLETED: ExitCode.OK,
        SagaStatus.COMPENSATED: ExitCode.COMPENSATED,
        SagaStatus.STUCK: ExitCode.STUCK,
    }.get(result.status, ExitCode.ERROR)


def _finish(result: Outcome, as_json: bool) -> None:
    if as_json:
        _print_json(
            {
                "id": result.execution_id,
                "saga": result.saga,
                "status": result.status.value,
                "error": result.error,
                "results": dict(result.results),
            }
        )
    else:
        from saga_cli import render

        render.outcome(_console(), result)
    raise typer.Exit(_outcome_code(result))


@app.command()
@_errors_to_exit_codes
def book(
    ctx: typer.Context,
    flight: Annotated[
        str, typer.Option(metavar="CODE", help="Flight code, e.g. FL100 (see `saga inventory`).")
    ],
    hotel: Annotated[str, typer.Option(metavar="CODE", help="Hotel code, e.g. GRAND.")],
    car: Annotated[
        str | None, typer.Option(metavar="CODE", help="Car class, e.g. ECONOMY (optional).")
    ] = None,
    customer: Annotated[str, typer.Option(metavar="NAME", help="Name on the booking.")] = "guest",
    fail: FailOption = None,
    flaky: FlakyOption = None,
    fail_compensation: FailCompensationOption = None,
    slow: SlowOption = None,
    outage: OutageOption = None,
    timeout: TimeoutOption = None,
    crash_at: CrashOption = None,
    deadline: DeadlineOption = None,
    submit: SubmitOption = False,
    services: ServicesOption = None,
    service_timeout: ServiceTimeoutOption = None,
    as_json: JsonOption = False,
) -> None:
    """Book a trip; on failure, compensate what was booked.

    Reserves the flight, the hotel and the car (each held as pending), then
    confirms all three. If a reservation fails, the ones made so far are
    cancelled in reverse order. With --submit, only records the booking as
    pending and prints its id; a `saga worker` runs it.

    Example: saga book --flight FL100 --hotel GRAND --car ECONOMY --fail car
    """
    from saga_cli.services.travel import BookingRequest

    request = BookingRequest(flight, hotel, car, customer, tuple(fail or ()))
    seconds = _seconds(deadline)
    if submit:
        _refuse_local_faults(
            flaky=flaky,
            fail_compensation=fail_compensation,
            slow=slow,
            outage=outage,
            timeout=timeout,
            crash_at=crash_at,
        )
        with _travel(ctx) as travel:
            execution_id = travel.submit(request, deadline=seconds)
        _submitted(execution_id, as_json)
        return
    faults = _faults(crash_at, flaky, fail_compensation, slow, outage, timeout)
    with _travel(
        ctx,
        faults=faults,
        show_steps=not as_json,
        services=services,
        service_timeout=service_timeout,
    ) as travel:
        result = travel.book(request, deadline=seconds)
    _finish(result, as_json)


@app.command()
@_errors_to_exit_codes
def run(
    ctx: typer.Context,
    saga: Annotated[
        str,
        typer.Argument(
            metavar="MODULE_OR_FILE[:SAGA]",
            help="Where your saga is: shop/sagas.py:order or shop.sagas:order.",
        ),
    ],
    payload: Annotated[
        str | None,
        typer.Option(metavar="JSON", help="The execution's input, a JSON object."),
    ] = None,
    payload_file: Annotated[
        str | None,
        typer.Option(metavar="FILE", help="Read the JSON input from FILE (- for stdin)."),
    ] = None,
    fail: Annotated[
        list[str] | None,
        typer.Option(
            "--fail", metavar="STEP", help="STEP declines (a business failure). Repeatable."
        ),
    ] = None,
    flaky: FlakyOption = None,
    fail_compensation: FailCompensationOption = None,
    slow: SlowOption = None,
    crash_at: CrashOption = None,
    deadline: Annotated[
        str | None,
        typer.Option(
            "--deadline",
            metavar="DURATION",
            help="Compensate the execution if it has not passed its pivot within DURATION.",
        ),
    ] = None,
    key_busy: Annotated[
        str,
        typer.Option(
            "--key-busy",
            metavar="refuse|wait",
            help="When another unfinished execution holds the saga's concurrency key: "
            "refuse (exit 1) or wait for it.",
        ),
    ] = "refuse",
    key_timeout: Annotated[
        str | None,
        typer.Option(
            metavar="DURATION",
            help="With --key-busy wait: give up after DURATION (default: never).",
        ),
    ] = None,
    submit: SubmitOption = False,
    as_json: JsonOption = False,
) -> None:
    """Run one of your own sagas, declared with the saga_cli API.

    Same output, exit codes and failure injection as `saga book`. The log
    records where the saga came from, so `saga resume` finds it again. With
    --submit, only records the execution as pending and prints its id; a
    `saga worker` runs it.

    Example: saga run examples/bank_transfer.py:transfer --payload '{"source": "alice",
    "target": "bob", "amount": 30}'
    """
    import math

    from saga_cli.errors import InvalidInputError
    from saga_cli.faults import StepFaults
    from saga_cli.loader import load_one

    if key_busy not in ("refuse", "wait"):
        raise InvalidInputError(f"--key-busy must be refuse or wait (got {key_busy!r})")
    data = _read_payload(payload, payload_file)
    definition = load_one(saga)
    if submit:
        _refuse_local_faults(
            fail=fail,
            flaky=flaky,
            fail_compensation=fail_compensation,
            slow=slow,
            crash_at=crash_at,
        )
        if key_busy == "wait":
            raise InvalidInputError(
                "--key-busy wait does not apply with --submit: a submitted execution takes "
                "its concurrency key when it is written (refused while another holds it)"
            )
        with _engine(ctx) as engine:
            execution_id = engine.submit(definition, data, deadline=_seconds(deadline))
        _submitted(execution_id, as_json)
        return
    faults = StepFaults.parse(
        definition,
        fail=fail or (),
        crash_at=crash_at,
        flaky=flaky or (),
        fail_compensation=fail_compensation or (),
        slow=slow or (),
    )
    wait = 0.0
    if key_busy == "wait":
        wait = math.inf if key_timeout is None else _seconds(key_timeout) or 0.0
    with _engine(ctx, show_steps=not as_json) as engine:
        result = engine.run(
            faults.apply(definition) if faults else definition,
            data,
            deadline=_seconds(deadline),
            key_wait=wait,
        )
    _finish(result, as_json)


def _read_payload(payload: str | None, payload_file: str | None) -> Any:
    """The JSON object given with --payload or --payload-file.

    Raises:
        InvalidInputError: neither or both given, unreadable, or not a JSON object.
    """
    from saga_cli.errors import InvalidInputError

    if (payload is None) == (payload_file is None):
        raise InvalidInputError("give the input with either --payload JSON or --payload-file FILE")
    text = payload
    if payload_file is not None:
        try:
            if payload_file == "-":
                text = sys.stdin.read()
            else:
                with open(payload_file, encoding="utf-8") as handle:
                    text = handle.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidInputError(f"cannot read --payload-file {payload_file}: {exc}") from None
    try:
        data = json.loads(text or "")
    except ValueError as exc:
        raise InvalidInputError(f"the payload is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidInputError(f"the payload must be a JSON object, not {type(data).__name__}")
    return data


@contextmanager
def _engine(ctx: typer.Context, *, show_steps: bool = False) -> Iterator[Orchestrator]:
    """An orchestrator on the log with the --load sagas registered (no demo services)."""
    from saga_cli.orchestrator import Orchestrator

    with _store(ctx) as store:
        timeout = (ctx.obj or _State()).step_timeout_seconds()
        engine = Orchestrator(store, step_timeout=timeout)
        if show_steps:
            from saga_cli import render

            console = _console()
            engine.subscribe(lambda i, e: render.event_line(console, i, e))
        try:
            for reference in ctx.obj.load if ctx.obj else ():
                engine.load(reference)
            yield engine
        finally:
            engine.close()


@app.command()
@_errors_to_exit_codes
def definitions(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Show the known sagas: their steps, kinds, retry policies and timeouts.

    Lists the built-in travel sagas, those given with --load, and every saga
    the log has seen (with where its code came from).

    Example: saga --load examples/bank_transfer.py definitions
    """
    from saga_cli.views import definition_rows

    with _travel(ctx) as travel:
        rows = definition_rows(travel.orchestrator.definitions(), travel.store)
    if as_json:
        _print_json(rows)
        return
    from saga_cli import render

    render.definitions(_console(), rows)


SagaOption = Annotated[
    str | None, typer.Option("--saga", metavar="NAME", help="Only executions of this saga.")
]
StatusOption = Annotated[
    str | None,
    typer.Option(
        help="Only this status: pending, running, compensating, completed, compensated, stuck."
    ),
]


@app.command("list")
@_errors_to_exit_codes
def list_(
    ctx: typer.Context,
    status: StatusOption = None,
    saga: SagaOption = None,
    since: Annotated[
        str | None,
        typer.Option(
            metavar="WHEN", help="Created at or after WHEN: a duration ago (1h, 7d) or ISO time."
        ),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option(metavar="WHEN", help="Created before WHEN (same forms as --since)."),
    ] = None,
    limit: Annotated[
        int, typer.Option(min=1, max=1_000_000, help="Show at most N executions.")
    ] = 20,
    cursor: Annotated[
        str | None,
        typer.Option(metavar="TOKEN", help="Start after this row (printed under a full page)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """List executions, newest first, marking interrupted ones.

    Interrupted means unfinished with no live process running it: resume it
    with `saga resume ID` or `saga resume --all`. A full page ends with the
    cursor of the next one (on stderr; with --json, every row has its own).

    Example: saga list --status compensated --since 1d --limit 5
    """
    from saga_cli.views import list_page

    with _store(ctx) as store:
        page = list_page(
            store, status=status, saga=saga, since=since, until=until, limit=limit, cursor=cursor
        )
    if as_json:
        _print_json(page.as_json())
        return
    from saga_cli import render

    render.executions(_console(), page.rows)
    if page.next_cursor:
        _hint(ctx, f"next page: --cursor {page.next_cursor}")


@app.command()
@_errors_to_exit_codes
def show(
    ctx: typer.Context,
    execution_id: IdArgument,
    as_json: JsonOption = False,
) -> None:
    """Show one execution: its steps and the full transition log.

    Example: saga show 3f2a
    """
    from saga_cli.views import describe

    with _store(ctx) as store:
        view = describe(store, execution_id)
    if as_json:
        _print_json(view.as_json())
        return
    from saga_cli import render

    render.execution(_console(), view)


@app.command()
@_errors_to_exit_codes
def stats(
    ctx: typer.Context,
    since: Annotated[
        str, typer.Option(metavar="DURATION", help="The window: executions created this recently.")
    ] = "1h",
    saga: SagaOption = None,
    output: Annotated[
        str,
        typer.Option(
            "--format", metavar="FORMAT", help="table, json or prometheus (text exposition)."
        ),
    ] = "table",
    sample: Annotated[
        int,
        typer.Option(
            metavar="N", min=1, max=1_000_000, help="Read the events of the newest N executions."
        ),
    ] = 500,
    as_json: JsonOption = False,
) -> None:
    """Completion, compensation and step failure rates, durations, and what is in flight.

    Rates and counts cover every execution created in the window; step
    figures and duration percentiles come from its newest N (--sample).

    Example: saga stats --since 24h --format prometheus
    """
    from saga_cli import stats as figures
    from saga_cli.durations import parse_duration
    from saga_cli.errors import InvalidInputError

    output = "json" if as_json else output
    if output not in ("table", "json", "prometheus"):
        raise InvalidInputError(f"--format must be table, json or prometheus (got {output!r})")
    window = parse_duration(since)
    with _store(ctx) as store:
        result = figures.compute(store, window=window, saga=saga, sample=sample)
    if output == "json":
        _print_json(result.as_json())
    elif output == "prometheus":
        from saga_cli.prometheus import exposition

        sys.stdout.write(exposition(result).decode())
    else:
        from saga_cli import render

        render.stats(_console(), result)


@app.command()
@_errors_to_exit_codes
def watch(
    ctx: typer.Context,
    interval: Annotated[
        float, typer.Option(metavar="SECONDS", min=0.1, help="Seconds between refreshes.")
    ] = 1.0,
    window: Annotated[
        str, typer.Option(metavar="DURATION", help="Count executions created this recently.")
    ] = "5m",
    saga: SagaOption = None,
    count: Annotated[
        int | None, typer.Option(metavar="N", min=1, help="Stop after N refreshes.")
    ] = None,
) -> None:
    """Watch executions in flight and the counters, refreshed live from the log.

    Run it in one terminal while another runs `saga simulate`; Ctrl-C stops
    it (exit code 0).

    Example: saga watch --interval 0.5
    """
    from rich.live import Live

    from saga_cli import render
    from saga_cli import watch as live_view
    from saga_cli.durations import parse_duration

    seconds = parse_duration(window)
    with _store(ctx) as store:

        def take() -> live_view.Snapshot:
            return live_view.snapshot(store, window=seconds, saga=saga)

        with Live(console=_console(), auto_refresh=False, redirect_stderr=False) as screen:
            live_view.run(
                take,
                lambda snap: screen.update(render.watch_view(snap), refresh=True),
                interval=interval,
                count=count,
            )


@app.command()
@_errors_to_exit_codes
def prune(
    ctx: typer.Context,
    older_than: Annotated[
        str,
        typer.Option(
            metavar="DURATION", help="Delete executions created and finished this long ago."
        ),
    ],
    status: Annotated[
        list[str] | None,
        typer.Option(
            metavar="S", help="Only this terminal status (completed, compensated). Repeatable."
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Delete old completed and compensated executions with their events.

    Never deletes an unfinished or stuck execution. Reports how many went.

    Example: saga prune --older-than 30d --status completed
    """
    from saga_cli.views import prune as prune_log

    with _store(ctx) as store:
        deleted, cutoff, statuses = prune_log(store, older_than, status or ())
    names = [s.value for s in statuses]
    if as_json:
        _print_json({"deleted": deleted, "older_than": cutoff, "statuses": names})
        return
    typer.echo(f"Deleted {deleted} execution(s) ({', '.join(names)}) older than {older_than}.")


@app.command()
@_errors_to_exit_codes
def resume(
    ctx: typer.Context,
    execution_id: Annotated[
        str | None, typer.Argument(metavar="[ID]", help="Execution id or a unique prefix.")
    ] = None,
    all_: Annotated[
        bool, typer.Option("--all", help="Resume every interrupted execution.")
    ] = False,
    concurrency: Annotated[
        int,
        typer.Option(metavar="K", min=1, max=1024, help="With --all: resume K executions at once."),
    ] = 8,
    force: ForceOption = False,
    services: ServicesOption = None,
    service_timeout: ServiceTimeoutOption = None,
    as_json: JsonOption = False,
) -> None:
    """Continue interrupted executions from the log.

    A step that was started but has no recorded outcome is called again with
    the same idempotency key; a compensating execution keeps compensating.

    Example: saga resume --all
    """
    from saga_cli.errors import InvalidInputError

    if all_ == (execution_id is not None):
        raise InvalidInputError("give either an execution ID or --all")
    with _travel(
        ctx,
        show_steps=not as_json and not all_,
        services=services,
        service_timeout=service_timeout,
    ) as travel:
        engine = travel.orchestrator
        if execution_id is not None:
            result = engine.resume(execution_id, force=force)
        else:
            report = engine.resume_all(concurrency=concurrency, force=force)
    if execution_id is not None:
        _finish(result, as_json)
    if as_json:
        _print_json(
            {
                "resumed": len(report.outcomes),
                "busy": report.busy,
                "failed": report.failed,
                "outcomes": [
                    {"id": o.execution_id, "status": o.status.value} for o in report.outcomes
                ],
            }
        )
    else:
        from saga_cli import render

        render.recovery(_console(), report)
    from saga_cli.domain import SagaStatus

    if report.failed:
        raise typer.Exit(ExitCode.ERROR)
    if any(o.status is SagaStatus.STUCK for o in report.outcomes):
        raise typer.Exit(ExitCode.STUCK)


@app.command()
@_errors_to_exit_codes
def compensate(
    ctx: typer.Context,
    execution_id: IdArgument,
    force: ForceOption = False,
    services: ServicesOption = None,
    as_json: JsonOption = False,
) -> None:
    """Abort an unfinished execution by compensating it.

    Its completed steps (and a step cut short mid-call) are compensated in
    reverse order. Refused once the saga passed its point of no return.

    Example: saga compensate 3f2a
    """
    with _travel(ctx, show_steps=not as_json, services=services) as travel:
        result = travel.orchestrator.compensate(execution_id, force=force)
    _finish(result, as_json)


@app.command()
@_errors_to_exit_codes
def cancel(
    ctx: typer.Context,
    execution_id: IdArgument,
    force: ForceOption = False,
    services: ServicesOption = None,
    as_json: JsonOption = False,
) -> None:
    """Cancel an execution: compensate it, even while another process runs it.

    The running process loses its lease (its next write is refused) and this
    command compensates the completed steps, and the one in flight, in reverse.
    Refused once the saga is paid for (its pivot); a compensation in progress
    is resumed, never cancelled.

    Example: saga cancel 3f2a
    """
    with _travel(ctx, show_steps=not as_json, services=services) as travel:
        result = travel.orchestrator.cancel(execution_id, force=force)
    _finish(result, as_json)


@app.command()
@_errors_to_exit_codes
def resolve(
    ctx: typer.Context,
    execution_id: IdArgument,
    note: Annotated[
        str, typer.Option(metavar="TEXT", help="What was done by hand (kept in the log).")
    ],
    as_json: JsonOption = False,
) -> None:
    """Close a stuck execution by hand, recording what was done.

    A stuck execution (a compensation that gave up) waits for an operator;
    once the rest is undone outside saga, this marks it compensated (or
    completed, if it was stuck past its point of no return) with the note.

    Example: saga resolve 3f2a --note "refunded by hand, ticket OPS-42"
    """
    with _travel(ctx, show_steps=not as_json) as travel:
        result = travel.orchestrator.resolve(execution_id, note)
    if as_json:
        _print_json({"id": result.execution_id, "status": result.status.value, "note": note})
        return
    from saga_cli import render

    render.outcome(_console(), result)


@app.command()
@_errors_to_exit_codes
def simulate(
    ctx: typer.Context,
    count: Annotated[int, typer.Option(max=10_000_000, help="How many bookings to make.")] = 10,
    fail: FailOption = None,
    fail_rate: Annotated[
        float, typer.Option(metavar="P", help="Chance that a booking fails at a random step.")
    ] = 0.0,
    seed: Annotated[
        int | None, typer.Option(help="Seed for reproducible trips and failures.")
    ] = None,
    concurrency: Annotated[
        int,
        typer.Option(
            metavar="K", max=1024, help="Run K bookings at once (their log writes share commits)."
        ),
    ] = 1,
    capacity: Annotated[
        int | None,
        typer.Option(
            metavar="N", max=1_000_000_000, help="First restock every resource to capacity N."
        ),
    ] = None,
    flaky: FlakyOption = None,
    fail_compensation: FailCompensationOption = None,
    slow: SlowOption = None,
    outage: OutageOption = None,
    timeout: TimeoutOption = None,
    crash_at: CrashOption = None,
    deadline: DeadlineOption = None,
    services: ServicesOption = None,
    service_timeout: ServiceTimeoutOption = None,
    as_json: JsonOption = False,
) -> None:
    """Run random bookings with failure injection and summarise.

    Example: saga simulate --count 50 --fail-rate 0.2 --seed 7
    """
    from saga_cli.errors import InvalidInputError

    if count < 1:
        raise InvalidInputError(f"--count must be at least 1 (got {count})")
    if not 0.0 <= fail_rate <= 1.0:
        raise InvalidInputError(f"--fail-rate must be within [0, 1] (got {fail_rate})")
    from saga_cli.services.travel import BookingRequest

    BookingRequest("-", "-", fail=tuple(fail or ()))  # refuses unknown steps up front
    faults = _faults(crash_at, flaky, fail_compensation, slow, outage, timeout)
    seconds = _seconds(deadline)
    from rich.progress import Progress

    from saga_cli import render

    with (
        _travel(ctx, faults=faults, services=services, service_timeout=service_timeout) as travel,
        # Only on a terminal: piped stderr stays clean for one-line errors.
        Progress(
            console=_console(stderr=True),
            transient=True,
            disable=as_json or _quiet(ctx) or not sys.stderr.isatty(),
        ) as progress,
    ):
        if capacity is not None:
            travel.restock(capacity)
        task = progress.add_task("booking", total=count)
        report = travel.simulate(
            count,
            fail=tuple(fail or ()),
            fail_rate=fail_rate,
            seed=seed,
            concurrency=concurrency,
            deadline=seconds,
            progress=lambda _outcome: progress.advance(task),
        )
    if as_json:
        _print_json(report.as_json())
    else:
        render.simulation(_console(), report)


@app.command()
@_errors_to_exit_codes
def faults() -> None:
    """List every failure-injection option and what it does.

    Example: saga faults
    """
    from saga_cli import render
    from saga_cli.services.travel import FAULT_OPTIONS

    render.faults(_console(), FAULT_OPTIONS)


@app.command()
@_errors_to_exit_codes
def inventory(
    ctx: typer.Context,
    restock: Annotated[
        int | None,
        typer.Option(
            metavar="N", max=1_000_000_000, help="First set every resource's capacity to N."
        ),
    ] = None,
    services: ServicesOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show the services' capacity, availability and reservations.

    With --services, reads (and restocks) the remote services through their endpoints.

    Example: saga inventory --json
    """
    with _travel(ctx, services=services) as travel:
        if restock is not None:
            travel.restock(restock)
        rows = travel.inventory()
    if as_json:
        _print_json(
            [
                {
                    "service": r.service,
                    "resource": r.resource,
                    "name": r.name,
                    "capacity": r.capacity,
                    "available": r.available,
                    "pending": r.pending,
                    "confirmed": r.confirmed,
                }
                for r in rows
            ]
        )
        return
    from saga_cli import render

    render.inventory(_console(), rows)


@app.command()
@_errors_to_exit_codes
def services(
    ctx: typer.Context,
    reset: Annotated[
        list[str] | None,
        typer.Option(
            "--reset", metavar="SERVICE", help="Close SERVICE's breaker now (it is back up)."
        ),
    ] = None,
    services: ServicesOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show each service's circuit breaker and what it has in stock.

    A breaker opens after 5 consecutive failures of its service (calls then
    fail fast for 5 s), lets one trial call through, and closes when it works.

    Example: saga services --reset hotel
    """
    with _travel(ctx, services=services) as travel:
        for name in reset or ():
            travel.reset_breaker(name)
        breakers = travel.breaker_states()
        stock = travel.inventory()
    totals: dict[str, tuple[int, int]] = {}
    for row in stock:
        capacity, available = totals.get(row.service, (0, 0))
        totals[row.service] = (capacity + row.capacity, available + row.available)
    rows = [
        {
            "service": b.service,
            "breaker": b.state.value,
            "consecutive_failures": b.failures,
            "last_error": b.last_error,
            "opened_at": b.opened_at,
            "updated_at": b.updated_at or None,
            "capacity": totals.get(b.service, (None, None))[0],
            "available": totals.get(b.service, (None, None))[1],
        }
        for b in breakers
    ]
    if as_json:
        _print_json(rows)
        return
    from saga_cli import render

    render.services(_console(), rows)


@app.command()
@_errors_to_exit_codes
def check(ctx: typer.Context, services: ServicesOption = None, as_json: JsonOption = False) -> None:
    """Audit the saga log against the services.

    Each completed execution must hold confirmed reservations, each
    compensated one none; no reservation may belong to no execution, and
    every resource's capacity must be conserved. With --services, the remote
    services' reservations are read through their endpoints.

    Example: saga check
    """
    with _travel(ctx, services=services) as travel:
        report = travel.check()
    if as_json:
        _print_json({"consistent": report.consistent, "violations": report.violations})
    else:
        from saga_cli import render

        render.audit(_console(), report)
    if not report.consistent:
        raise typer.Exit(ExitCode.ERROR)


@app.command()
@_errors_to_exit_codes
def worker(
    ctx: typer.Context,
    concurrency: Annotated[
        int,
        typer.Option(metavar="K", min=1, max=1024, help="Run K executions at once."),
    ] = 8,
    saga: Annotated[
        list[str] | None,
        typer.Option(
            "--saga",
            metavar="NAME",
            help="Only executions of this saga (repeatable; default: every loaded saga).",
        ),
    ] = None,
    lease: Annotated[
        float,
        typer.Option(
            metavar="SECONDS",
            help="Lease length: a dead worker's executions go to others this long after it.",
        ),
    ] = 30.0,
    poll: Annotated[
        float, typer.Option(metavar="SECONDS", help="Seconds between looks while idle.")
    ] = 1.0,
    exit_when_idle: Annotated[
        bool, typer.Option("--exit-when-idle", help="Exit 0 once nothing is ready.")
    ] = False,
    grace: Annotated[
        str,
        typer.Option(
            metavar="DURATION",
            help="On SIGTERM, how long the calls in flight may take to finish before their "
            "executions are handed back regardless.",
        ),
    ] = "30s",
    flaky: FlakyOption = None,
    fail_compensation: FailCompensationOption = None,
    slow: SlowOption = None,
    outage: OutageOption = None,
    timeout: TimeoutOption = None,
    crash_at: CrashOption = None,
    as_json: JsonOption = False,
) -> None:
    """Take pending and interrupted executions from the log and run them, until stopped.

    Runs the travel sagas and those given with --load. Claims executions
    submitted with --submit, and those whose owner's lease expired; renews
    its leases while it runs them. SIGTERM or Ctrl-C: finish the current
    calls in flight (for at most --grace), release the leases, exit 0; a second
    signal releases them at once.

    Example: saga --load examples/bank_transfer.py worker --concurrency 8
    """
    import signal

    from saga_cli.worker import Worker

    faults = _faults(crash_at, flaky, fail_compensation, slow, outage, timeout)
    grace_seconds = _seconds(grace)
    with _travel(ctx, faults=faults) as travel:
        runner = Worker(
            travel.orchestrator,
            concurrency=concurrency,
            sagas=saga,
            lease_seconds=lease,
            poll=poll,
            exit_when_idle=exit_when_idle,
            grace=grace_seconds,
        )

        def stop(_signum: int, _frame: object) -> None:
            runner.stop(now=runner.stopping)  # a second signal: hand back at once

        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        _hint(ctx, f"worker {runner.id} taking {', '.join(runner.sagas)} ({concurrency} at once)")
        try:
            report = runner.run()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    if as_json:
        _print_json(report.as_json())
        return
    _hint(
        ctx,
        f"worker {runner.id} exited: {report.completed} completed, {report.compensated} "
        f"compensated, {report.stuck} stuck, {report.released} released, "
        f"{len(report.lost)} lost to other workers, {len(report.failed)} not runnable here",
    )


@app.command()
@_errors_to_exit_codes
def workers(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Show the registered workers: heartbeat, executions held, live or stale.

    A worker is stale once its last heartbeat is older than its lease (its
    executions go to other workers as their leases expire) and dead when it
    ran on this host and its process is gone.

    Example: saga workers --json
    """
    from saga_cli.worker import list_workers

    with _store(ctx) as store:
        views = list_workers(store)
    if as_json:
        _print_json([view.as_json() for view in views])
        return
    from rich.table import Table

    table = Table("worker", "state", "heartbeat", "K", "sagas", "executions")
    for view in views:
        record = view.record
        held = view.executions
        shown = ", ".join(i[:8] for i in held[:4]) + (f" +{len(held) - 4}" if len(held) > 4 else "")
        table.add_row(
            record.id,
            view.state,
            f"{view.age:.1f}s ago",
            str(record.concurrency),
            "all loaded" if record.sagas is None else ", ".join(record.sagas),
            f"{len(held)}: {shown}" if held else "0",
        )
    console = _console()
    if views:
        console.print(table)
    else:
        console.print("No workers registered.")


@app.command()
@_errors_to_exit_codes
def serve(
    ctx: typer.Context,
    service: Annotated[
        str,
        typer.Argument(metavar="flight|hotel|car|all", help="The service to run, or all three."),
    ],
    port: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=65535,
            help="Port to listen on (default: flight 8001, hotel 8002, car 8003; "
            "with all, the flight's, the next two for hotel and car).",
        ),
    ] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    db: Annotated[
        str,
        typer.Option(
            "--db",
            metavar="PATH",
            help="The service's own SQLite database (not the saga log); {service} is "
            "replaced by the service's name.",
        ),
    ] = "{service}-service.db",
    delay: Annotated[
        float,
        typer.Option(
            metavar="SECONDS",
            min=0.0,
            help="Hold each reserve SECONDS before handling it (a slow network: the "
            "orchestrator times out and compensates first).",
        ),
    ] = 0.0,
) -> None:
    """Run a travel service over HTTP, in its own process with its own database.

    Each service answers reserve, confirm, cancel and inventory requests
    (OpenAPI schema at /docs); `saga book --services URLS` calls them.
    `saga serve all` starts the three on consecutive ports; Ctrl-C stops them.

    Example: saga serve hotel --port 8002 --db hotel.db
    """
    from saga_cli.errors import InvalidInputError
    from saga_cli.services.travel import SERVICES

    if service == "all":
        _serve_all(ctx, port, host, db, delay)
        return
    if service not in SERVICES:
        raise InvalidInputError(
            f"unknown service {service!r}; choose from {', '.join(SERVICES)} or all"
        )
    import uvicorn

    from saga_cli.services.http_app import create_app, default_port

    port = default_port(service) if port is None else port
    _check_port_free(host, port)
    path = db.replace("{service}", service)
    served = create_app(service, path, delay=delay)
    _hint(ctx, f"{service} service on http://{host}:{port} (database {path}; docs at /docs)")
    if not _quiet(ctx):
        import logging

        logging.getLogger("saga_cli.http").setLevel(logging.INFO)  # its refusals
    uvicorn.run(served, host=host, port=port, log_level="warning" if _quiet(ctx) else "info")


def _check_port_free(host: str, port: int) -> None:
    """Refuse a port that is taken with one line, before uvicorn logs a traceback-like error."""
    import socket

    from saga_cli.errors import SagaError

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise SagaError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def _serve_all(ctx: typer.Context, port: int | None, host: str, db: str, delay: float) -> None:
    """Start the three services as child processes and wait; Ctrl-C stops them all."""
    import signal
    import subprocess
    import time

    from saga_cli.errors import InvalidInputError
    from saga_cli.services.travel import SERVICES

    if "{service}" not in db:
        raise InvalidInputError("with `serve all`, --db must contain {service} (one file each)")
    first = 8001 if port is None else port
    if first + len(SERVICES) - 1 > 65535:
        raise InvalidInputError(f"ports {first}..{first + len(SERVICES) - 1} do not all exist")
    ports = {name: first + offset for offset, name in enumerate(SERVICES)}
    for name in SERVICES:
        _check_port_free(host, ports[name])
    children: dict[str, subprocess.Popen[bytes]] = {}
    quiet = ["--quiet"] if _quiet(ctx) else []
    for name in SERVICES:
        command = [sys.executable, "-m", "saga_cli", *quiet, "serve", name]
        command += ["--port", str(ports[name]), "--host", host, "--db", db, "--delay", str(delay)]
        children[name] = subprocess.Popen(command, stdin=subprocess.DEVNULL)
    urls = ",".join(f"http://{host}:{ports[name]}" for name in SERVICES)
    for name, child in children.items():
        _hint(ctx, f"{name}: pid {child.pid}, http://{host}:{ports[name]}")
    _hint(ctx, f"Book through them with: saga simulate --services {urls}")
    running = dict(children)
    # SIGTERM stops the three like Ctrl-C does; the handler only sets a flag.
    stopping: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, _frame: stopping.append(signum))
    try:
        while running and not stopping:
            for name, child in list(running.items()):
                code = child.poll()
                if code is not None:
                    del running[name]
                    _hint(ctx, f"{name} service (pid {child.pid}) exited with code {code}")
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        for child in running.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in running.values():
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
    _hint(ctx, "Stopped.")


@db_app.command("upgrade")
@_errors_to_exit_codes
def db_upgrade(ctx: typer.Context) -> None:
    """Apply pending schema migrations (every command also does this on first use).

    Example: saga db upgrade
    """
    from saga_cli.store.migrate import HEAD_REVISION

    with _store(ctx) as store:
        where = getattr(store, "display_url", store.url)  # no password on the terminal
        typer.echo(f"{where}: schema at revision {HEAD_REVISION} (latest)")


@db_app.command("status")
@_errors_to_exit_codes
def db_status(ctx: typer.Context) -> None:
    """Show the applied and pending schema revisions, without writing anything.

    Example: saga db status
    """
    from saga_cli.errors import SchemaTooNewError
    from saga_cli.store import read_revision
    from saga_cli.store.migrate import KNOWN_REVISIONS

    path, current = read_revision(ctx.obj.db if ctx.obj else DEFAULT_DB)
    if current is not None and current not in KNOWN_REVISIONS:
        raise SchemaTooNewError(
            f"{path} has schema revision {current}, newer than this saga understands "
            f"(up to {KNOWN_REVISIONS[-1]}); upgrade saga-cli"
        )
    applied = (
        KNOWN_REVISIONS[: KNOWN_REVISIONS.index(current) + 1] if current in KNOWN_REVISIONS else ()
    )
    pending = [r for r in KNOWN_REVISIONS if r not in applied]
    typer.echo(f"{path}: revision {current or 'none (empty or new database)'}")
    typer.echo(f"applied: {', '.join(applied) or '-'}")
    typer.echo(f"pending: {', '.join(pending) or '-'}")


@db_app.command("copy")
@_errors_to_exit_codes
def db_copy(
    ctx: typer.Context,
    to: Annotated[
        str,
        typer.Option(
            "--to",
            metavar="PATH_OR_URL",
            help="The empty log to copy into: a SQLite path or a postgresql+psycopg:// URL.",
        ),
    ],
    as_json: JsonOption = False,
) -> None:
    """Copy the whole log (in-flight executions too) into an empty one, verified per table.

    Example: saga --db saga.db db copy --to postgresql+psycopg://saga@db.internal/saga
    """
    from saga_cli.store.copy import copy_log

    report = copy_log(ctx.obj.db if ctx.obj else DEFAULT_DB, to)
    if as_json:
        _print_json(
            {
                "source": report.source,
                "target": report.target,
                "tables": [
                    {"table": t.table, "rows": t.rows, "checksum": t.checksum}
                    for t in report.tables
                ],
            }
        )
        return
    for t in report.tables:
        typer.echo(f"{t.table:<22} {t.rows:>9} rows  checksum {t.checksum}")
    typer.echo(
        f"copied {report.rows} rows in {len(report.tables)} tables from {report.source} "
        f"to {report.target}; counts and checksums verified"
    )


def main() -> None:
    """Console-script entry point."""
    os.environ.setdefault("PYTHONIOENCODING", "utf-8")
    app()
