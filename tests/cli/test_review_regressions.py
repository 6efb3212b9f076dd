"""Bugs found in review, each pinned by the scenario that exposed it."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from conftest import SagaCli
from support import BOOKING


def _tables(path: Path) -> list[str]:
    with closing(sqlite3.connect(path)) as db:
        return [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]


@pytest.mark.parametrize("name", ["app.db?v=2", "w%20e.db", "odd#name.db"])
def test_a_db_path_with_url_characters_names_that_file_and_no_other(
    saga: SagaCli, name: str
) -> None:
    neighbour = saga.db.parent / "app.db"
    with closing(sqlite3.connect(neighbour)) as db, db:
        db.execute("CREATE TABLE users (id INTEGER)")
    odd = SagaCli(saga.db.parent / name)
    booked = odd("book", *BOOKING, "--json")
    assert booked.code == 0, booked.stderr
    assert booked.stderr == ""
    assert "saga_execution" in _tables(saga.db.parent / name)
    assert _tables(neighbour) == ["users"]  # another app's database is left untouched


@pytest.mark.parametrize(
    "args",
    [
        ("list", "--limit", "99999999999999999999"),
        ("inventory", "--restock", "99999999999999999999"),
        ("simulate", "--count", "1", "--capacity", "99999999999999999999"),
        ("simulate", "--count", "99999999999999999999"),
    ],
)
def test_huge_numbers_are_refused_without_a_traceback(saga: SagaCli, args: tuple[str, ...]) -> None:
    refused = saga(*args)
    assert refused.code == 2
    assert "Traceback" not in refused.stderr and "Error" in refused.stderr


def test_book_json_results_is_an_object_even_when_nothing_succeeded(saga: SagaCli) -> None:
    booked = saga("book", "--flight", "FL300", "--hotel", "HARBOUR", "--fail", "flight", "--json")
    assert booked.code == 3
    assert booked.json()["results"] == {}


def test_text_that_is_not_utf8_is_refused_before_anything_runs(saga: SagaCli) -> None:
    refused = saga("book", "--flight", "FL100", "--hotel", "GRAND", "--customer", "\udcff")
    assert refused.code == 2
    assert refused.stderr.startswith("Error: ") and refused.stderr.count("\n") == 1
    assert saga("list", "--json").json() == []


def test_an_open_breaker_fails_later_bookings_fast_without_leaving_them_stuck(
    saga: SagaCli,
) -> None:
    first = saga("book", *BOOKING, "--fail", "car", "--fail-compensation", "flight:always")
    assert first.code == 4  # five failures in a row: the flight breaker opens
    later = saga("book", "--flight", "FL300", "--hotel", "HARBOUR", "--json")
    assert later.code == 3, later.stderr  # failed fast, nothing to undo: compensated
    assert "circuit open" in later.json()["error"]
    events: list[dict[str, Any]] = saga("show", later.json()["id"], "--json").json()["events"]
    assert not [e for e in events if e["type"] == "compensation_started"]
    assert saga("check", "--json").json()["consistent"] is True


def test_resume_all_reports_each_execution_once(saga: SagaCli) -> None:
    assert saga("inventory", "--restock", "100").code == 0
    assert saga("book", *BOOKING, "--fail", "car", "--crash-at", "car:before").code == -9
    for _ in range(3):
        assert saga("book", *BOOKING, "--crash-at", "notify:before").code == -9
    body = saga("resume", "--all", "--json").json()
    ids = [o["id"] for o in body["outcomes"]]
    assert len(ids) == len(set(ids)) == 4
    assert body["busy"] == []


def test_resolve_is_refused_while_the_pivot_outcome_is_unknown(saga: SagaCli) -> None:
    stuck = saga("book", *BOOKING, "--timeout", "payment", "--json")
    assert stuck.code == 4
    refused = saga("resolve", stuck.json()["id"], "--note", "refunded")
    assert refused.code == 2 and "outcome is unknown" in refused.stderr
    assert saga("resume", stuck.json()["id"]).code == 0
    assert saga("check", "--json").json()["consistent"] is True
