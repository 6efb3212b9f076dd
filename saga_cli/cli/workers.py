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
    ServicesOption,
    ServiceTimeoutOption,
    SlowOption,
    TimeoutOption,
    seconds_between,
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
            parser=seconds_between(1, 86400),
            help="Lease length, 1 to 86400 s: a dead worker's executions go to others this "
            "long after it.",
        ),
    ] = 30.0,
    poll: Annotated[
        float,
        typer.Option(
            metavar="SECONDS",
            parser=seconds_between(0.01, 3600),
            help="Seconds between looks while idle (0.01 to 3600).",
        ),
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
    http_port: Annotated[
        int | None,
        typer.Option(
            metavar="PORT",
            min=1,
            max=65535,
            help="Serve GET /healthz, /readyz and /metrics (Prometheus) on this port.",
        ),
    ] = None,
    http_host: Annotated[
        str, typer.Option(metavar="HOST", help="Address for --http-port to listen on.")
    ] = "127.0.0.1",
    prune_after: Annotated[
        str,
        typer.Option(
            metavar="DURATION",
            help="Remove registry rows of workers dead or stale for this long.",
        ),
    ] = "1h",
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
    services: ServicesOption = None,
    service_timeout: ServiceTimeoutOption = None,
    as_json: JsonOption = False,
) -> None:
    """Take pending and interrupted executions from the log and run them, until stopped.

    Runs the travel sagas and those given with --load, each booking against
    the services it recorded (--services only lends credentials). Claims executions
    submitted with --submit, and those whose owner's lease expired; renews
    its leases while it runs them. SIGTERM or Ctrl-C: finish the calls in
    flight (for at most --grace), release the leases, exit 0; a second signal
    releases them at once. While the log is unreachable it claims nothing,
    keeps what it holds while the leases last, and carries on once the log
    answers (--max-outage: give up after that long). With --http-port, answers
    liveness and readiness probes and Prometheus scrapes while it runs.

    Example: saga --load examples/bank_transfer.py worker --concurrency 8
    """
    import signal
    from contextlib import ExitStack

    from saga_cli.worker import Worker

    faults = travel_faults(crash_at, flaky, fail_compensation, slow, outage, timeout)
    with ExitStack() as stack:
        trip = stack.enter_context(
            travel(ctx, faults=faults, services=services, service_timeout=service_timeout)
        )
        stack.enter_context(delivering_alerts(ctx, trip.store, trip.orchestrator))
        runner = Worker(
            trip.orchestrator,
            concurrency=concurrency,
            sagas=saga,
            lease_seconds=lease,
            poll=poll,
            exit_when_idle=exit_when_idle,
            grace=seconds(grace),
            prune_after=seconds(prune_after),
            max_outage=seconds(max_outage),
        )
        if http_port is not None:
            from saga_cli.health import HealthServer

            server = stack.enter_context(HealthServer(runner, http_host, http_port))
            hint(ctx, f"health and metrics on {server.url} (healthz, readyz, metrics)")

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
def workers(
    ctx: typer.Context,
    prune: Annotated[
        bool,
        typer.Option("--prune", help="First remove the rows of dead and stale workers."),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Show the registered workers: when each was last seen, executions held, live or stale.

    A worker is stale once its last heartbeat is older than its lease (its
    executions go to other workers as their leases expire) and dead when it
    ran on this host and its process is gone. Running workers remove such
    rows after their --prune-after; --prune removes them now.

    Example: saga workers --prune --json
    """
    from saga_cli.worker import list_workers, prune_workers

    with open_log(ctx) as store:
        if prune:
            removed = prune_workers(store)
            hint(ctx, f"removed {removed} dead or stale worker(s) from the registry")
        views = list_workers(store)
    data = [view.as_json() for view in views]
    emit(as_json, data, lambda console: render.workers(console, views))
