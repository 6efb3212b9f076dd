"""Workers: run the log's executions in a long-lived process, and list who is running them."""

from __future__ import annotations

from typing import Annotated

import typer

from saga_cli.cli.helpers import (
    commands,
    delivering_alerts,
    emit,
    errors_to_exit_codes,
    hint,
    open_log,
    print_json,
    render,
    seconds,
    travel,
    travel_faults,
)
from saga_cli.cli.options import (
    CrashOption,
    FailCompensationOption,
    FlakyOption,
    JsonOption,
    OutageOption,
    SlowOption,
    TimeoutOption,
)

app = commands()


@app.command()
@errors_to_exit_codes
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
    max_outage: Annotated[
        str | None,
        typer.Option(
            metavar="DURATION",
            help="Give up (exit 1) once the log has been unreachable this long "
            "(default: wait for it forever).",
        ),
    ] = None,
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
    its leases while it runs them. SIGTERM or Ctrl-C: finish the calls in
    flight (for at most --grace), release the leases, exit 0; a second signal
    releases them at once. While the log is unreachable it claims nothing,
    keeps what it holds while the leases last, and carries on once the log
    answers (--max-outage: give up after that long).

    Example: saga --load examples/bank_transfer.py worker --concurrency 8
    """
    import signal

    from saga_cli.worker import Worker

    faults = travel_faults(crash_at, flaky, fail_compensation, slow, outage, timeout)
    with travel(ctx, faults=faults) as trip, delivering_alerts(ctx, trip.store, trip.orchestrator):
        runner = Worker(
            trip.orchestrator,
            concurrency=concurrency,
            sagas=saga,
            lease_seconds=lease,
            poll=poll,
            exit_when_idle=exit_when_idle,
            grace=seconds(grace),
            max_outage=seconds(max_outage),
        )

        def stop(_signum: int, _frame: object) -> None:
            runner.stop(now=runner.stopping)  # a second signal: hand back at once

        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        hint(ctx, f"worker {runner.id} taking {', '.join(runner.sagas)} ({concurrency} at once)")
        try:
            report = runner.run()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    if as_json:
        print_json(report.as_json())
        return
    hint(
        ctx,
        f"worker {runner.id} exited: {report.completed} completed, {report.compensated} "
        f"compensated, {report.stuck} stuck, {report.released} released, "
        f"{len(report.lost)} lost to other workers, {len(report.failed)} not runnable here",
    )


@app.command()
@errors_to_exit_codes
def workers(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Show the registered workers: heartbeat, executions held, live or stale.

    A worker is stale once its last heartbeat is older than its lease (its
    executions go to other workers as their leases expire) and dead when it
    ran on this host and its process is gone.

    Example: saga workers --json
    """
    from saga_cli.worker import list_workers

    with open_log(ctx) as store:
        views = list_workers(store)
    data = [view.as_json() for view in views]
    emit(as_json, data, lambda console: render.workers(console, views))
