"""Helpers for the CLI tests: running `saga` with any --db value, and reading the log."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import uuid
from contextlib import closing
from pathlib import Path

from conftest import CliResult, cli_env, saga_executable

HEX_ID = re.compile(r"\b[0-9a-f]{32}\b")
BOOKING = ("--flight", "FL100", "--hotel", "GRAND", "--car", "ECONOMY")


def run_saga(db: str, *args: str, timeout: float = 120) -> CliResult:
    """Run the installed `saga --db DB ARGS…`, with DB passed verbatim (e.g. a URL)."""
    done = subprocess.run(
        [saga_executable(), "--db", db, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=cli_env(),
        stdin=subprocess.DEVNULL,
    )
    return CliResult(done.returncode, done.stdout, done.stderr)


def assert_one_line_error(result: CliResult, code: int, *fragments: str) -> None:
    """The command failed with `code` and exactly one `Error: …` line on stderr."""
    assert result.code == code, result
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], result.stderr


def query(db: Path, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    """Rows of one read from the log, on a short-lived connection."""
    with closing(sqlite3.connect(db)) as connection:
        return list(connection.execute(sql, params))


def execute(db: Path, sql: str, params: tuple[object, ...] = ()) -> None:
    """One committed write to the log, as an operator (or a bug) would make it."""
    with closing(sqlite3.connect(db)) as connection, connection:
        connection.execute(sql, params)


def dump(db: Path) -> list[str]:
    """Every row of every table, as SQL, to compare a log before and after a command."""
    with closing(sqlite3.connect(db)) as connection:
        return list(connection.iterdump())


def newest_execution_id(db: Path) -> str:
    """The id of the newest execution in the log."""
    rows = query(db, "SELECT id FROM saga_execution ORDER BY created_at DESC, id DESC LIMIT 1")
    assert rows, "the log holds no execution"
    return str(rows[0][0])


def insert_execution(
    db: Path,
    status: str,
    created_at: float,
    *,
    updated_at: float | None = None,
    saga: str = "travel-booking",
    owner: str | None = None,
    lease_expires_at: float | None = None,
    execution_id: str | None = None,
) -> str:
    """Write one execution and its first two events straight into the log; returns its id."""
    execution_id = execution_id or uuid.uuid4().hex
    updated = created_at if updated_at is None else updated_at
    with closing(sqlite3.connect(db)) as connection, connection:
        connection.execute(
            "INSERT INTO saga_execution (id, saga, payload, status, step, created_at, updated_at,"
            " owner, lease_expires_at, version) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (
                execution_id,
                saga,
                "{}",
                status,
                "flight",
                created_at,
                updated,
                owner,
                lease_expires_at,
                2,
            ),
        )
        connection.executemany(
            "INSERT INTO saga_event (saga_id, seq, step, type, attempt, detail, at)"
            " VALUES (?,?,?,?,?,?,?)",
            [
                (execution_id, 1, None, "saga_started", 0, None, created_at),
                (execution_id, 2, "flight", "step_started", 1, None, created_at),
            ],
        )
    return execution_id
