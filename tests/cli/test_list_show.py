"""`saga list` and `saga show` on a log holding every kind of execution."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import SagaCli
from support import BOOKING, TRAVEL_STEPS, query

SUMMARY_KEYS = {"id", "saga", "status", "step", "interrupted", "created_at", "updated_at"}


@dataclass(frozen=True)
class Gallery:
    """A log with, oldest first: completed, compensated, completed, interrupted."""

    saga: SagaCli
    completed: tuple[str, str]
    compensated: str
    interrupted: str

    @property
    def oldest_first(self) -> list[str]:
        return [self.completed[0], self.compensated, self.completed[1], self.interrupted]


@pytest.fixture(scope="module")
def gallery(tmp_path_factory: pytest.TempPathFactory, migrated_template: Path) -> Gallery:
    db = tmp_path_factory.mktemp("gallery") / "saga.db"
    shutil.copyfile(migrated_template, db)
    saga = SagaCli(db)
    first = saga("book", *BOOKING, "--json")
    failed = saga("book", *BOOKING, "--fail", "car", "--json")
    second = saga("book", "--flight", "FL200", "--hotel", "PLAZA", "--json")
    crashed = saga("book", *BOOKING, "--crash-at", "car:before")
    assert (first.code, failed.code, second.code, crashed.code) == (0, 3, 0, -9)
    known = {first.json()["id"], failed.json()["id"], second.json()["id"]}
    (interrupted,) = {str(row[0]) for row in query(db, "SELECT id FROM saga_execution")} - known
    return Gallery(
        saga, (first.json()["id"], second.json()["id"]), failed.json()["id"], interrupted
    )


def unique_prefix(execution_id: str, others: list[str], shortest: int = 4) -> str:
    for length in range(shortest, len(execution_id)):
        prefix = execution_id[:length]
        if not any(o != execution_id and o.startswith(prefix) for o in others):
            return prefix
    return execution_id


def test_list_json_is_an_array_of_summaries_newest_first(gallery: Gallery) -> None:
    result = gallery.saga("list", "--json")

    assert result.code == 0, result
    rows = result.json()
    assert isinstance(rows, list)
    assert [row["id"] for row in rows] == gallery.oldest_first[::-1]
    for row in rows:
        assert SUMMARY_KEYS <= set(row), row
        assert row["saga"] == "travel-booking"
    created = [row["created_at"] for row in rows]
    assert created == sorted(created, reverse=True)


def test_list_json_marks_only_the_crashed_execution_interrupted(gallery: Gallery) -> None:
    rows = {row["id"]: row for row in gallery.saga("list", "--json").json()}

    assert {i for i, row in rows.items() if row["interrupted"]} == {gallery.interrupted}
    crashed = rows[gallery.interrupted]
    assert (crashed["status"], crashed["step"]) == ("running", "car")


def test_list_table_marks_the_interrupted_execution(gallery: Gallery) -> None:
    result = gallery.saga("list")

    assert result.code == 0, result
    assert result.stdout.count("(interrupted)") == 1
    marked = [line for line in result.stdout.splitlines() if "(interrupted)" in line]
    assert gallery.interrupted[:12] in marked[0]
    for execution_id in gallery.oldest_first:
        assert execution_id[:12] in result.stdout


@pytest.mark.parametrize(
    ("status", "expected"),
    [("completed", 2), ("compensated", 1), ("running", 1), ("stuck", 0), ("pending", 0)],
)
def test_list_status_shows_only_that_status(gallery: Gallery, status: str, expected: int) -> None:
    result = gallery.saga("list", "--status", status, "--json")

    assert result.code == 0, result
    rows = result.json()
    assert len(rows) == expected
    assert all(row["status"] == status for row in rows)


def test_list_status_completed_keeps_newest_first(gallery: Gallery) -> None:
    rows = gallery.saga("list", "--status", "completed", "--json").json()

    assert [row["id"] for row in rows] == list(gallery.completed[::-1])


def test_list_limit_keeps_the_newest_n(gallery: Gallery) -> None:
    result = gallery.saga("list", "--limit", "2", "--json")

    assert result.code == 0, result
    assert [row["id"] for row in result.json()] == gallery.oldest_first[::-1][:2]


def test_list_on_an_empty_log_says_nothing_matches(migrated: SagaCli) -> None:
    assert migrated("list", "--json").json() == []
    result = migrated("list")
    assert result.code == 0, result
    assert "No executions match" in result.stdout


def test_show_accepts_a_unique_prefix_and_prints_json(gallery: Gallery) -> None:
    prefix = unique_prefix(gallery.compensated, gallery.oldest_first)
    result = gallery.saga("show", prefix, "--json")

    assert result.code == 0, result
    body = result.json()
    assert {"id", "saga", "status", "payload", "steps", "events"} <= set(body)
    assert body["id"] == gallery.compensated
    assert body["status"] == "compensated"
    assert body["interrupted"] is False
    assert body["payload"] == {
        "flight": "FL100",
        "hotel": "GRAND",
        "car": "ECONOMY",
        "customer": "guest",
        "fail": ["car"],
    }
    assert [step["name"] for step in body["steps"]] == TRAVEL_STEPS
    for step in body["steps"]:
        assert {"name", "status", "attempts"} <= set(step)
    assert [s["attempts"] for s in body["steps"]] == [1, 1, 1, 0, 0, 0]
    for event in body["events"]:
        assert {"seq", "step", "type", "at", "detail"} <= set(event)
    assert [e["seq"] for e in body["events"]] == list(range(1, len(body["events"]) + 1))
    assert body["events"][0]["type"] == "saga_started"
    failed = [e for e in body["events"] if e["type"] == "step_failed"]
    assert failed[0]["detail"]["error"] == "car declined the booking (--fail)"


def test_show_json_of_a_crashed_execution_is_interrupted_with_car_running(
    gallery: Gallery,
) -> None:
    body = gallery.saga("show", gallery.interrupted, "--json").json()

    assert body["interrupted"] is True
    assert body["status"] == "running"
    assert [(s["name"], s["status"]) for s in body["steps"]] == [
        ("flight", "succeeded"),
        ("hotel", "succeeded"),
        ("car", "running"),
        ("payment", "not run"),
        ("confirm", "not run"),
        ("notify", "not run"),
    ]
    assert (body["events"][-1]["type"], body["events"][-1]["step"]) == ("step_started", "car")


def test_show_table_prints_steps_and_transition_log(gallery: Gallery) -> None:
    prefix = unique_prefix(gallery.interrupted, gallery.oldest_first)
    result = gallery.saga("show", prefix.upper())

    assert result.code == 0, result
    assert gallery.interrupted in result.stdout
    assert "(interrupted)" in result.stdout
    assert "forward" in result.stdout
    assert "Transition log" in result.stdout
    assert "step_started" in result.stdout
