"""saga_cli.testing finds non-idempotent steps, and passes idempotent ones, by real SIGKILLs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from saga_cli.testing import check_crash_points

from . import sample_sagas

SAMPLES = Path(sample_sagas.__file__).resolve()


@pytest.fixture
def effects_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    db = tmp_path / "effects.db"
    monkeypatch.setenv("SAGA_KIT_DB", str(db))
    return db


@pytest.mark.slow
def test_an_idempotent_saga_passes_every_crash_point(effects_db: Path, tmp_path: Path) -> None:
    report = check_crash_points(
        f"{SAMPLES}:careful",
        payload={},
        effects=sample_sagas.effects,
        workdir=tmp_path / "logs",
        env={"SAGA_KIT_DB": os.environ["SAGA_KIT_DB"]},
    )
    assert report.ok, report.summary()
    # before/after each of the 5 steps, then each of the 3 compensations
    assert len(report.scenarios) == 5 * 2 + 3 * 2
    assert {s.status for s in report.scenarios} == {"completed", "compensated"}
    compensated = [s for s in report.scenarios if s.status == "compensated"]
    assert {s.point for s in compensated} == {
        f"compensate-{step}:{when}"
        for step in ("reserve", "left", "right")
        for when in ("before", "after")
    }


@pytest.mark.slow
def test_async_steps_and_compensations_take_effect_once_at_every_crash_point(
    effects_db: Path, tmp_path: Path
) -> None:
    report = check_crash_points(
        f"{SAMPLES}:awaited",
        payload={},
        effects=sample_sagas.effects,
        workdir=tmp_path / "logs",
        env={"SAGA_KIT_DB": os.environ["SAGA_KIT_DB"]},
    )
    assert report.ok, report.summary()
    assert len(report.scenarios) == 5 * 2 + 3 * 2
    assert {s.status for s in report.scenarios} == {"completed", "compensated"}


def test_a_step_that_repeats_its_effect_is_reported(effects_db: Path, tmp_path: Path) -> None:
    prepared: list[str] = []
    report = check_crash_points(
        f"{SAMPLES}:careless",
        payload={},
        effects=sample_sagas.effects,
        workdir=tmp_path / "logs",
        env={"SAGA_KIT_DB": os.environ["SAGA_KIT_DB"]},
        points=["charge:before", "charge:after", "reserve:after"],
        setup=lambda: prepared.append("ready"),
    )
    assert prepared == ["ready"] * 3  # once before each scenario
    assert not report.ok
    by_point = {s.point: s for s in report.scenarios}
    # killed after charging but before the log knew: the resume charges again
    assert by_point["charge:after"].problems == ["charge took effect 2 times (not idempotent)"]
    # killed before the call: the resume makes the one and only charge
    assert by_point["charge:before"].problems == []
    assert by_point["reserve:after"].problems == []
    assert "charge:after" in report.summary()


def test_a_lost_effect_is_reported(effects_db: Path, tmp_path: Path) -> None:
    def forgetful(execution_id: str) -> dict[str, int]:
        counts = sample_sagas.effects(execution_id)
        return {k: v for k, v in counts.items() if not k.endswith(":commit")}

    report = check_crash_points(
        f"{SAMPLES}:careful",
        payload={},
        effects=forgetful,
        workdir=tmp_path / "logs",
        env={"SAGA_KIT_DB": os.environ["SAGA_KIT_DB"]},
        points=["announce:before"],
    )
    (scenario,) = report.scenarios
    assert scenario.status == "completed"
    assert scenario.problems == ["commit never took effect but the log says it succeeded"]
