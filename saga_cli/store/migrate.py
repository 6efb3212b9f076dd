"""Applies the Alembic migrations in ``migrations/`` to a saga log.

The scripts form one main line, the saga log's own tables, applied whenever
a log is opened, and branches (Alembic ``branch_labels``): tables an
application keeps in the log's database, applied when that application asks
for them (:meth:`SagaStore.upgrade_branch`). Once applied, a branch is kept
at its head like the main line.

Alembic and SQLAlchemy are imported only when a database actually needs
upgrading: every command checks the versions with a single query against
:data:`KNOWN_REVISIONS` and :data:`BRANCHES` first (a test keeps them equal
to the scripts).
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

from saga_cli.errors import InvalidInputError, MigrationError, SchemaTooNewError

# The main line, oldest first.
KNOWN_REVISIONS = ("0001", "0002", "0003", "0004", "0005", "0006", "0007", "0008", "0009")
HEAD_REVISION = KNOWN_REVISIONS[-1]
# The main line's Alembic branch label (on 0008: 0001-0007 predate branches).
MAIN_LINE = "saga"
# Each branch's revisions, oldest first. "demo": the travel demo's services
# and circuit breakers (saga_cli/services), applied on the demo's first use.
BRANCHES: dict[str, tuple[str, ...]] = {"demo": ("demo_0001",)}
# Alembic keeps its current migration context in module globals (alembic.op,
# alembic.context): two threads of one process must not migrate at once.
# Processes are kept apart by the database (BEGIN IMMEDIATE, an advisory lock).
_alembic = threading.Lock()


def main_revision(revisions: Collection[str]) -> str | None:
    """The saga log's own revision among a database's `revisions` (alembic_version's rows).

    An unknown revision, of the main line or of a branch, is returned in its
    place (a newer saga migrated the log, and callers refuse it); None means
    the main line was never applied (an empty database).
    """
    branch_revisions = {r for line in BRANCHES.values() for r in line}
    for revision in revisions:
        if revision not in KNOWN_REVISIONS and revision not in branch_revisions:
            return revision
    return next((r for r in revisions if r in KNOWN_REVISIONS), None)


def applied_branches(revisions: Collection[str]) -> tuple[str, ...]:
    """Labels of the branches that `revisions` (alembic_version's rows) show applied."""
    return tuple(label for label, line in BRANCHES.items() if any(r in line for r in revisions))


def branch_head(label: str) -> str:
    """The newest revision of branch `label`.

    Raises:
        InvalidInputError: no branch has that label.
    """
    try:
        return BRANCHES[label][-1]
    except KeyError:
        known = ", ".join(BRANCHES) or "none"
        raise InvalidInputError(
            f"no migration branch is labelled {label!r} (known: {known})"
        ) from None


def is_current(where: str, revisions: Collection[str]) -> bool:
    """Whether a log's `revisions` are the heads of the main line and of every applied branch.

    Args:
        where: the log, as messages name it.
        revisions: the rows of its alembic_version table.

    Raises:
        SchemaTooNewError: a revision is unknown: a newer saga migrated the log.
    """
    known = {*KNOWN_REVISIONS, *(r for line in BRANCHES.values() for r in line)}
    for revision in revisions:
        if revision not in known:
            raise SchemaTooNewError(
                f"{where} has schema revision {revision}, newer than this saga "
                f"understands (up to {HEAD_REVISION}); upgrade saga-cli"
            )
    heads = {HEAD_REVISION, *(branch_head(label) for label in applied_branches(revisions))}
    return set(revisions) == heads


def migrations_dir() -> Path:
    """Locate the Alembic scripts: inside the installed package, or the source tree.

    Raises:
        MigrationError: neither location holds them (a broken install).
    """
    package = Path(__file__).resolve().parent.parent
    for candidate in (package / "migrations", package.parent / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise MigrationError(f"the migration scripts are missing from {package}; reinstall saga-cli")


def _alembic_config(connection: Any) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.attributes["connection"] = connection
    return config


def _sqlite_engine(path: str, busy_timeout_ms: int) -> Any:
    """An engine on the file at `path` whose transactions take the write lock up front.

    The connection is made from the path itself (``creator``), never through a
    URL, so a file name with ``?``, ``%`` or ``#`` names that file and no
    other. BEGIN IMMEDIATE: two processes opening a fresh log at once migrate
    one after the other; the second finds the schema at head and does nothing.
    """
    import sqlite3

    from sqlalchemy import create_engine, event

    def connect() -> sqlite3.Connection:
        return sqlite3.connect(path, timeout=busy_timeout_ms / 1000)

    engine = create_engine("sqlite://", creator=connect)

    @event.listens_for(engine, "connect")
    def _autocommit_driver(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def upgrade(path: str, *, busy_timeout_ms: int = 5000, branches: Sequence[str] = ()) -> None:
    """Bring the SQLite database at `path` (a file path, not a URL) to the newest revision.

    Args:
        path: the file.
        busy_timeout_ms: how long to wait for another writer.
        branches: labels of the branches to bring to their heads too (see BRANCHES).

    Raises:
        InvalidInputError: a label in `branches` names no branch.
        MigrationError: a revision failed; every revision of this call was
            rolled back (they run in one transaction).
    """
    for label in branches:
        branch_head(label)  # refuses an unknown label before touching the file
    try:
        _apply(_sqlite_engine(path, busy_timeout_ms), branches)
    except Exception as exc:  # alembic and drivers raise many types; report one
        raise MigrationError(f"migrating {path} failed: {exc}") from exc


def upgrade_postgres(url: str, *, branches: Sequence[str] = ()) -> None:
    """Bring the PostgreSQL database at `url` to the newest revision.

    The same Alembic scripts as SQLite (one history for both databases), run
    on a SQLAlchemy engine over psycopg 3. The upgrade holds a
    transaction-scoped advisory lock, so two processes opening a fresh log at
    once migrate one after the other: the second waits, then finds the schema
    at head and does nothing. PostgreSQL's DDL is transactional, so a failed
    revision rolls back with its version bump.

    Args:
        url: the database.
        branches: labels of the branches to bring to their heads too (see BRANCHES).

    Raises:
        InvalidInputError: a label in `branches` names no branch.
        MigrationError: a revision failed; every revision of this call was
            rolled back (they run in one transaction).
    """
    from sqlalchemy import create_engine

    from saga_cli.store.postgres import MIGRATION_LOCK, safe_url, sqlalchemy_url

    for label in branches:
        branch_head(label)  # refuses an unknown label before touching the database
    try:
        engine = create_engine(sqlalchemy_url(url), poolclass=_null_pool())
        _apply(engine, branches, first=f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
    except Exception as exc:  # alembic and drivers raise many types; report one
        from saga_cli.redact import scrub

        first = scrub((str(exc).strip().splitlines() or [type(exc).__name__])[0], [url])
        raise MigrationError(f"migrating {safe_url(url)} failed: {first}") from exc


def _apply(engine: Any, branches: Sequence[str], *, first: str | None = None) -> None:
    """Run the upgrades on `engine` in one transaction, after the statement `first`.

    The main line goes to its head first, then each branch in `branches`
    (applied or not) to its own. Alembic finds what is already applied, so a
    second process that waited for the lock does nothing. The engine is
    disposed of afterwards.
    """
    from alembic import command
    from sqlalchemy import text

    try:
        with _alembic, engine.begin() as connection:
            if first is not None:
                connection.execute(text(first))
            command.upgrade(_alembic_config(connection), f"{MAIN_LINE}@head")
            for label in branches:
                command.upgrade(_alembic_config(connection), f"{label}@head")
    finally:
        engine.dispose()


def _null_pool() -> Any:
    from sqlalchemy.pool import NullPool

    return NullPool


def script_revisions(branch: str = MAIN_LINE) -> list[str]:
    """Revision ids of one line of scripts (the main line, or a branch), oldest first.

    Reads the files, never a database.
    """
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory(str(migrations_dir()))
    for head in scripts.get_revisions("heads"):
        if head is None or branch not in head.branch_labels:
            continue
        line: list[str] = []
        script: Any = head
        while script is not None:
            line.append(script.revision)
            below = script.down_revision
            script = None if below is None else scripts.get_revision(str(below))
        return line[::-1]
    return []
