"""A step that outlasts the lease keeps it through the heartbeat; a silent owner loses it."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from support import wait_for

from saga_cli import SagaDefinition, SagaRunner, SagaStatus, Step, StepContext, open_store, registry
from saga_cli.errors import ExecutionBusyError


def _saga(started: threading.Event, release: threading.Event) -> SagaDefinition:
    calls: list[int] = []

    def long_step(ctx: StepContext) -> Any:
        calls.append(1)
        if len(calls) == 1:  # the first caller (the owner) hangs until released
            started.set()
            release.wait(10)
        return "done"

    return SagaDefinition("long", (Step("a", long_step, lambda ctx: None),))


def test_the_heartbeat_keeps_a_long_step_s_lease_so_a_rival_is_refused(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "saga.db"))
    started, release = threading.Event(), threading.Event()
    saga = _saga(started, release)
    owner = SagaRunner(store, registry(saga), lease_seconds=1.0)
    outcome: list[Any] = []
    worker = threading.Thread(
        target=lambda: outcome.append(owner.run(saga, {}, execution_id="a" * 32))
    )
    worker.start()
    assert started.wait(10)
    time.sleep(2.5)  # two and a half lease lengths: only the heartbeat can have kept it
    rival = SagaRunner(store, registry(saga))
    rival.owner = "otherhost:9:9"
    with pytest.raises(ExecutionBusyError):
        rival.resume("a" * 32)
    release.set()
    worker.join(10)
    assert outcome[0].status is SagaStatus.COMPLETED
    record = store.get("a" * 32)
    assert (record.owner, record.lease_expires_at) == (None, None)
    store.close()


def test_without_beats_the_lease_lapses_and_a_rival_takes_over(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "saga.db"))
    started, release = threading.Event(), threading.Event()
    saga = _saga(started, release)
    owner = SagaRunner(store, registry(saga), lease_seconds=0.3)
    owner.leases.start_heartbeat = lambda: None  # type: ignore[method-assign]  # a hung process
    errors: list[BaseException] = []

    def run() -> None:
        try:
            owner.run(saga, {}, execution_id="b" * 32)
        except BaseException as exc:  # the fenced owner's late write is refused
            errors.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    assert started.wait(10)
    wait_for(
        lambda: (store.get("b" * 32).lease_expires_at or 0) < time.time(), "the lease to lapse"
    )
    rival = SagaRunner(store, registry(saga))
    rival.owner = "otherhost:9:9"
    assert rival.resume("b" * 32).status is SagaStatus.COMPLETED
    release.set()  # the hung owner wakes up and tries to record its outcome
    worker.join(10)
    assert [type(e).__name__ for e in errors] == ["LeaseLostError"]
    store.close()
