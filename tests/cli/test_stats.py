"""`saga stats` on a log of real bookings whose outcomes are known in advance."""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import SagaCli
from prometheus_client.parser import text_string_to_metric_families
from support import BOOKING, TRAVEL_STEPS, assert_one_line_error, execute, query


@dataclass(frozen=True)
class KnownLog:
    """A log of seven real bookings with known outcomes.

    Three completed (one after a retried hotel), two compensated at the car,
    one stuck (the hotel's cancellation always fails), one interrupted at the car.
    """

    saga: SagaCli
    ids: dict[str, list[str]]


@pytest.fixture(scope="module")
def known(tmp_path_factory: pytest.TempPathFactory, migrated_template: Path) -> KnownLog:
    db = tmp_path_factory.mktemp("stats") / "saga.db"
    shutil.copyfile(migrated_template, db)
    saga = SagaCli(db)
    runs = [
        ("completed", saga("book", *BOOKING, "--json")),
        ("completed", saga("book", *BOOKING, "--flaky", "hotel:1", "--json")),
        ("completed", saga("book", *BOOKING, "--json")),
        ("compensated", saga("book", *BOOKING, "--fail", "car", "--json")),
        ("compensated", saga("book", *BOOKING, "--fail", "car", "--json")),
    ]
    # Before the stuck one: its five failed cancellations open the hotel's breaker.
    crashed = saga("book", *BOOKING, "--crash-at", "car:before")
    assert crashed.code == -9, crashed
    runs += [
        (
            "stuck",
            saga(
                "book", *BOOKING, "--fail", "car", "--fail-compensation", "hotel:always", "--json"
            ),
        ),
    ]
    ids: dict[str, list[str]] = {}
    for status, run in runs:
        assert run.json()["status"] == status, run
        ids.setdefault(status, []).append(run.json()["id"])
    known_ids = {i for group in ids.values() for i in group}
    ids["running"] = [str(r[0]) for r in query(db, "SELECT id FROM saga_execution")
                      if r[0] not in known_ids]  # fmt: skip
    return KnownLog(saga, ids)


def nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def test_stats_json_counts_rates_and_in_flight_match_the_known_outcomes(known: KnownLog) -> None:
    result = known.saga("stats", "--json")

    assert result.code == 0, result
    body = result.json()
    assert body["executions"] == 7
    assert body["statuses"] == {
        "pending": 0,
        "running": 1,
        "compensating": 0,
        "completed": 3,
        "compensated": 2,
        "stuck": 1,
    }
    assert body["completion_rate"] == pytest.approx(3 / 6)
    assert body["compensation_rate"] == pytest.approx(2 / 6)
    assert body["stuck_rate"] == pytest.approx(1 / 6)
    assert body["stuck"] == 1
    assert body["in_flight"] == {"pending": 0, "running": 1, "compensating": 0, "interrupted": 1}
    assert body["throughput_per_second"] == pytest.approx(6 / 3600)
    assert body["sampled"] == 7
    assert sum(body["started_per_slice"]) == 7
    assert sum(b["count"] for b in body["saga_duration_histogram"]) == 6


def test_stats_json_step_failure_rates_count_every_attempt(known: KnownLog) -> None:
    steps = {s["step"]: s for s in known.saga("stats", "--json").json()["steps"]}

    assert set(steps) == set(TRAVEL_STEPS)
    got = {
        name: (s["attempts"], s["failures"], s["compensations"], s["compensation_failures"])
        for name, s in steps.items()
    }
    assert got == {
        "flight": (7, 0, 2, 0),
        "hotel": (8, 1, 7, 5),  # one retried attempt; 2 cancellations + 5 that failed
        "car": (7, 3, 0, 0),  # the crashed execution's car attempt has no outcome
        "payment": (3, 0, 0, 0),
        "confirm": (3, 0, 0, 0),
        "notify": (3, 0, 0, 0),
    }
    assert steps["car"]["failure_rate"] == pytest.approx(3 / 6)
    assert steps["hotel"]["failure_rate"] == pytest.approx(1 / 8)
    assert steps["flight"]["failure_rate"] == 0


