"""The travel demo's tables: made by its own migration branch on first use; older logs upgraded.

A log that only ever runs its user's sagas holds only the saga tables. Logs at
revision 0007, when every log had the demo's tables, upgrade in place on SQLite
and PostgreSQL: one that used the demo keeps every row (revision 0008 records
the demo branch as applied), one that did not loses the unused tables.
"""

from __future__ import annotations

import sqlite3
import textwrap
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import BACKENDS, SagaCli
from support import BOOKING, run_saga

from saga_cli import Orchestrator, Saga, StepContext
from saga_cli.store import migrate
from saga_cli.store.postgres import is_postgres_url, libpq_url, sqlalchemy_url

# The saga log's tables at revision 0007 (OLD_REVISION), and at the head.
OLD_LOG_TABLES = {"saga_execution", "saga_event", "saga_definition", "saga_key_lock", "saga_worker"}
LOG_TABLES = OLD_LOG_TABLES | {"saga_alert"}
DEMO_TABLES = {
    *(f"{s}_{t}" for s in ("flight", "hotel", "car") for t in ("resource", "reservation")),
    "payment_charge",
    "notification_outbox",
    "circuit_breaker",
}
DEMO_HEAD = migrate.BRANCHES["demo"][-1]
OLD_REVISION = "0007"  # the last revision before the demo had a branch of its own

USER_SAGA = """
from saga_cli import Saga, StepContext

hello = Saga("hello")


@hello.step(kind="retriable")
def greet(ctx: StepContext) -> dict[str, str]:
    return {"greeted": ctx.execution_id}
"""


def hello_saga() -> Saga[Any]:
    hello: Saga[Any] = Saga("hello")

    @hello.step(kind="retriable")
    def greet(ctx: StepContext) -> dict[str, str]:
        return {"greeted": ctx.execution_id}

    return hello


# -- reading and writing either backend --------------------------------------------------------


@contextmanager
def connected(url: str) -> Iterator[Any]:
    """A DB-API connection to the log at `url`, committed when the block ends."""
    if is_postgres_url(url):
        import psycopg

        with psycopg.connect(libpq_url(url)) as server:
            yield server
        return
    with closing(sqlite3.connect(url)) as file, file:
        yield file


def tables(url: str) -> set[str]:
    sql = (
        "SELECT table_name FROM information_schema.tables"
        " WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'"
        if is_postgres_url(url)
        else "SELECT name FROM sqlite_master WHERE type='table'"
    )
    with connected(url) as db:
        return {str(row[0]) for row in db.execute(sql).fetchall()} - {"alembic_version"}


def revisions(url: str) -> set[str]:
    with connected(url) as db:
        return {str(row[0]) for row in db.execute("SELECT version_num FROM alembic_version")}


def content(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every table's rows (alembic_version aside), sorted, so two logs compare as data."""
    with connected(url) as db:
        return {
            table: sorted((tuple(row) for row in db.execute(f'SELECT * FROM "{table}"')), key=repr)
            for table in sorted(tables(url))
        }


def put(url: str, rows: dict[str, list[tuple[Any, ...]]]) -> None:
    """Insert `rows` table by table (parents first); the seeded catalogue is replaced."""
    mark = "%s" if is_postgres_url(url) else "?"
    order = sorted(rows, key=lambda t: t != "saga_execution")
    with connected(url) as db:
        for table in order:
            if table.endswith("_resource"):
                db.execute(f'DELETE FROM "{table}"')
            if rows[table]:
                marks = ", ".join([mark] * len(rows[table][0]))
                db.cursor().executemany(f'INSERT INTO "{table}" VALUES ({marks})', rows[table])


def at_0007(rows: dict[str, list[tuple[Any, ...]]]) -> dict[str, list[tuple[Any, ...]]]:
    """`rows` of a log at the head as a log at 0007 holds them: without the (empty) alert outbox."""
    assert rows["saga_alert"] == []
    return {table: found for table, found in rows.items() if table in OLD_LOG_TABLES | DEMO_TABLES}


def at_old_revision(url: str) -> None:
    """Migrate the empty log at `url` to 0007 with the scripts, as the saga of that time did."""
    from alembic import command

    engine = sa.create_engine(
        sqlalchemy_url(url) if is_postgres_url(url) else f"sqlite:///{url}",
        poolclass=sa.pool.NullPool,
    )
    try:
        with engine.begin() as connection:
            command.upgrade(migrate._alembic_config(connection), OLD_REVISION)
    finally:
        engine.dispose()
    assert revisions(url) == {OLD_REVISION}
    assert tables(url) == OLD_LOG_TABLES | DEMO_TABLES  # every log had the demo's tables then


@pytest.fixture(params=BACKENDS)
def old_log(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a log at revision 0007, empty but for the demo's seeded catalogue."""
    if request.param == "sqlite":
        url = str(tmp_path / "old.db")
    else:
        url = str(request.getfixturevalue("pg_empty_url"))
    at_old_revision(url)
    return url


# -- first use -------------------------------------------------------------------------------


def test_a_log_that_runs_only_its_users_sagas_holds_only_the_saga_tables(
    saga: SagaCli, tmp_path: Path
) -> None:
    with Orchestrator(str(saga.db)) as orchestrator:
        assert orchestrator.run(hello_saga(), {}).status.value == "completed"
    module = tmp_path / "hello.py"
    module.write_text(textwrap.dedent(USER_SAGA))
    load = ("--load", str(module))
    for args in [
        ("run", f"{module}:hello", "--payload", "{}"),
        ("run", f"{module}:hello", "--payload", "{}", "--submit"),
        (*load, "worker", "--exit-when-idle", "--poll", "0.05"),
        (*load, "resume", "--all"),
        (*load, "definitions"),
        ("list",),
        ("stats",),
        ("workers",),
        ("db", "upgrade"),
        ("db", "status"),
        ("check",),  # audits the log alone: no demo tables to read, none made
    ]:
        result = saga(*args)
        assert result.code == 0, (args, result)
    assert tables(str(saga.db)) == LOG_TABLES
    assert revisions(str(saga.db)) == {migrate.HEAD_REVISION}
    assert len(saga("list", "--json").json()) == 3


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(("book", *BOOKING), id="book"),
        pytest.param(("simulate", "--count", "2"), id="simulate"),
        pytest.param(("inventory",), id="inventory"),
        pytest.param(("services",), id="services"),
    ],
)
def test_the_demo_makes_its_tables_on_first_use(saga: SagaCli, args: tuple[str, ...]) -> None:
    assert saga("db", "upgrade").code == 0
    assert tables(str(saga.db)) == LOG_TABLES

    result = saga(*args)

    assert result.code == 0, result
    assert tables(str(saga.db)) == LOG_TABLES | DEMO_TABLES
    assert revisions(str(saga.db)) == {migrate.HEAD_REVISION, DEMO_HEAD}
    assert saga("check").code == 0


