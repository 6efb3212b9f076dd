"""Alembic environment for the saga log.

saga_cli.store.migrate hands us an open connection (``config.attributes``);
running ``alembic`` by hand works too, with ``-x url=sqlite:///saga.db``.
"""

from alembic import context
from sqlalchemy import create_engine

config = context.config


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        url = context.get_x_argument(as_dictionary=True).get("url", "sqlite:///saga.db")
        with create_engine(url).connect() as own:
            _run(own)
            own.commit()
        return
    _run(connection)


def _run(connection) -> None:  # type: ignore[no-untyped-def]
    # transactional_ddl: every revision and its version bump commit together,
    # so a failed migration leaves the version where it was (SQLite included).
    context.configure(
        connection=connection,
        target_metadata=None,
        render_as_batch=True,
        transactional_ddl=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("saga's migrations run online only: use `saga db upgrade`")
run_migrations_online()
