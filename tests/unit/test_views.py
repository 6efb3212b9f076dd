"""Read models derived from the event log alone, and the lease rules they use."""

from __future__ import annotations

import os
import socket
from typing import Any

import pytest

from saga_cli import lease
from saga_cli.domain import Event, EventType, SagaStatus
from saga_cli.store import ExecutionRecord
from saga_cli.views import is_interrupted, step_views, summary_json

E = EventType


def ev(
    seq: int, kind: EventType, step: str | None = None, attempt: int = 0, **detail: Any
) -> Event:
    return Event(seq, kind, step, attempt, detail or None, at=float(seq))


def test_steps_never_started_show_as_not_run_in_definition_order() -> None:
    views = step_views([ev(1, E.SAGA_STARTED)], ["flight", "hotel"])
    assert [(v.name, v.status, v.attempts, v.duration) for v in views] == [
        ("flight", "not run", 0, None),
        ("hotel", "not run", 0, None),
    ]


def test_step_summary_follows_retries_and_compensation() -> None:
    events = [
        ev(1, E.SAGA_STARTED),
        ev(2, E.STEP_STARTED, "flight", 1),
        ev(3, E.STEP_SUCCEEDED, "flight", 1),
        ev(4, E.STEP_STARTED, "hotel", 1),
        ev(5, E.STEP_FAILED, "hotel", 1, error="timeout", retry_at=9.0),
        ev(6, E.STEP_STARTED, "hotel", 2),
        ev(7, E.STEP_FAILED, "hotel", 2, error="no rooms"),
        ev(8, E.COMPENSATION_STARTED, "flight", 1),
        ev(9, E.COMPENSATION_FAILED, "flight", 1, error="down", retry_at=12.0),
    ]
    flight, hotel, car = step_views(events, ["flight", "hotel", "car"])
    assert (hotel.status, hotel.attempts, hotel.error) == ("failed", 2, "no rooms")
    assert hotel.duration == 3.0
    assert (flight.status, flight.attempts, flight.compensation_attempts) == (
        "compensation retrying",
        1,
        1,
    )
    assert flight.error == "down"
    assert car.status == "not run"
    assert step_views(events[:5], ["flight", "hotel"])[1].status == "retrying"


def test_steps_missing_from_the_definition_are_still_shown() -> None:
    views = step_views([ev(1, E.STEP_STARTED, "legacy", 1)], ["flight"])
    assert [(v.name, v.status) for v in views] == [("flight", "not run"), ("legacy", "running")]


def record(status: SagaStatus, owner: str | None, lease_until: float | None) -> ExecutionRecord:
    return ExecutionRecord(
        id="a" * 32,
        saga="trip",
        payload="{}",
        status=status,
        step=None,
        created_at=1.0,
        updated_at=2.0,
        owner=owner,
        lease_expires_at=lease_until,
        version=3,
    )


ME = lease.current_owner()


@pytest.mark.parametrize(
    ("status", "owner", "lease_until", "expected"),
    [
        pytest.param(SagaStatus.RUNNING, None, None, True, id="running-unowned"),
        pytest.param(SagaStatus.RUNNING, ME, 200.0, False, id="running-live-lease"),
        pytest.param(SagaStatus.RUNNING, ME, 50.0, True, id="running-expired-lease"),
        pytest.param(SagaStatus.COMPENSATING, "otherhost:1:1", 200.0, False, id="other-host"),
        pytest.param(SagaStatus.COMPLETED, None, None, False, id="completed"),
        pytest.param(SagaStatus.COMPENSATED, None, None, False, id="compensated"),
        pytest.param(SagaStatus.STUCK, None, None, False, id="stuck-waits-for-an-operator"),
    ],
)
def test_interrupted_means_unfinished_with_no_live_owner(
    status: SagaStatus, owner: str | None, lease_until: float | None, expected: bool
) -> None:
    assert is_interrupted(record(status, owner, lease_until), now=100.0) is expected


def test_owner_ids_identify_host_pid_and_start_time() -> None:
    host, pid, start = ME.split(":")
    assert (host, int(pid)) == (socket.gethostname(), os.getpid())
    assert start.isdigit()
    assert not lease.owner_is_dead(ME)
    # same pid, different start time: the pid was recycled, the owner is gone
    assert lease.owner_is_dead(f"{host}:{pid}:{int(start) + 1}")
    # another host's processes cannot be seen, so they are presumed alive
    assert not lease.owner_is_dead("otherhost:1:1")


def test_summary_json_has_the_documented_keys() -> None:
    summary = summary_json(record(SagaStatus.RUNNING, None, None), True)
    assert summary == {
        "id": "a" * 32,
        "saga": "trip",
        "status": "running",
        "step": None,
        "interrupted": True,
        "created_at": 1.0,
        "updated_at": 2.0,
    }
