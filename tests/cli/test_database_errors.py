"""A --db that is not a saga log, is locked, or is newer: one error line, nothing touched."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pytest
from conftest import SagaCli, cli_env, saga_executable
from support import BOOKING, assert_one_line_error, dump, execute, query, run_saga

from saga_cli.store.migrate import BRANCHES, HEAD_REVISION

DEMO_HEAD = BRANCHES["demo"][-1]

COMMANDS = [
    pytest.param(("list",), id="list"),
    pytest.param(("show", "abc"), id="show"),
    pytest.param(("book", *BOOKING), id="book"),
    pytest.param(("resume", "--all"), id="resume-all"),
    pytest.param(("simulate", "--count", "2"), id="simulate"),
    pytest.param(("inventory",), id="inventory"),
    pytest.param(("check",), id="check"),
    pytest.param(("db", "upgrade"), id="db-upgrade"),
    pytest.param(("db", "status"), id="db-status"),
]


def sidecars(db: Path) -> list[Path]:
    return [p for p in db.parent.iterdir() if p.name != db.name and p.name.startswith(db.name)]


@pytest.mark.parametrize("args", COMMANDS)
def test_a_file_that_is_not_sqlite_is_refused_with_exit_2_and_left_untouched(
    saga: SagaCli, args: tuple[str, ...]
) -> None:
    content = b"name,amount\nada,12\n" * 40
    saga.db.write_bytes(content)

    result = saga(*args)

    assert_one_line_error(result, 2, "not a SQLite database", "untouched")
    assert saga.db.read_bytes() == content
    assert sidecars(saga.db) == []


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(("list",), id="list"),
        pytest.param(("book", *BOOKING), id="book"),
        pytest.param(("db", "upgrade"), id="db-upgrade"),
        pytest.param(("db", "status"), id="db-status"),
    ],
)
def test_a_corrupt_file_with_a_sqlite_header_is_refused_with_exit_2_and_left_untouched(
    saga: SagaCli, args: tuple[str, ...]
) -> None:
    content = b"SQLite format 3\x00" + bytes(range(256)) * 16
    saga.db.write_bytes(content)

    result = saga(*args)

    assert_one_line_error(result, 2, "not a saga log")
    assert saga.db.read_bytes() == content
    assert sidecars(saga.db) == []


@pytest.mark.parametrize(
    ("is_directory", "message"),
    [
        pytest.param(True, "is a directory", id="directory"),
        pytest.param(False, "does not exist", id="missing-parent-directory"),
    ],
)
def test_a_db_path_that_cannot_be_a_log_is_refused_with_exit_2(
    tmp_path: Path, is_directory: bool, message: str
) -> None:
    target = tmp_path / "logs" / "saga.db"
    if is_directory:
        target.mkdir(parents=True)

    result = run_saga(str(target), "list")

    assert_one_line_error(result, 2, message)
    assert not Path(f"{target}-wal").exists()


@contextmanager
def write_locked(db: Path) -> Iterator[None]:
    """Hold SQLite's write lock on `db`, as another writer would."""
    with closing(sqlite3.connect(db, isolation_level=None)) as holder:
        holder.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            holder.execute("ROLLBACK")


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(("book", *BOOKING), id="book"),
        pytest.param(("inventory", "--restock", "20"), id="restock"),
    ],
)
def test_a_log_locked_past_the_busy_timeout_fails_with_exit_1_and_loses_nothing(
    migrated: SagaCli, args: tuple[str, ...]
) -> None:
    assert migrated("book", *BOOKING).code == 0
    listing = migrated("list", "--json")
    before = dump(migrated.db)

    with write_locked(migrated.db):
        result = run_saga(f"sqlite:///{migrated.db}?busy_timeout=200", *args)

    assert_one_line_error(result, 1, "locked", "busy_timeout")
    assert migrated("list", "--json").stdout == listing.stdout
    assert dump(migrated.db) == before


def test_a_locked_log_can_still_be_read(migrated: SagaCli) -> None:
    assert migrated("book", *BOOKING).code == 0

    with write_locked(migrated.db):
        result = run_saga(f"sqlite:///{migrated.db}?busy_timeout=200", "list", "--json")

    assert result.code == 0, result
    assert len(result.json()) == 1


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(("list", "--json"), id="list"),
        pytest.param(("book", *BOOKING), id="book"),
        pytest.param(("resume", "--all"), id="resume-all"),
        pytest.param(("db", "upgrade"), id="db-upgrade"),
        pytest.param(("db", "status"), id="db-status"),
    ],
)
def test_a_log_with_a_newer_schema_is_refused_with_exit_2_and_left_alone(
    migrated: SagaCli, args: tuple[str, ...]
) -> None:
    assert migrated("book", *BOOKING).code == 0
    execute(
        migrated.db,
        "UPDATE alembic_version SET version_num='9999' WHERE version_num=?",
        (HEAD_REVISION,),
    )
    before = dump(migrated.db)

    result = migrated(*args)

    assert_one_line_error(result, 2, "newer")
    assert query(migrated.db, "SELECT version_num FROM alembic_version ORDER BY 1") == [
        ("9999",),
        (DEMO_HEAD,),
    ]
    assert dump(migrated.db) == before


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(("list", "--json"), id="list"),
        pytest.param(("book", *BOOKING), id="book"),
        pytest.param(("db", "upgrade"), id="db-upgrade"),
        pytest.param(("db", "status"), id="db-status"),
    ],
)
def test_a_log_whose_demo_tables_a_newer_saga_migrated_is_refused_with_exit_2(
    migrated: SagaCli, args: tuple[str, ...]
) -> None:
    assert migrated("book", *BOOKING).code == 0
    execute(
        migrated.db,
        "UPDATE alembic_version SET version_num='demo_9999' WHERE version_num=?",
        (DEMO_HEAD,),
    )
    before = dump(migrated.db)

    result = migrated(*args)

    assert_one_line_error(result, 2, "newer", "demo_9999")
    assert dump(migrated.db) == before


def test_a_deleted_working_directory_is_a_one_line_error(tmp_path: Path) -> None:
    gone = tmp_path / "gone"
    gone.mkdir()
    script = (
        "import os, subprocess, sys\n"
        f"os.chdir({str(gone)!r}); os.rmdir({str(gone)!r})\n"
        f"done = subprocess.run([{saga_executable()!r}, 'list'], capture_output=True, text=True)\n"
        "sys.stdout.write(str(done.returncode) + '\\n' + done.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=cli_env()
    )
    code, _, stderr = done.stdout.partition("\n")
    assert code == "1", done
    assert stderr.strip() == "Error: saga.db: unable to open database file"
