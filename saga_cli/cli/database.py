"""``saga db``: the saga log's schema, and copying a whole log into another database."""

from __future__ import annotations

import dataclasses
from typing import Annotated

import typer

from saga_cli.cli.helpers import commands, errors_to_exit_codes, log_url, open_log, print_json, say
from saga_cli.cli.options import JsonOption, secret_bearing

app = commands(help="Inspect and migrate the saga log's schema.", no_args_is_help=True)


@app.command("upgrade")
@errors_to_exit_codes
def db_upgrade(ctx: typer.Context) -> None:
    """Apply pending schema migrations (every command also does this on first use).

    Example: saga db upgrade
    """
    from saga_cli.store.migrate import HEAD_REVISION

    with open_log(ctx) as store:
        where = getattr(store, "display_url", store.url)  # no password on the terminal
        say(f"{where}: schema at revision {HEAD_REVISION} (latest)")


@app.command("status")
@errors_to_exit_codes
def db_status(ctx: typer.Context) -> None:
    """Show the applied and pending schema revisions, without writing anything.

    Example: saga db status
    """
    from saga_cli.errors import SchemaTooNewError
    from saga_cli.store import read_revision
    from saga_cli.store.migrate import KNOWN_REVISIONS

    path, current = read_revision(log_url(ctx))
    if current is not None and current not in KNOWN_REVISIONS:
        raise SchemaTooNewError(
            f"{path} has schema revision {current}, newer than this saga understands "
            f"(up to {KNOWN_REVISIONS[-1]}); upgrade saga-cli"
        )
    applied = (
        KNOWN_REVISIONS[: KNOWN_REVISIONS.index(current) + 1] if current in KNOWN_REVISIONS else ()
    )
    pending = [r for r in KNOWN_REVISIONS if r not in applied]
    say(f"{path}: revision {current or 'none (empty or new database)'}")
    say(f"applied: {', '.join(applied) or '-'}")
    say(f"pending: {', '.join(pending) or '-'}")


@app.command("copy")
@errors_to_exit_codes
def db_copy(
    ctx: typer.Context,
    to: Annotated[
        str,
        typer.Option(
            "--to",
            metavar="PATH_OR_URL",
            callback=secret_bearing,
            help="The empty log to copy into: a SQLite path or a postgresql+psycopg:// URL.",
        ),
    ],
    as_json: JsonOption = False,
) -> None:
    """Copy the whole log (in-flight executions too) into an empty one, verified per table.

    Example: saga --db saga.db db copy --to postgresql+psycopg://saga@db.internal/saga
    """
    from saga_cli.redact import redact_url
    from saga_cli.store.copy import copy_log

    try:
        report = copy_log(log_url(ctx), to)
    except KeyboardInterrupt:
        # Not errors_to_exit_codes' message, which is about sagas to resume.
        say(
            f"Interrupted; the copy was rolled back: {redact_url(to)} holds none of it.",
            err=True,
        )
        raise typer.Exit(130) from None
    if as_json:
        tables = [dataclasses.asdict(table) for table in report.tables]
        print_json({"source": report.source, "target": report.target, "tables": tables})
        return
    for t in report.tables:
        say(f"{t.table:<22} {t.rows:>9} rows  checksum {t.checksum}")
    say(
        f"copied {report.rows} rows in {len(report.tables)} tables from {report.source} "
        f"to {report.target}; counts and checksums verified"
    )
