"""Pairing outcomes with their own starts, and laying out the two paths of an execution."""

from __future__ import annotations

from typing import Any

import pytest

from saga_cli.domain import Event, EventType
from saga_cli.stats import quantile
from saga_cli.timeline import COMPENSATION, FORWARD, build, pair_attempts


def events(*rows: tuple[str | None, EventType, int, float, dict[str, Any] | None]) -> list[Event]:
    return [
        Event(seq=n, type=kind, step=step, attempt=attempt, at=at, detail=detail)
        for n, (step, kind, attempt, at, detail) in enumerate(rows, start=1)
    ]


S, OK, KO = EventType.STEP_STARTED, EventType.STEP_SUCCEEDED, EventType.STEP_FAILED
CS, COK, CKO = (
    EventType.COMPENSATION_STARTED,
    EventType.COMPENSATION_SUCCEEDED,
    EventType.COMPENSATION_FAILED,
)


def test_parallel_steps_pair_each_outcome_with_its_own_start() -> None:
    # hotel and car start together; car answers first, hotel later.
    log = events(
        (None, EventType.SAGA_STARTED, 0, 0.0, None),
        ("hotel", S, 1, 1.0, None),
        ("car", S, 1, 1.5, None),
        ("car", OK, 1, 2.0, None),
        ("hotel", OK, 1, 5.0, None),
    )

    attempts = {
        a.step: a for a in pair_attempts((e.step, e.type, e.attempt, e.at, None) for e in log)
    }

    assert (attempts["hotel"].started_at, attempts["hotel"].ended_at) == (1.0, 5.0)
    assert (attempts["car"].started_at, attempts["car"].ended_at) == (1.5, 2.0)
    assert attempts["car"].duration == 0.5


def test_retries_pair_by_attempt_number_and_keep_the_last_error() -> None:
    log = events(
        ("hotel", S, 1, 0.0, None),
        ("hotel", KO, 1, 0.1, {"error": "flaky", "retry_at": 0.3}),
        ("hotel", S, 2, 0.3, None),
        ("hotel", OK, 2, 0.7, None),
    )

    (line,) = build(log).forward

    assert [(a.number, a.outcome) for a in line.attempts] == [(1, "retrying"), (2, "succeeded")]
    assert [a.duration for a in line.attempts] == [pytest.approx(0.1), pytest.approx(0.4)]
    assert line.status == "succeeded"
    assert line.duration == 0.7
    assert line.error == "flaky"


def test_compensations_form_their_own_path_in_the_order_they_ran() -> None:
    log = events(
        (None, EventType.SAGA_STARTED, 0, 0.0, None),
        ("flight", S, 1, 0.0, None),
        ("flight", OK, 1, 1.0, None),
        ("hotel", S, 1, 1.0, None),
        ("hotel", OK, 1, 2.0, None),
        ("car", S, 1, 2.0, None),
        ("car", KO, 1, 2.5, {"error": "no cars"}),
        ("hotel", CS, 1, 2.5, None),
        ("hotel", CKO, 1, 2.6, {"error": "down", "retry_at": 2.7}),
        ("hotel", CS, 2, 2.7, None),
        ("hotel", COK, 2, 2.8, None),
        ("flight", CS, 1, 2.8, None),
        ("flight", COK, 1, 3.0, None),
        (None, EventType.SAGA_COMPENSATED, 0, 3.0, None),
    )

    timeline = build(log, ["flight", "hotel", "car", "payment"])

    assert [(line.step, line.status) for line in timeline.forward] == [
        ("flight", "succeeded"),
        ("hotel", "succeeded"),
        ("car", "failed"),
        ("payment", "not run"),
    ]
    assert [(line.step, line.status, len(line.attempts)) for line in timeline.compensation] == [
        ("hotel", "succeeded", 2),
        ("flight", "succeeded", 1),
    ]
    assert {line.phase for line in timeline.forward} == {FORWARD}
    assert {line.phase for line in timeline.compensation} == {COMPENSATION}
    assert timeline.forward[2].error == "no cars"
    assert (timeline.started_at, timeline.ended_at) == (0.0, 3.0)
    assert timeline.as_json()["compensation"][0]["attempts"] == 2


def test_a_step_still_running_has_no_duration() -> None:
    (line,) = build(events(("car", S, 1, 4.0, None))).forward

    assert (line.status, line.duration, line.started_at) == ("running", None, 4.0)


def test_an_outcome_without_a_numbered_start_closes_the_latest_open_attempt() -> None:
    log = events(("car", S, 0, 1.0, None), ("car", OK, 1, 3.0, None))

    (attempt,) = pair_attempts((e.step, e.type, e.attempt, e.at, None) for e in log)

    assert (attempt.started_at, attempt.ended_at, attempt.outcome) == (1.0, 3.0, "succeeded")


def test_quantile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]

    assert [quantile(values, q) for q in (0.5, 0.95, 0.99, 1.0)] == [50.0, 95.0, 99.0, 100.0]
    assert quantile([], 0.5) is None
    assert quantile([7.0], 0.99) == 7.0