def test_stats_step_percentiles_are_those_of_the_timelines(known: KnownLog) -> None:
    steps = {s["step"]: s for s in known.saga("stats", "--json").json()["steps"]}
    flight: list[float] = []
    for ids in known.ids.values():
        for execution_id in ids:
            shown = known.saga("show", execution_id, "--json").json()
            forward = {line["step"]: line for line in shown["timeline"]["forward"]}
            flight.append(forward["flight"]["duration"])

    for q, key in ((0.5, "p50"), (0.95, "p95"), (0.99, "p99")):
        assert steps["flight"]["duration"][key] == pytest.approx(nearest_rank(flight, q))
    durations = steps["hotel"]["duration"]
    assert 0 < durations["p50"] <= durations["p95"] <= durations["p99"]


def test_stats_window_leaves_out_older_executions(known: KnownLog, tmp_path: Path) -> None:
    db = tmp_path / "older.db"
    shutil.copyfile(known.saga.db, db)
    old = known.ids["completed"][0]
    execute(db, "UPDATE saga_execution SET created_at = created_at - 7200 WHERE id=?", (old,))
    saga = SagaCli(db)

    hour = saga("stats", "--since", "1h", "--json").json()
    day = saga("stats", "--since", "1d", "--json").json()

    assert (hour["executions"], hour["statuses"]["completed"]) == (6, 2)
    assert (day["executions"], day["statuses"]["completed"]) == (7, 3)
    assert hour["stuck"] == day["stuck"] == 1  # stuck now: the whole log


def test_stats_saga_filter_counts_only_that_saga(known: KnownLog) -> None:
    same = known.saga("stats", "--saga", "travel-booking", "--json").json()
    other = known.saga("stats", "--saga", "no-such-saga", "--json").json()

    assert same["executions"] == 7
    assert same["saga"] == "travel-booking"
    assert other["executions"] == 0
    assert other["completion_rate"] is None
    assert other["steps"] == []
    assert other["in_flight"]["running"] == 0


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def test_stats_prometheus_output_parses_back_to_the_same_figures(known: KnownLog) -> None:
    result = known.saga("stats", "--format", "prometheus")

    assert result.code == 0, result
    types = {f.name: f.type for f in text_string_to_metric_families(result.stdout)}
    values = samples(result.stdout)

    def value(name: str, **labels: str) -> float:
        return values[(name, frozenset(labels.items()))]

    assert types["saga_executions"] == "gauge"
    assert types["saga_step_duration_seconds"] == "summary"
    assert value("saga_executions", status="completed") == 3
    assert value("saga_executions", status="stuck") == 1
    assert value("saga_completion_ratio") == pytest.approx(0.5)
    assert value("saga_compensation_ratio") == pytest.approx(1 / 3)
    assert value("saga_stuck") == 1
    assert value("saga_in_flight", state="interrupted") == 1
    assert value("saga_step_failures", step="car") == 3
    assert value("saga_step_failure_ratio", step="car") == pytest.approx(0.5)
    assert value("saga_step_duration_seconds_count", step="flight") == 7
    p50 = value("saga_step_duration_seconds", step="flight", quantile="0.5")
    p99 = value("saga_step_duration_seconds", step="flight", quantile="0.99")
    assert 0 < p50 <= p99
    assert value("saga_duration_seconds_count") == 6


def test_stats_prometheus_with_a_saga_labels_every_sample(known: KnownLog) -> None:
    text = known.saga("stats", "--saga", "travel-booking", "--format", "prometheus").stdout

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            assert sample.labels.get("saga") == "travel-booking", sample


def test_stats_table_shows_rates_steps_and_histogram(known: KnownLog) -> None:
    result = known.saga("stats")

    assert result.code == 0, result
    out = result.stdout
    assert "Sagas created in the last 1h" in out
    assert "completed 50.0%" in out
    assert "compensated 33.3%" in out
    assert "stuck 1" in out
    assert "interrupted 1" in out
    for step in TRAVEL_STEPS:
        assert step in out
    assert "Saga durations" in out
    assert result.stderr == ""


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("--format", "xml"), "--format must be table, json or prometheus"),
        (("--since", "yesterday"), "not a duration"),
        (("--since", "0s"), "more than zero"),
    ],
)
def test_stats_bad_input_is_one_line_and_exit_2(
    known: KnownLog, args: tuple[str, ...], fragment: str
) -> None:
    assert_one_line_error(known.saga("stats", *args), 2, fragment)


def test_stats_on_an_empty_log_has_no_rates(migrated: SagaCli) -> None:
    body: dict[str, Any] = migrated("stats", "--json").json()

    assert body["executions"] == 0
    assert body["completion_rate"] is None
    assert body["saga_duration"] == {"p50": None, "p95": None, "p99": None}
    assert migrated("stats").code == 0
    assert body["until"] == pytest.approx(time.time(), abs=60)
