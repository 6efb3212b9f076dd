"""Alerts: list the log's outbox, deliver it once (for cron), send a test to every sink."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from saga_cli.cli.helpers import (
    ExitCode,
    State,
    commands,
    emit,
    errors_to_exit_codes,
    hint,
    open_log,
    print_json,
    render,
    say,
)
from saga_cli.cli.options import JsonOption

if TYPE_CHECKING:
    from saga_cli.alerts import AlertSettings

app = commands(
    help="Alerts: executions that got stuck, missed their deadline or have a compensation "
    "failing, written to the log with the event behind them and delivered to the sinks of "
    "the configuration (a webhook, a command).\n\nExample: saga alerts --pending"
)


def _with_sinks(ctx: typer.Context) -> AlertSettings:
    """The configured alert settings, refused when they name no sink.

    Raises:
        InvalidInputError: no sink is configured.
    """
    from saga_cli.errors import InvalidInputError

    state = ctx.obj if isinstance(ctx.obj, State) else State()
    settings: AlertSettings = state.settings().alerts
    if not settings.sinks:
        raise InvalidInputError(
            "no alert sink is configured: add [[alerts.webhook]] or [[alerts.command]] "
            "to saga.toml (or --config FILE)"
        )
    return settings


@app.callback(invoke_without_command=True)
@errors_to_exit_codes
def alerts(
    ctx: typer.Context,
    pending: Annotated[
        bool, typer.Option("--pending", help="Only alerts not yet delivered to every sink.")
    ] = False,
    limit: Annotated[int, typer.Option(min=1, max=100_000, help="Show at most N alerts.")] = 50,
    as_json: JsonOption = False,
) -> None:
    """List alerts, newest first, with their delivery state.

    Example: saga alerts --pending --json
    """
    if ctx.invoked_subcommand is not None:
        return
    from saga_cli.alerts import alert_json

    with open_log(ctx) as store:
        found = store.alerts(pending=pending, limit=limit)
    emit(as_json, [alert_json(a) for a in found], lambda console: render.alerts(console, found))


@app.command()
@errors_to_exit_codes
def deliver(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Send the due alerts to the configured sinks once, and exit (for cron).

    Exit 1 when some alert could not be delivered (it is retried later).

    Example: saga alerts deliver
    """
    from saga_cli.alerts import deliver_due

    settings = _with_sinks(ctx)
    with open_log(ctx) as store:
        report = deliver_due(store, settings, limit=1000)
    if as_json:
        print_json({"delivered": report.delivered, "retrying": report.retrying})
    else:
        hint(ctx, f"{len(report.delivered)} alert(s) delivered, {len(report.retrying)} to retry")
        for alert_id, error in report.retrying.items():
            say(f"{alert_id}: {error}", err=True)
    if report.retrying:
        raise typer.Exit(ExitCode.ERROR)


@app.command()
@errors_to_exit_codes
def test(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Send a sample alert to every configured sink; nothing is written to the log.

    Exit 1 when a sink did not take it.

    Example: saga --config saga.toml alerts test
    """
    from saga_cli.alerts import send_test

    settings = _with_sinks(ctx)
    with open_log(ctx) as store:
        results = send_test(store, settings)
    if as_json:
        print_json({name: {"ok": error is None, "error": error} for name, error in results.items()})
    else:
        for name, error in results.items():
            say(f"{name}: {'ok' if error is None else 'failed: ' + error}")
    if any(error is not None for error in results.values()):
        raise typer.Exit(ExitCode.ERROR)
