"""`saga db copy`: a whole log, in-flight executions included, SQLite -> PostgreSQL -> SQLite."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import CliResult, SagaCli
from support import BOOKING, assert_one_line_error, run_saga

from saga_cli.errors import StoreError
from saga_cli.store import copy as copy_module
from saga_cli.store.copy import copy_log, table_digests
from saga_cli.store.postgres import libpq_url

SIGKILL = -9


def sqlite_content(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every table's rows, sorted, so two logs compare regardless of insertion order."""
    with closing(sqlite3.connect(path)) as db:
        tables = [
            r[0]
            for r in db.execute(
                "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        return {t: sorted(db.execute(f'SELECT * FROM "{t}"'), key=repr) for t in sorted(tables)}


@pytest.fixture(scope="module")
def busy_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite log with a completed, a compensated and an interrupted (SIGKILLed) booking."""
    path = tmp_path_factory.mktemp("busy") / "source.db"
    assert run_saga(str(path), "book", *BOOKING).code == 0
    assert run_saga(str(path), "book", *BOOKING, "--fail", "car").code == 3
    crashed = run_saga(str(path), "book", *BOOKING, "--crash-at", "hotel:after")
    assert crashed.code == SIGKILL, crashed
    with closing(sqlite3.connect(path)) as db:  # fold the WAL in, so one file is the log
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path


@pytest.fixture
def busy_log(busy_template: Path, tmp_path: Path) -> Path:
    """A copy of the busy log of its own for one test."""
    path = tmp_path / "source.db"
    shutil.copyfile(busy_template, path)
    return path


def test_round_trip_sqlite_to_postgres_to_sqlite_keeps_every_row(
    busy_log: Path, pg_empty_url: str, tmp_path: Path
) -> None:
    there = run_saga(str(busy_log), "db", "copy", "--to", pg_empty_url, "--json")
    assert there.code == 0, there
    moved = {t["table"]: (t["rows"], t["checksum"]) for t in there.json()["tables"]}
    assert moved["saga_execution"][0] == 3
    assert moved["saga_event"][0] > 20
    assert moved == {k: v for k, v in table_digests(str(busy_log)).items()}
    assert table_digests(pg_empty_url) == moved  # the same checksums, computed on PostgreSQL

    back = tmp_path / "back.db"
    result = run_saga(pg_empty_url, "db", "copy", "--to", str(back))
    assert result.code == 0, result
    assert "counts and checksums verified" in result.stdout
    assert sqlite_content(back) == sqlite_content(busy_log)


def test_an_in_flight_execution_copied_to_postgres_resumes_there(
    busy_log: Path, pg_empty_url: str
) -> None:
    assert run_saga(str(busy_log), "db", "copy", "--to", pg_empty_url).code == 0
    with closing(sqlite3.connect(busy_log)) as db:
        (interrupted,) = db.execute(
            "SELECT id FROM saga_execution WHERE status='running'"
        ).fetchone()
    resumed = run_saga(pg_empty_url, "resume", "--all", "--json")
    assert resumed.code == 0, resumed
    assert resumed.json()["resumed"] == 1
    with psycopg.connect(libpq_url(pg_empty_url)) as db:
        statuses = db.execute("SELECT status, COUNT(*) FROM saga_execution GROUP BY 1 ORDER BY 1")
        assert statuses.fetchall() == [("compensated", 1), ("completed", 2)]
        hotel = db.execute("SELECT status FROM hotel_reservation WHERE saga_id=%s", (interrupted,))
        assert hotel.fetchall() == [("confirmed",)]  # reserved once (before the copy), confirmed
    assert run_saga(pg_empty_url, "check").code == 0
    # the source was only read
    with closing(sqlite3.connect(busy_log)) as db:
        assert db.execute(
            "SELECT status FROM saga_execution WHERE id=?", (interrupted,)
        ).fetchone() == ("running",)


def test_a_non_empty_target_is_refused_and_left_alone(busy_log: Path, pg_url: str) -> None:
    assert run_saga(pg_url, "book", *BOOKING).code == 0
    before = table_digests(pg_url)
    result = run_saga(str(busy_log), "db", "copy", "--to", pg_url)
    assert_one_line_error(result, 2, "not empty", "saga_execution has 1 rows")
    assert table_digests(pg_url) == before


def test_copying_a_log_onto_itself_is_refused(busy_log: Path) -> None:
    result = run_saga(str(busy_log), "db", "copy", "--to", str(busy_log))
    assert_one_line_error(result, 2, "its source")


def test_a_failed_verification_rolls_the_target_back(
    busy_log: Path, pg_empty_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = copy_module._Side.rows

    def lossy(self: Any, table: str, columns: Sequence[str]) -> Iterator[Sequence[Any]]:
        rows = original(self, table, columns)
        if self.url == pg_empty_url and table == "saga_event":
            next(rows)  # the target "loses" a row
        return rows

    monkeypatch.setattr(copy_module._Side, "rows", lossy)
    with pytest.raises(StoreError, match="verification of saga_event failed"):
        copy_log(str(busy_log), pg_empty_url)
    monkeypatch.undo()
    assert all(
        rows == 0
        for table, (rows, _sum) in table_digests(pg_empty_url).items()
        if not table.endswith("_resource")
    )


@pytest.mark.parametrize("backend", ["postgres", "sqlite"])
def test_two_copies_into_one_target_started_together_one_wins_the_other_is_refused(
    busy_log: Path, pg_empty_url: str, tmp_path: Path, backend: str
) -> None:
    """The emptiness check runs inside the copy's write transaction (issue #15)."""
    target = pg_empty_url if backend == "postgres" else str(tmp_path / "target.db")
    source = SagaCli(busy_log)
    copies = [source.popen("db", "copy", "--to", target) for _ in range(2)]
    results = [CliResult(p.wait(timeout=120), *p.communicate()) for p in copies]

    codes = sorted(r.code for r in results)
    assert codes == [0, 2], results
    loser = next(r for r in results if r.code == 2)
    assert_one_line_error(loser, 2, "is not empty")
    assert table_digests(target) == table_digests(str(busy_log))


def test_ctrl_c_during_a_copy_says_it_was_rolled_back(
    busy_log: Path, pg_empty_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from saga_cli.cli import app

    real = copy_module._copy_table
    calls = []

    def interrupted(source: Any, target: Any, table: str) -> Any:
        calls.append(table)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(source, target, table)

    monkeypatch.setattr(copy_module, "_copy_table", interrupted)

    result = CliRunner().invoke(app, ["--db", str(busy_log), "db", "copy", "--to", pg_empty_url])

    assert result.exit_code == 130
    assert "the copy was rolled back" in result.output
    assert "saga resume" not in result.output
    assert all(
        rows == 0
        for table, (rows, _) in table_digests(pg_empty_url).items()
        if not table.endswith("_resource")
    )
