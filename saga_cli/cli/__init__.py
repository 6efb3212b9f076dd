"""The ``saga`` command line: parse, call the library, render, exit.

The commands live in modules by what a user does with them:

- ``executions``: book, run, list, show, resume, compensate, cancel, resolve, prune
- ``observability``: definitions, stats, watch, ui (the web dashboard in ``saga_cli.ui``)
- ``travel``: the demo's simulate, faults, inventory, services, check, serve
  (``supervisor`` runs ``serve all``'s child processes)
- ``workers``: worker, workers
- ``database``: db upgrade, db status, db copy
- ``alerting``: alerts, alerts deliver, alerts test

Options several commands take are declared once in ``options``; ``helpers``
opens the log, turns errors into exit codes and prints JSON or a table (drawn
by ``saga_cli.render``). Only Typer is imported at start-up; each command
imports the library and rich when it runs, so ``saga --help`` stays fast.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
import typer.core

from saga_cli.cli import alerting, database, executions, observability, travel, workers
from saga_cli.cli.helpers import ExitCode, State
from saga_cli.cli.options import DEFAULT_DB

__all__ = ["ExitCode", "app", "main"]


class _OneLineErrors(typer.core.TyperGroup):
    """The root command: a usage error is one ``Error:`` line too, like every other error.

    Click prints the usage and a hint above it; a script (and the README's
    promise) wants exactly one line on stderr, so the hint joins the line.
    """

    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        with _one_line():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx: Any) -> Any:
        with _one_line():
            return super().invoke(ctx)


@contextmanager
def _one_line() -> Iterator[None]:
    # Click's UsageError, wherever this typer version keeps click (it may vendor it).
    usage_error: type[Exception] = next(
        c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError"
    )
    try:
        yield
    except usage_error as exc:
        context = getattr(exc, "ctx", None)
        if type(exc).__name__ == "NoArgsIsHelpError" or context is None:
            raise
        line = (
            f"{getattr(exc, 'format_message', exc.__str__)()} (see '{context.command_path} --help')"
        )

        def show(file: Any = None) -> None:
            from saga_cli.terminal import error_line

            typer.echo(error_line(line), err=True)

        setattr(exc, "show", show)  # noqa: B010 - replaces the usage-and-hint display
        raise


app = typer.Typer(
    name="saga",
    cls=_OneLineErrors,
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
for group in (executions, observability, travel, workers):
    app.add_typer(group.app)
app.add_typer(database.app, name="db")
app.add_typer(alerting.app, name="alerts")


def _configure_logging(verbose: int, quiet: bool) -> None:
    """Logs go to stderr (stdout carries only data): errors only with --quiet, more with -v."""
    import logging

    from saga_cli.terminal import log_formatter

    levels = (logging.WARNING, logging.INFO, logging.DEBUG)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(log_formatter())  # no secret, no escape sequence in a log line
    logging.basicConfig(
        level=logging.ERROR if quiet else levels[min(verbose, 2)], handlers=[handler]
    )


def _config(ctx: typer.Context, value: str | None) -> str | None:
    """Read the configuration first (an eager option), so its defaults apply to every option.

    They go into click's default map: an option given on the command line,
    or through its environment variable, still wins.
    """
    from saga_cli.cli.helpers import config_defaults

    try:
        ctx.default_map, ctx.meta["saga.config"] = config_defaults(ctx.command, value)
    except Exception as exc:  # a SagaError: the file is bad; nothing was run
        from saga_cli.errors import SagaError

        if not isinstance(exc, SagaError):
            raise
        from saga_cli.terminal import error_line

        typer.echo(error_line(exc), err=True)
        raise typer.Exit(ExitCode.USAGE) from None
    return value


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
    config: Annotated[
        str | None,
        typer.Option(
            "--config",
            envvar="SAGA_CONFIG",
            metavar="FILE",
            callback=_config,
            is_eager=True,
            help="Defaults for the options, alert sinks and tracing (TOML; default ./saga.toml "
            "if it exists). Options and environment variables win over it.",
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
    from saga_cli.redact import remember

    remember(db)  # its password never reaches a message, a log line or the JSON output
    state = State()
    state.db = db
    state.load = tuple(load or ())
    state.quiet = quiet
    state.step_timeout = step_timeout
    state.config = ctx.meta.get("saga.config")
    ctx.obj = state


def main() -> None:
    """Console-script entry point."""
    os.environ.setdefault("PYTHONIOENCODING", "utf-8")
    app()
