"""Shared fixtures: a fresh saga log per test and a way to run the real `saga` binary."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from saga_cli.store import SagaStore, open_store


def saga_executable() -> str:
    """The installed console script next to this interpreter (never a PATH lookup)."""
    candidate = Path(sys.executable).with_name("saga")
    if candidate.exists():
        return str(candidate)
    found = shutil.which("saga")
    assert found, "the saga console script is not installed"
    return found


def cli_env(**extra: str) -> dict[str, str]:
    """Environment for CLI subprocesses: fixed width, no colour, no SAGA_DB leaking in."""
    env = {k: v for k, v in os.environ.items() if k not in ("SAGA_DB", "SAGA_CONFIG")}
    env.update({"COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"})
    env.update(extra)
    return env


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


@dataclass
class SagaCli:
    """Runs `saga --db <db> …` in a subprocess and returns its exit code and output."""

    db: Path

    def __call__(self, *args: str, timeout: float = 120, **env: str) -> CliResult:
        done = subprocess.run(
            [saga_executable(), "--db", str(self.db), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=cli_env(**env),
            stdin=subprocess.DEVNULL,
        )
        return CliResult(done.returncode, done.stdout, done.stderr)

    def popen(self, *args: str, **env: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [saga_executable(), "--db", str(self.db), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=cli_env(**env),
            stdin=subprocess.DEVNULL,
        )


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """Path of a saga log that does not exist yet."""
    return tmp_path / "saga.db"


@pytest.fixture
def saga(db_path: Path) -> SagaCli:
    """The real `saga` command bound to a fresh log."""
    return SagaCli(db_path)


@pytest.fixture
def store(db_path: Path) -> Iterator[SagaStore]:
    """A migrated store on a fresh file, closed after the test."""
    opened = open_store(str(db_path))
    try:
        yield opened
    finally:
        opened.close()


def open_demo_log(url: str) -> None:
    """Create and migrate the log at `url` with the travel demo's tables, as a booking does."""
    opened = open_store(url)
    try:
        opened.upgrade_branch("demo")
    finally:
        opened.close()


@pytest.fixture(scope="session")
def migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saga log at the newest schema, the demo's tables included, made once; tests copy it."""
    path = tmp_path_factory.mktemp("template") / "saga.db"
    open_demo_log(str(path))
    for suffix in ("-wal", "-shm", "-journal"):
        assert not Path(f"{path}{suffix}").exists(), f"{suffix} left behind by the migration"
    return path


@pytest.fixture
def migrated(saga: SagaCli, db_path: Path, migrated_template: Path) -> SagaCli:
    """The real `saga` command bound to a fresh, already migrated log (the demo's tables too)."""
    shutil.copyfile(migrated_template, db_path)
    return saga


# -- PostgreSQL ----------------------------------------------------------------------
# The PostgreSQL tests need a real server (CI starts one: see .ci/run). They
# fail, never skip, when it cannot be reached: a skipped backend would let a
# broken one pass unnoticed.

PG_SERVER = os.environ.get("SAGA_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
BACKENDS = ("sqlite", "postgres")


def pg_database_url(name: str) -> str:
    """The URL of database `name` on the test server."""
    return PG_SERVER.rsplit("/", 1)[0] + "/" + name


def pg_admin(sql: str) -> None:
    """Run one statement (CREATE/DROP DATABASE) on the server's maintenance database."""
    import psycopg

    from saga_cli.store.postgres import libpq_url

    with psycopg.connect(libpq_url(PG_SERVER), autocommit=True, connect_timeout=5) as admin:
        admin.execute(sql)


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """A database migrated to the newest schema (the demo's tables too) once; tests clone it."""
    name = f"saga_tmpl_{uuid.uuid4().hex[:12]}"
    try:
        pg_admin(f"CREATE DATABASE {name}")
    except Exception as exc:
        pytest.fail(
            f"PostgreSQL is not reachable at {PG_SERVER} ({exc}); start it "
            "(.ci/run does) or point SAGA_TEST_PG at one",
            pytrace=False,
        )
    try:
        open_demo_log(pg_database_url(name))
        yield name
    finally:
        pg_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def pg_empty_url() -> Iterator[str]:
    """The URL of a new, empty database on the test server, dropped after the test."""
    name = f"saga_test_{uuid.uuid4().hex[:12]}"
    try:
        pg_admin(f"CREATE DATABASE {name}")
    except Exception as exc:
        pytest.fail(f"PostgreSQL is not reachable at {PG_SERVER} ({exc})", pytrace=False)
    try:
        yield pg_database_url(name)
    finally:
        pg_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(scope="session")
def pg_shared(pg_template: str) -> Iterator[tuple[str, dict[str, list[tuple[Any, ...]]]]]:
    """One migrated database for the session, and the rows the migrations seeded in it.

    Creating a database per test costs about 0.6 s (CREATE DATABASE copies
    the template's files); emptying this one costs a few milliseconds.
    """
    import psycopg

    from saga_cli.store.postgres import libpq_url

    name = f"saga_test_{uuid.uuid4().hex[:12]}"
    pg_admin(f"CREATE DATABASE {name} TEMPLATE {pg_template}")
    url = pg_database_url(name)
    try:
        with psycopg.connect(libpq_url(url)) as db:
            tables = [
                str(row[0])
                for row in db.execute(
                    "SELECT table_name FROM information_schema.tables"
                    " WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'"
                )
            ]
            seeded = {t: db.execute(f'SELECT * FROM "{t}"').fetchall() for t in tables}
        yield url, seeded
    finally:
        pg_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def pg_url(pg_shared: tuple[str, dict[str, list[tuple[Any, ...]]]]) -> str:
    """The URL of a migrated saga log database holding only what the migrations seeded.

    The session's database is reset before each test: connections left
    over from the previous one are ended, every table is emptied and the
    seeded rows (the catalogue, the schema revision) are put back.
    """
    import psycopg

    from saga_cli.store.postgres import libpq_url

    url, seeded = pg_shared
    with psycopg.connect(libpq_url(url)) as db:
        db.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        db.execute("SET lock_timeout = '10s'")
        # DELETE, not TRUNCATE: on tables this small it skips new files and fsyncs.
        for table in sorted(seeded, key=lambda t: t == "saga_execution"):  # children first
            db.execute(f'DELETE FROM "{table}"')
        for table, rows in seeded.items():
            if rows:
                marks = ", ".join(["%s"] * len(rows[0]))
                db.cursor().executemany(f'INSERT INTO "{table}" VALUES ({marks})', rows)
    return url


@pytest.fixture(params=BACKENDS)
def any_store(request: pytest.FixtureRequest, db_path: Path) -> Iterator[SagaStore]:
    """A migrated store on a fresh log, once per backend (SQLite file, PostgreSQL database)."""
    url = str(db_path) if request.param == "sqlite" else request.getfixturevalue("pg_url")
    opened = open_store(url)
    try:
        yield opened
    finally:
        opened.close()
