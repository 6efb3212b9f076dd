"""`saga simulate`: batches, failure injection and reproducibility with --seed."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

from conftest import SagaCli

SIMULATION_KEYS = {"count", "completed", "compensated", "stuck", "interrupted", "seconds"}


def counts(report: dict[str, Any]) -> dict[str, Any]:
    """The report without its timings."""
    return {k: v for k, v in report.items() if k not in ("seconds", "sagas_per_second")}


def test_simulate_json_reports_count_and_outcomes(migrated: SagaCli) -> None:
    result = migrated("simulate", "--count", "7", "--json")

    assert result.code == 0, result
    report = result.json()
    assert SIMULATION_KEYS <= set(report)
    assert report["count"] == 7
    assert report["completed"] + report["compensated"] + report["stuck"] == 7
    assert report["interrupted"] == 0
    assert isinstance(report["seconds"], float) and report["seconds"] > 0
    assert len(migrated("list", "--limit", "100", "--json").json()) == 7


def test_simulate_fail_car_compensates_every_booking(migrated: SagaCli) -> None:
    report = migrated("simulate", "--count", "5", "--fail", "car", "--json").json()

    assert (report["completed"], report["compensated"], report["stuck"]) == (0, 5, 0)
    assert report["failures"] == {"car": 5}
    assert report["capacity_released"] == {"flight": 5, "hotel": 5}
    assert migrated("check", "--json").json()["consistent"] is True


def test_simulate_with_the_same_seed_gives_the_same_counts_on_fresh_logs(
    tmp_path: Path, migrated_template: Path
) -> None:
    reports = []
    for name in ("one.db", "two.db"):
        shutil.copyfile(migrated_template, tmp_path / name)
        result = SagaCli(tmp_path / name)(
            "simulate", "--count", "40", "--fail-rate", "0.3", "--seed", "7", "--json"
        )
        assert result.code == 0, result
        reports.append(counts(result.json()))

    assert reports[0] == reports[1]
    assert sum(reports[0]["failures"].values()) > 0
    assert reports[0]["completed"] > 0


def test_plain_simulate_on_a_fresh_log_completes_some_and_compensates_some(
    saga: SagaCli,
) -> None:
    result = saga("simulate")

    assert result.code == 0, result
    found = dict(re.findall(r"(completed|compensated)\W+(\d+)", result.stdout))
    assert int(found["completed"]) > 0, result.stdout
    assert int(found["compensated"]) > 0, result.stdout
    assert "Simulation: 10 bookings" in result.stdout
