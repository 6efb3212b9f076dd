"""Helpers the test files share (the fixtures are in conftest.py).

The travel demo's booking and what the tests expect of it; running `saga` with
any --db value, and the CLI's contracts for errors and consistency; loading an
example saga's file; reading and writing a SQLite saga log behind the CLI's
back; the schema as SQLAlchemy sees it; waiting for something to happen. Test
files import it as `support`: pytest puts tests/ on sys.path, as it does for
`conftest`.
"""

from __future__ import annotations

import importlib.util
import re
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import pytest
from conftest import CliResult, SagaCli, cli_env, saga_executable

from saga_cli.domain import Event, EventType, SagaStatus
from saga_cli.store import ExecutionRecord, SagaStore

T = TypeVar("T")
HEX_ID = re.compile(r"\b[0-9a-f]{32}\b")

# -- the travel demo -------------------------------------------------------------------

# The services a booking reserves with, in order.
SERVICES = ("flight", "hotel", "car")
# `saga book` options for a trip with room to spare: the booking completes.
BOOKING = ("--flight", "FL100", "--hotel", "GRAND", "--car", "ECONOMY")
# The travel booking's steps, in order; payment is the pivot.
TRAVEL_STEPS = ["flight", "hotel", "car", "payment", "confirm", "notify"]
# What the migrations put in each service's catalogue: resource -> capacity.
CATALOGUE = {
    "flight": {"FL100": 8, "FL200": 8, "FL300": 6},
    "hotel": {"GRAND": 6, "PLAZA": 6, "HARBOUR": 4},
    "car": {"ECONOMY": 3, "COMPACT": 2, "SUV": 1},
}
# To reach a compensation's crash points a booking must fail after its step. By
# step: the failure to inject (`--fail car` sends the saga back through the
# hotel's and flight's compensations, a declined payment, the pivot, through the
# car's too), and the compensations that then succeed, in order.
FAILURE_FOR = {
    "car": ("--fail", "payment"),
    "hotel": ("--fail", "car"),
    "flight": ("--fail", "car"),
}
COMPENSATED_AFTER = {
    "car": ["car", "hotel", "flight"],
    "hotel": ["hotel", "flight"],
    "flight": ["hotel", "flight"],
}

# The saga log's own tables, as the main line of migrations makes them.
LOG_TABLES = [
    "saga_execution",
    "saga_event",
    "saga_definition",
    "saga_key_lock",
    "saga_worker",
    "saga_alert",
]

# -- the CLI ---------------------------------------------------------------------------


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


def invoke_saga(db: Path | str, *args: str, stdin: str | None = None) -> CliResult:
    """`saga --db DB ARGS…` run in this process (Typer's CliRunner): fast enough to run hundreds.

    An exception that escaped the command (a traceback for a user) fails the
    test at once, with its traceback; a clean exit gives its code and output.
    """
    from typer.testing import CliRunner

    from saga_cli.cli import app

    result = CliRunner().invoke(app, ["--db", str(db), *args], input=stdin)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"saga {' '.join(args)!r} raised") from result.exception
    return CliResult(result.exit_code, result.stdout, result.stderr)


def run_python(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run this interpreter with `args` in directory `cwd`, in the CLI's test environment."""
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        env=cli_env(),
        cwd=cwd,
        timeout=60,
    )


def assert_one_line_error(result: CliResult, code: int, *fragments: str) -> None:
    """The command failed with `code` and exactly one `Error: …` line on stderr."""
    assert result.code == code, result
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], result.stderr


def show_json(saga: SagaCli, execution_id: str) -> dict[str, Any]:
    """`saga show ID --json`, which must succeed."""
    shown = saga("show", execution_id, "--json")
    assert shown.code == 0, shown.stderr
    data: dict[str, Any] = shown.json()
    return data


def assert_consistent(saga: SagaCli) -> None:
    """`saga check` finds the log and the services consistent."""
    check = saga("check", "--json")
    assert check.code == 0 and check.json()["consistent"], check.stdout


# -- the example sagas in examples/ ----------------------------------------------------


def load_example(path: Path) -> ModuleType:
    """Import an example file as a module of this process, to call its code directly."""
    spec = importlib.util.spec_from_file_location(f"{path.stem}_under_test", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- a SQLite saga log, read and written directly --------------------------------------


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


# -- the schema, as SQLAlchemy's inspector reports it ----------------------------------


def table_columns(inspector: Any, table: str) -> dict[str, tuple[type, int | None, bool]]:
    """Column -> (Python type, length limit, nullable): VARCHAR and TEXT count as the same."""
    return {
        c["name"]: (c["type"].python_type, getattr(c["type"], "length", None), bool(c["nullable"]))
        for c in inspector.get_columns(table)
    }


def table_indexes(inspector: Any, table: str) -> dict[str, tuple[tuple[str, ...], bool]]:
    """Index -> (its columns, whether it is unique)."""
    return {
        i["name"]: (tuple(i["column_names"]), bool(i["unique"]))
        for i in inspector.get_indexes(table)
    }


def table_foreign_keys(
    inspector: Any, table: str
) -> list[tuple[tuple[str, ...], str, tuple[str, ...]]]:
    """(columns, referred table, referred columns) of each foreign key, sorted."""
    return sorted(
        (tuple(fk["constrained_columns"]), fk["referred_table"], tuple(fk["referred_columns"]))
        for fk in inspector.get_foreign_keys(table)
    )


# -- the log through the store ----------------------------------------------------------


def make_execution(
    store: SagaStore,
    execution_id: str,
    *,
    status: SagaStatus = SagaStatus.PENDING,
    created_at: float = 100.0,
    owner: str | None = None,
    lease_expires_at: float | None = None,
    saga: str = "trip",
) -> ExecutionRecord:
    """Create one execution through `store` (any backend), with a started step unless pending."""
    record = ExecutionRecord(
        id=execution_id,
        saga=saga,
        payload="{}",
        status=status,
        step=None,
        created_at=created_at,
        updated_at=created_at,
        owner=owner,
        lease_expires_at=lease_expires_at,
        version=1,
    )
    events = [Event(1, EventType.SAGA_STARTED, at=created_at)]
    if status is not SagaStatus.PENDING:
        events.append(Event(2, EventType.STEP_STARTED, "s0", 1, at=created_at))
    store.create(record, events)
    return record


# A process of this host that is gone: pid 2**22 + 1 is above Linux's pid_max.
DEAD_PID = 4194305


def dead_owner() -> str:
    """An owner id of this host whose process does not run."""
    return f"{socket.gethostname()}:{DEAD_PID}:1"


# -- HTTP ------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def http_get(url: str, timeout: float = 10) -> tuple[int, str] | None:
    """The status and body of GET `url` (an error status too), or None if nothing answers."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


# -- waiting ---------------------------------------------------------------------------


def wait_for(condition: Callable[[], T], what: str, timeout: float = 60) -> T:
    """Poll `condition` until it returns something truthy (a failsafe timeout, not a limit)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"gave up after {timeout:.0f} s waiting for {what}")
        time.sleep(0.005)
