"""The travel demo: bookings in bulk, its services, their stock, and the audit against them."""

from __future__ import annotations

import dataclasses
import functools
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from saga_cli.cli.helpers import (
    ExitCode,
    State,
    commands,
    delivering_alerts,
    emit,
    errors_to_exit_codes,
    hint,
    quiet,
    render,
    seconds,
    travel,
    travel_faults,
)
from saga_cli.cli.options import (
    CrashOption,
    DeadlineOption,
    FailCompensationOption,
    FailOption,
    Finite,
    FlakyOption,
    JsonOption,
    OutageOption,
    ServicesOption,
    ServiceTimeoutOption,
    SlowOption,
    TimeoutOption,
    seconds_between,
)

if TYPE_CHECKING:
    from saga_cli.breaker import BreakerSnapshot
    from saga_cli.services.travel import InventoryRow

app = commands()


@app.command()
@errors_to_exit_codes
def simulate(
    ctx: typer.Context,
    count: Annotated[
        int, typer.Option(min=1, max=10_000_000, help="How many bookings to make.")
    ] = 10,
    fail: FailOption = None,
    fail_rate: Annotated[
        float,
        typer.Option(
            metavar="P",
            parser=Finite(0.0, 1.0),
            help="Chance that a booking fails at a random step (0 to 1).",
        ),
    ] = 0.0,
    seed: Annotated[
        int | None,
        typer.Option(min=0, max=2**63 - 1, help="Seed for reproducible trips and failures."),
    ] = None,
    concurrency: Annotated[
        int,
        typer.Option(
            metavar="K",
            min=1,
            max=1024,
            help="Run K bookings at once (their log writes share commits).",
        ),
    ] = 1,
    capacity: Annotated[
        int | None,
        typer.Option(
            metavar="N",
            min=1,
            max=1_000_000_000,
            help="First restock every resource to capacity N.",
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
    from rich.progress import Progress

    from saga_cli.errors import InvalidInputError
    from saga_cli.services.travel import BookingRequest

    if count < 1:
        raise InvalidInputError(f"--count must be at least 1 (got {count})")
    if not 0.0 <= fail_rate <= 1.0:
        raise InvalidInputError(f"--fail-rate must be within [0, 1] (got {fail_rate})")
    BookingRequest("-", "-", fail=tuple(fail or ()))  # refuses unknown steps up front
    faults = travel_faults(crash_at, flaky, fail_compensation, slow, outage, timeout)
    deadline_seconds = seconds(deadline)
    with (
        travel(ctx, faults=faults, services=services, service_timeout=service_timeout) as trip,
        delivering_alerts(ctx, trip.store, trip.orchestrator),
        # Only on a terminal: piped stderr stays clean for one-line errors.
        Progress(
            console=render.console(stderr=True),
            transient=True,
            disable=as_json or quiet(ctx) or not sys.stderr.isatty(),
        ) as progress,
    ):
        if capacity is not None:
            trip.restock(capacity)
        task = progress.add_task("booking", total=count)
        report = trip.simulate(
            count,
            fail=tuple(fail or ()),
            fail_rate=fail_rate,
            seed=seed,
            concurrency=concurrency,
            deadline=deadline_seconds,
            progress=lambda _outcome: progress.advance(task),
        )
    emit(as_json, report.as_json(), lambda console: render.simulation(console, report))


@app.command()
@errors_to_exit_codes
def faults() -> None:
    """List every failure-injection option and what it does.

    Example: saga faults
    """
    from saga_cli.faults import FAULT_OPTIONS

    render.faults(render.console(), FAULT_OPTIONS)


@app.command()
@errors_to_exit_codes
def inventory(
    ctx: typer.Context,
    restock: Annotated[
        int | None,
        typer.Option(
            metavar="N",
            min=1,
            max=1_000_000_000,
            help="First set every resource's capacity to N.",
        ),
    ] = None,
    services: ServicesOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show the services' capacity, availability and reservations.

    With --services, reads (and restocks) the remote services through their endpoints.

    Example: saga inventory --json
    """
    with travel(ctx, services=services) as trip:
        if restock is not None:
            trip.restock(restock)
        rows = trip.inventory()
    data = [dataclasses.asdict(row) for row in rows]
    emit(as_json, data, lambda console: render.inventory(console, rows))


@app.command()
@errors_to_exit_codes
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
    with travel(ctx, services=services) as trip:
        for name in reset or ():
            trip.reset_breaker(name)
        rows = _service_rows(trip.breaker_states(), trip.inventory())
    emit(as_json, rows, lambda console: render.services(console, rows))


def _service_rows(
    breakers: list[BreakerSnapshot], stock: list[InventoryRow]
) -> list[dict[str, Any]]:
    """One row per service: its breaker, and its resources' capacity and availability summed."""
    totals: dict[str, tuple[int, int]] = {}
    for row in stock:
        capacity, available = totals.get(row.service, (0, 0))
        totals[row.service] = (capacity + row.capacity, available + row.available)
    return [
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


@app.command()
@errors_to_exit_codes
def check(ctx: typer.Context, services: ServicesOption = None, as_json: JsonOption = False) -> None:
    """Audit the saga log: every execution's history, and the bookings against the services.

    Each finished execution, of any saga, must have every step it started
    succeeded (completed) or undone (compensated). Each completed booking
    must hold confirmed reservations, each compensated one none; no
    reservation may belong to no execution, and every resource's capacity
    must be conserved. With --services, the remote services' reservations
    are read through their endpoints.

    Example: saga check
    """
    with travel(ctx, services=services) as trip:
        report = trip.check()
    data = {"consistent": report.consistent, "violations": report.violations}
    emit(as_json, data, lambda console: render.audit(console, report))
    if not report.consistent:
        raise typer.Exit(ExitCode.ERROR)


@app.command()
@errors_to_exit_codes
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
            parser=seconds_between(0, 3600),
            help="Hold each reserve SECONDS (0 to 3600) before handling it (a slow network: the "
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
    from saga_cli.cli.supervisor import serve as run_services

    say = functools.partial(hint, ctx)
    state = ctx.obj if isinstance(ctx.obj, State) else State()
    run_services(
        service,
        port,
        host,
        db,
        delay,
        quiet=quiet(ctx),
        say=say,
        tracing=state.tracing() if service != "all" else None,
        config=state.settings().path,
    )
