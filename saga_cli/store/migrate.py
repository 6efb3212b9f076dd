"""Applies the Alembic migrations in ``migrations/`` to a saga log.

Alembic and SQLAlchemy are imported only when a database actually needs
upgrading: every command checks the version with a single query against
:data:`KNOWN_REVISIONS` first (a test keeps that list equal to the scripts).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from saga_cli.errors import MigrationError

KNOWN_REVISIONS = ("0001", "0002", "0003", "0004", "0005", "0006", "0007")
HEAD_REVISION = KNOWN_REVISIONS[-1]


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


def upgrade(path: str, *, busy_timeout_ms: int = 5000) -> None:
    """Bring the SQLite database at `path` (a file path, not a URL) to the newest revision.

    Raises:
        MigrationError: a revision failed; its transaction was rolled back.
    """
    from alembic import command

    engine = _sqlite_engine(path, busy_timeout_ms)
    try:
        with engine.connect() as connection:
            command.upgrade(_alembic_config(connection), "head")
            connection.commit()
    except Exception as exc:  # alembic and drivers raise many types; report one
        raise MigrationError(f"migrating {path} failed: {exc}") from exc
    finally:
        engine.dispose()


def upgrade_postgres(url: str) -> None:
    """Bring the PostgreSQL database at `url` to the newest revision.

    The same Alembic scripts as SQLite (one history for both databases), run
    on a SQLAlchemy engine over psycopg 3. The upgrade holds a
    transaction-scoped advisory lock, so two processes opening a fresh log at
    once migrate one after the other: the second waits, then finds the schema
    at head and does nothing. PostgreSQL's DDL is transactional, so a failed
    revision rolls back with its version bump.

    Raises:
        MigrationError: a revision failed; its transaction was rolled back.
    """
    from alembic import command
    from sqlalchemy import create_engine, text

    from saga_cli.store.postgres import MIGRATION_LOCK, safe_url, sqlalchemy_url

    engine = create_engine(sqlalchemy_url(url), poolclass=_null_pool())
    try:
        with engine.connect() as connection:
            connection.execute(text(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})"))
            command.upgrade(_alembic_config(connection), "head")
            connection.commit()
    except Exception as exc:  # alembic and drivers raise many types; report one
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise MigrationError(f"migrating {safe_url(url)} failed: {first}") from exc
    finally:
        engine.dispose()


def _null_pool() -> Any:
    from sqlalchemy.pool import NullPool

    return NullPool


def script_revisions() -> list[str]:
    """Revision ids of the migration scripts, oldest first (reads files, no database)."""
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory(str(migrations_dir()))
    return [rev.revision for rev in reversed(list(scripts.walk_revisions()))]
