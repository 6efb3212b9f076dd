"""Looking at the log as a whole: the sagas it knows, its figures, a live view, a dashboard."""

from __future__ import annotations

import os
import sys
from contextlib import ExitStack
from typing import TYPE_CHECKING, Annotated

import typer

from saga_cli.cli.helpers import (
    commands,
    delivering_alerts,
    emit,
    errors_to_exit_codes,
    hint,
    open_log,
    render,
    say,
    travel,
)
from saga_cli.cli.options import JsonOption, SagaOption, ServicesOption, seconds_between

if TYPE_CHECKING:
    from saga_cli.ui import Access

app = commands()


@app.command()
@errors_to_exit_codes
def definitions(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Show the known sagas: their steps, kinds, retry policies and timeouts.

    Lists the built-in travel sagas, those given with --load, and every saga
    the log has seen (with where its code came from, and the policies the log
    recorded for it).

    Example: saga --load examples/bank_transfer.py definitions
    """
    from saga_cli.views import definition_rows

    with travel(ctx) as trip:
        rows = definition_rows(trip.orchestrator.definitions(), trip.store)
    emit(as_json, rows, lambda console: render.definitions(console, rows))


@app.command()
@errors_to_exit_codes
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
    with open_log(ctx) as store:
        result = figures.compute(store, window=window, saga=saga, sample=sample)
    if output == "prometheus":
        from saga_cli.prometheus import exposition

        sys.stdout.write(exposition(result).decode())
        return
    emit(output == "json", result.as_json(), lambda console: render.stats(console, result))


@app.command()
@errors_to_exit_codes
def watch(
    ctx: typer.Context,
    interval: Annotated[
        float,
        typer.Option(
            metavar="SECONDS",
            parser=seconds_between(0.1, 3600),
            help="Seconds between refreshes (0.1 to 3600).",
        ),
    ] = 1.0,
    window: Annotated[
        str, typer.Option(metavar="DURATION", help="Count executions created this recently.")
    ] = "5m",
    saga: SagaOption = None,
    count: Annotated[
        int | None,
        typer.Option(metavar="N", min=1, max=1_000_000, help="Stop after N refreshes."),
    ] = None,
) -> None:
    """Watch executions in flight and the counters, refreshed live from the log.

    Run it in one terminal while another runs `saga simulate`; Ctrl-C stops
    it (exit code 0).

    Example: saga watch --interval 0.5
    """
    from rich.live import Live

    from saga_cli import watch as live_view
    from saga_cli.durations import parse_duration

    seconds = parse_duration(window)
    with open_log(ctx) as store, delivering_alerts(ctx, store):

        def take() -> live_view.Snapshot:
            return live_view.snapshot(store, window=seconds, saga=saga)

        with Live(console=render.console(), auto_refresh=False, redirect_stderr=False) as screen:
            live_view.run(
                take,
                lambda snap: screen.update(render.watch_view(snap), refresh=True),
                interval=interval,
                count=count,
            )


@app.command()
@errors_to_exit_codes
def ui(
    ctx: typer.Context,
    host: Annotated[
        str, typer.Option(help="Address to listen on (loopback unless you say otherwise).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port (0: any free one).")] = 8080,
    allow_actions: Annotated[
        bool,
        typer.Option(
            "--allow-actions",
            help="Add resume, compensate, cancel and resolve buttons, for whoever signs in "
            "with the token (printed at start, or SAGA_UI_TOKEN).",
        ),
    ] = False,
    services: ServicesOption = None,
) -> None:
    """Serve a web dashboard of the log: executions, timelines, stats, stuck work, workers.

    Read-only unless --allow-actions. Listens on 127.0.0.1 unless --host
    says otherwise (and warns when it does). Ctrl-C stops it.

    Example: saga ui --port 8080 --allow-actions
    """
    from saga_cli.errors import InvalidInputError
    from saga_cli.ui import Access, create_app
    from saga_cli.ui.access import TOKEN_ENV
    from saga_cli.ui.server import listen, serve

    if services and not allow_actions:
        raise InvalidInputError(
            "--services is where the actions reach the travel services; it needs --allow-actions"
        )
    access = Access.create(os.environ.get(TOKEN_ENV)) if allow_actions else None
    listener = listen(host, port)
    with ExitStack() as stack:
        stack.callback(listener.socket.close)
        if access is None:
            store, orchestrator = stack.enter_context(open_log(ctx)), None
        else:
            trip = stack.enter_context(travel(ctx, services=services))
            store, orchestrator = trip.store, trip.orchestrator
        app_ = create_app(
            store, orchestrator=orchestrator, access=access, allowed_hosts=listener.allowed_hosts
        )
        _announce(ctx, listener.url, listener.loopback, access)
        serve(app_, listener)


def _announce(ctx: typer.Context, url: str, loopback: bool, access: Access | None) -> None:
    """Say where the dashboard is, whether it can act, and the token (even with --quiet)."""
    hint(ctx, f"saga ui on {url} ({'actions allowed' if access else 'read-only'}; Ctrl-C stops it)")
    if not loopback:
        reach = "read the saga log" + (" (and, with the token, act on it)" if access else "")
        say(f"warning: not listening on loopback: anyone who reaches {url} can {reach}", err=True)
    if access is not None and access.generated:
        say(f"actions token: {access.token}  (sign in at {url}login)", err=True)