# -- logs from before the demo had a branch of its own -------------------------------------------


@pytest.fixture(scope="module")
def demo_rows(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[tuple[Any, ...]]]:
    """What the demo writes: a completed, a compensated and a retried booking, a breaker's state."""
    db = str(tmp_path_factory.mktemp("demo") / "demo.db")
    assert run_saga(db, "book", *BOOKING).code == 0
    assert run_saga(db, "book", *BOOKING, "--fail", "car").code == 3
    assert run_saga(db, "book", *BOOKING, "--flaky", "hotel:2").code == 0
    rows = content(db)
    assert rows["circuit_breaker"] and rows["payment_charge"] and rows["car_reservation"]
    return rows


@pytest.fixture(scope="module")
def user_rows(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[tuple[Any, ...]]]:
    """What running only a user's saga writes: two executions, their events and definition."""
    db = str(tmp_path_factory.mktemp("user") / "user.db")
    with Orchestrator(db) as orchestrator:
        for _ in range(2):
            orchestrator.run(hello_saga(), {})
    rows = content(db)
    assert set(rows) == LOG_TABLES and len(rows["saga_execution"]) == 2
    return rows


def test_an_old_log_that_used_the_demo_upgrades_with_every_row_kept(
    old_log: str, demo_rows: dict[str, list[tuple[Any, ...]]]
) -> None:
    put(old_log, demo_rows)
    assert content(old_log) == at_0007(demo_rows)

    upgraded = run_saga(old_log, "db", "upgrade")

    assert upgraded.code == 0, upgraded
    assert revisions(old_log) == {migrate.HEAD_REVISION, DEMO_HEAD}
    assert content(old_log) == demo_rows
    check = run_saga(old_log, "check", "--json")
    assert check.code == 0, check
    assert check.json() == {"consistent": True, "violations": []}
    assert len(run_saga(old_log, "list", "--json").json()) == 3
    # the demo goes on where it stopped: the branch is not applied twice
    assert run_saga(old_log, "book", *BOOKING).code == 0
    assert revisions(old_log) == {migrate.HEAD_REVISION, DEMO_HEAD}
    assert run_saga(old_log, "check").code == 0


def test_an_old_log_that_never_used_the_demo_keeps_only_the_saga_tables(
    old_log: str, user_rows: dict[str, list[tuple[Any, ...]]]
) -> None:
    put(old_log, user_rows)

    listed = run_saga(old_log, "list", "--json")

    assert listed.code == 0, listed
    assert len(listed.json()) == 2
    assert revisions(old_log) == {migrate.HEAD_REVISION}
    assert tables(old_log) == LOG_TABLES
    assert content(old_log) == user_rows
    check = run_saga(old_log, "check", "--json")
    assert check.code == 0, check
    assert check.json() == {"consistent": True, "violations": []}
    assert tables(old_log) == LOG_TABLES  # the audit makes no demo tables
    # the demo, used later, starts from its seeded catalogue
    assert run_saga(old_log, "inventory").code == 0
    assert tables(old_log) == LOG_TABLES | DEMO_TABLES


def test_an_old_log_whose_catalogue_was_restocked_keeps_the_demo_tables(tmp_path: Path) -> None:
    old = str(tmp_path / "old.db")
    at_old_revision(old)
    with connected(old) as db:
        db.execute("UPDATE car_resource SET capacity=50, available=50")
    before = content(old)

    assert run_saga(old, "db", "upgrade").code == 0

    assert revisions(old) == {migrate.HEAD_REVISION, DEMO_HEAD}
    assert at_0007(content(old)) == before


def test_copying_a_log_without_the_demo_gives_a_target_without_it(tmp_path: Path) -> None:
    source, target = str(tmp_path / "source.db"), str(tmp_path / "target.db")
    with Orchestrator(source) as orchestrator:
        orchestrator.run(hello_saga(), {})

    copied = run_saga(source, "db", "copy", "--to", target, "--json")

    assert copied.code == 0, copied
    assert {t["table"] for t in copied.json()["tables"]} == LOG_TABLES
    assert tables(target) == LOG_TABLES
    assert revisions(target) == {migrate.HEAD_REVISION}
    assert content(target) == content(source)
