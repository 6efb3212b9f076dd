"""Making and driving executions: book or run one, list, show, resume, stop, resolve, prune."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from saga_cli.cli.helpers import (
    ExitCode,
    commands,
    delivering_alerts,
    emit,
    errors_to_exit_codes,
    finish,
    hint,
    open_log,
    orchestrator,
    print_json,
    refuse_local_faults,
    render,
    say,
    seconds,
    submitted,
    travel,
    travel_faults,
)
from saga_cli.cli.options import (
    CrashOption,
    DeadlineOption,
    FailCompensationOption,
    FailOption,
    FlakyOption,
    ForceOption,
    IdArgument,
    JsonOption,
    OutageOption,
    SagaOption,
    ServicesOption,
    ServiceTimeoutOption,
    SlowOption,
    StatusOption,
    SubmitOption,
    TimeoutOption,
)

app = commands()


@app.command()
@errors_to_exit_codes
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
    deadline_seconds = seconds(deadline)
    if submit:
        refuse_local_faults(
            flaky=flaky,
            fail_compensation=fail_compensation,
            slow=slow,
            outage=outage,
            timeout=timeout,
            crash_at=crash_at,
        )
        with travel(ctx, services=services) as trip:  # the payload records them
            execution_id = trip.submit(request, deadline=deadline_seconds)
        submitted(execution_id, as_json)
        return
    faults = travel_faults(crash_at, flaky, fail_compensation, slow, outage, timeout)
    with travel(
        ctx,
        faults=faults,
        show_steps=not as_json,
        services=services,
        service_timeout=service_timeout,
    ) as trip:
        result = trip.book(request, deadline=deadline_seconds)
    finish(result, as_json)


@app.command()
@errors_to_exit_codes
def run(
    ctx: typer.Context,
    saga: Annotated[
        str,
        typer.Argument(
            metavar="MODULE_OR_FILE[:SAGA]",
            help="Where your saga is: shop/sagas.py:order or shop.sagas:order; SAGA is its "
            "Python name or the name it was given (as `saga list` shows it).",
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
        refuse_local_faults(
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
        with orchestrator(ctx) as engine:
            execution_id = engine.submit(definition, data, deadline=seconds(deadline))
        submitted(execution_id, as_json)
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
        wait = math.inf if key_timeout is None else seconds(key_timeout) or 0.0
    with orchestrator(ctx, show_steps=not as_json) as engine:
        result = engine.run(
            faults.apply(definition) if faults else definition,
            data,
            deadline=seconds(deadline),
            key_wait=wait,
        )
    finish(result, as_json)


def _read_payload(payload: str | None, payload_file: str | None) -> Any:
    """The JSON object given with --payload or --payload-file.

    Raises:
        InvalidInputError: neither or both given, unreadable, or not a JSON object.
    """
    from saga_cli.errors import InvalidInputError

    if (payload is None) == (payload_file is None):
        raise InvalidInputError("give the input with either --payload JSON or --payload-file FILE")
    from saga_cli.limits import MAX_PAYLOAD_BYTES, loads, read_capped

    text = payload or ""
    if payload_file is not None:
        where = "standard input" if payload_file == "-" else payload_file
        text = read_capped(payload_file, MAX_PAYLOAD_BYTES, f"--payload-file {where}")
    elif len(text) > MAX_PAYLOAD_BYTES:
        raise InvalidInputError(f"--payload is larger than {MAX_PAYLOAD_BYTES // 2**20} MiB")
    data = loads(text, "the payload")
    if not isinstance(data, dict):
        raise InvalidInputError(f"the payload must be a JSON object, not {type(data).__name__}")
    return data


@app.command("list")
@errors_to_exit_codes
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

    with open_log(ctx) as store:
        page = list_page(
            store, status=status, saga=saga, since=since, until=until, limit=limit, cursor=cursor
        )
    emit(as_json, page.as_json(), lambda console: render.executions(console, page.rows))
    if page.next_cursor and not as_json:
        hint(ctx, f"next page: --cursor {page.next_cursor}")


@app.command()
@errors_to_exit_codes
def show(ctx: typer.Context, execution_id: IdArgument, as_json: JsonOption = False) -> None:
    """Show one execution: its steps and the full transition log.

    Example: saga show 3f2a
    """
    from saga_cli.views import describe

    with open_log(ctx) as store:
        view = describe(store, execution_id)
    emit(as_json, view.as_json(), lambda console: render.execution(console, view))


@app.command()
@errors_to_exit_codes
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
    from saga_cli.domain import SagaStatus
    from saga_cli.errors import InvalidInputError

    if all_ == (execution_id is not None):
        raise InvalidInputError("give either an execution ID or --all")
    with travel(
        ctx,
        show_steps=not as_json and not all_,
        services=services,
        service_timeout=service_timeout,
    ) as trip:
        engine = trip.orchestrator
        if execution_id is not None:
            result = engine.resume(execution_id, force=force)
        else:
            with delivering_alerts(ctx, trip.store, engine):
                report = engine.resume_all(concurrency=concurrency, force=force)
    if execution_id is not None:
        finish(result, as_json)
    data = {
        "resumed": len(report.outcomes),
        "busy": report.busy,
        "failed": report.failed,
        "outcomes": [{"id": o.execution_id, "status": o.status.value} for o in report.outcomes],
    }
    emit(as_json, data, lambda console: render.recovery(console, report))
    if report.failed:
        raise typer.Exit(ExitCode.ERROR)
    if any(o.status is SagaStatus.STUCK for o in report.outcomes):
        raise typer.Exit(ExitCode.STUCK)


@app.command()
@errors_to_exit_codes
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
    with travel(ctx, show_steps=not as_json, services=services) as trip:
        result = trip.orchestrator.compensate(execution_id, force=force)
    finish(result, as_json)


@app.command()
@errors_to_exit_codes
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
    with travel(ctx, show_steps=not as_json, services=services) as trip:
        result = trip.orchestrator.cancel(execution_id, force=force)
    finish(result, as_json)


@app.command()
@errors_to_exit_codes
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
    with travel(ctx, show_steps=not as_json) as trip:
        result = trip.orchestrator.resolve(execution_id, note)
    data = {"id": result.execution_id, "status": result.status.value, "note": note}
    emit(as_json, data, lambda console: render.outcome(console, result))


@app.command()
@errors_to_exit_codes
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

    with open_log(ctx) as store:
        deleted, cutoff, statuses = prune_log(store, older_than, status or ())
    names = [s.value for s in statuses]
    if as_json:
        print_json({"deleted": deleted, "older_than": cutoff, "statuses": names})
        return
    say(f"Deleted {deleted} execution(s) ({', '.join(names)}) older than {older_than}.")
