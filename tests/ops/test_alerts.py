"""Alerts: written with the event behind them, in one transaction; delivered at least once."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import threading
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from conftest import SagaCli, cli_env, saga_executable
from support import BOOKING, wait_for

from saga_cli import RetryPolicy, Saga, StepContext
from saga_cli.alerts import AlertSettings, Command, deliver_due
from saga_cli.domain import Event, EventType, SagaStatus
from saga_cli.engine.alerting import AlertPolicy
from saga_cli.errors import LeaseLostError
from saga_cli.orchestrator import Orchestrator
from saga_cli.store import AlertRecord, SagaStore, Transition

from .webhook import Received, alerts_config, free_port, webhook

STUCK_BOOKING = (*BOOKING, "--fail", "car", "--fail-compensation", "hotel:always")


def never_undone() -> Saga:
    """A saga whose second step fails and whose first step's compensation always fails."""
    saga = Saga("never-undone")

    @saga.step(compensation_retry=RetryPolicy(max_attempts=4))
    def charge(ctx: StepContext[Any]) -> str:
        return "charged"

    @charge.compensation
    def refund(ctx: StepContext[Any]) -> None:
        raise RuntimeError("the bank is down")

    @saga.step()
    def ship(ctx: StepContext[Any]) -> None:
        raise RuntimeError("no truck")

    @ship.compensation
    def unship(ctx: StepContext[Any]) -> None:
        return None

    return saga


def events_of(store: SagaStore, execution_id: str, kind: EventType) -> list[Event]:
    return [e for e in store.events(execution_id) if e.type is kind]


def test_a_stuck_execution_has_its_alerts_with_the_events_behind_them(store: SagaStore) -> None:
    with Orchestrator(store, [never_undone()], alerts=AlertPolicy(compensation_failures=2)) as o:
        outcome = o.run("never-undone", {})
    assert outcome.status is SagaStatus.STUCK
    stuck = events_of(store, outcome.execution_id, EventType.SAGA_STUCK)[0]
    second = [
        e
        for e in events_of(store, outcome.execution_id, EventType.COMPENSATION_FAILED)
        if e.attempt == 2
    ][0]

    alerts = {a.kind: a for a in store.alerts()}

    assert set(alerts) == {"stuck", "compensation_failed"}
    assert alerts["stuck"].id == f"{outcome.execution_id}:{stuck.seq}"
    assert alerts["stuck"].created_at == stuck.at
    assert alerts["stuck"].step == "charge" and "the bank is down" in (alerts["stuck"].error or "")
    assert alerts["compensation_failed"].id == f"{outcome.execution_id}:{second.seq}"
    assert alerts["compensation_failed"].attempt == 2
    assert [a.id for a in store.alerts(pending=True)] == [a.id for a in store.alerts()]


def test_no_policy_writes_no_alert(store: SagaStore) -> None:
    with Orchestrator(store, [never_undone()], alerts=None) as o:
        assert o.run("never-undone", {}).status is SagaStatus.STUCK
    assert store.alerts() == []


def test_an_alert_rides_in_its_write_and_a_refused_write_leaves_none(
    any_store: SagaStore,
) -> None:
    with Orchestrator(any_store, [never_undone()], alerts=None) as o:
        done = o.run("never-undone", {})
    record = any_store.get(done.execution_id)
    seq = len(any_store.events(done.execution_id)) + 1
    event = Event(seq, EventType.SAGA_RESUMED, at=record.updated_at + 1)
    alert = AlertRecord(
        id=f"{record.id}:{seq}",
        execution_id=record.id,
        saga=record.saga,
        kind="stuck",
        step="charge",
        attempt=1,
        error="by hand",
        created_at=event.at,
    )

    def write(version: int) -> Transition:
        return Transition(
            record.id,
            version,
            [event],
            record.status,
            record.step,
            None,
            None,
            event.at,
            alerts=[alert],
        )

    refused = any_store.commit_all([write(record.version + 7)])
    assert isinstance(refused[0], LeaseLostError)
    assert any_store.alerts() == []  # the alert went with its refused write
    assert any_store.commit_all([write(record.version)]) == [record.version + 1]
    assert [a.id for a in any_store.alerts()] == [alert.id]
    assert events_of(any_store, record.id, EventType.SAGA_RESUMED)[-1].seq == seq


def test_a_deadline_missed_is_an_alert(saga: SagaCli) -> None:
    booked = saga("book", *BOOKING, "--slow", "hotel:0.4", "--deadline", "200ms", "--json")
    assert booked.code == 3, booked.stderr
    listed = saga("alerts", "--json")
    assert listed.code == 0, listed.stderr
    (alert,) = listed.json()
    assert alert["kind"] == "deadline" and alert["execution_id"] == booked.json()["id"]
    assert alert["error"] == "the saga's deadline passed" and alert["delivered_at"] is None


def test_deliveries_record_what_each_sink_took_and_retry_the_rest(
    store: SagaStore, tmp_path: Path
) -> None:
    with Orchestrator(store, [never_undone()], alerts=AlertPolicy(compensation_failures=0)) as o:
        o.run("never-undone", {})
    (alert,) = store.alerts()
    got = tmp_path / "got.json"
    good = Command("good", f"cat > {got}")
    bad = Command("bad", "echo nope >&2; exit 3")

    first = deliver_due(store, AlertSettings(sinks=(good, bad), retry=0.001, retry_max=0.001))

    assert first.delivered == [] and "bad: exited with 3: nope" in first.retrying[alert.id]
    message = json.loads(got.read_text())
    assert message["id"] == alert.id and message["execution_id"] == alert.execution_id
    assert message["saga"] == "never-undone" and message["step"] == "charge"
    assert message["show"].endswith(f"show {alert.execution_id}")
    assert "is stuck" in message["text"] and message["show"] in message["text"]
    (saved,) = store.alerts()
    assert saved.delivered_to == ("good",) and saved.attempts == 1 and saved.delivered_at is None
    got.unlink()

    fixed = Command("bad", f"cat > {tmp_path / 'fixed.json'}")
    settings = AlertSettings(sinks=(good, fixed), retry=0.001, retry_max=0.001)
    second = deliver_due(store, settings, now=time.time() + 1)

    assert second.delivered == [alert.id]
    assert not got.exists()  # the sink that took it is not sent it twice
    assert json.loads((tmp_path / "fixed.json").read_text())["id"] == alert.id
    assert store.alerts(pending=True) == []


def test_a_command_sink_gets_the_alert_as_json_on_stdin_through_the_cli(
    saga: SagaCli, tmp_path: Path
) -> None:
    got = tmp_path / "got.jsonl"
    config = tmp_path / "saga.toml"
    config.write_text(f'[[alerts.command]]\ncommand = "cat >> {got}; echo >> {got}"\n')
    assert saga("book", *STUCK_BOOKING).code == 4

    delivered = saga("--config", str(config), "alerts", "deliver", "--json")

    assert delivered.code == 0, delivered.stderr
    ids = {a["id"] for a in saga("alerts", "--json").json()}
    assert set(delivered.json()["delivered"]) == ids and len(ids) == 2  # stuck + 3rd failure
    assert {json.loads(line)["id"] for line in got.read_text().splitlines() if line} == ids
    assert saga("alerts", "--pending", "--json").json() == []


def test_alerts_test_sends_a_sample_to_every_sink(saga: SagaCli, tmp_path: Path) -> None:
    received = Received()
    with webhook(free_port(), received) as url:
        config = alerts_config(tmp_path / "saga.toml", url)
        sent = saga("--config", config, "alerts", "test")
    assert sent.code == 0, sent.stderr
    assert sent.stdout.strip() == "ops: ok"
    ((key, body),) = received.requests
    assert key.startswith("test:") and body["saga"] == "saga-alerts-test" and body["text"]
    assert saga("alerts", "--json").json() == []  # nothing written to the log

    down = saga("--config", config, "alerts", "test")  # the receiver is gone now
    assert down.code == 1 and "ops: failed: unreachable" in down.stdout


def test_delivering_without_a_sink_is_refused_in_one_line(saga: SagaCli) -> None:
    refused = saga("alerts", "deliver")
    assert refused.code == 2
    assert refused.stderr.startswith("Error: no alert sink is configured")
    assert len(refused.stderr.splitlines()) == 1


@pytest.mark.slow
def test_a_sigkill_right_after_the_stuck_transition_still_delivers_the_alert_once(
    saga: SagaCli, tmp_path: Path
) -> None:
    hang = threading.Event()
    received = Received(hang=hang)
    with webhook(free_port(), received) as url:
        config = alerts_config(tmp_path / "saga.toml", url)
        config_text = (
            Path(config).read_text().replace("[alerts]", "[alerts]\ncompensation_failures = 0")
        )
        Path(config).write_text(config_text)
        submitted = saga("book", *BOOKING, "--fail", "car", "--submit")
        assert submitted.code == 0, submitted.stderr
        execution_id = submitted.stdout.strip()
        worker = subprocess.Popen(
            [
                saga_executable(),
                "--db",
                str(saga.db),
                "--config",
                config,
                "worker",
                "--fail-compensation",
                "hotel:always",
                "--poll",
                "0.1",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=cli_env(),
            stdin=subprocess.DEVNULL,
        )
        try:
            # The stuck event is durable and its alert is being sent: kill now.
            wait_for(lambda: received.requests, "the alert's delivery to start")
            os.kill(worker.pid, signal.SIGKILL)
        finally:
            worker.kill()
            worker.wait()
        ((key, body),) = received.requests
        assert key == body["id"] and body["execution_id"] == execution_id
        assert body["kind"] == "stuck" and received.keys() == set()
        with closing(sqlite3.connect(saga.db)) as db:
            ((status,),) = db.execute(
                "SELECT status FROM saga_execution WHERE id=?", (execution_id,)
            )
            rows = db.execute("SELECT id, delivered_at FROM saga_alert").fetchall()
        assert status == "stuck" and rows == [(key, None)]
        hang.set()  # the receiver answers from now on

        # The dead deliverer's claim runs out (its sink's timeout and a margin), then
        # a cron pass sends the same alert, under the same key.
        def delivered() -> bool:
            result = saga("--config", config, "alerts", "deliver", "--json")
            return result.code == 0 and key in result.json()["delivered"]

        wait_for(delivered, "the alert to be delivered again", timeout=30)
        assert saga("--config", config, "alerts", "deliver", "--json").json() == {
            "delivered": [],
            "retrying": {},
        }
    assert received.keys() == {key}
    assert len(received.acknowledged[key]) == 1
    (listed,) = saga("alerts", "--json").json()
    assert listed["id"] == key and listed["delivered_to"] == ["ops"]


@pytest.mark.slow
def test_a_webhook_that_is_down_for_a_while_gets_every_alert_when_it_returns(
    saga: SagaCli, tmp_path: Path
) -> None:
    port = free_port()
    config = alerts_config(tmp_path / "saga.toml", f"http://127.0.0.1:{port}/hook")

    simulated = saga(
        "--config",
        config,
        "simulate",
        "--count",
        "5",
        "--capacity",
        "50",
        "--fail",
        "car",
        "--fail-compensation",
        "hotel:always",
        "--json",
    )

    assert simulated.code == 0, simulated.stderr
    # the hotel's breaker opens after five failed cancels: later bookings fail fast there
    stuck = simulated.json()["stuck"]
    assert stuck >= 1
    pending = saga("alerts", "--pending", "--json").json()
    ids = {a["id"] for a in pending}
    assert len(ids) == 2 * stuck  # each: its stuck event and its compensation's 3rd failure
    # simulate tried them in the background, and the webhook was down
    assert all("ops: unreachable" in (a["last_error"] or "") for a in pending)
    assert saga("--config", config, "alerts", "deliver").code == 1  # still down

    received = Received()
    with webhook(port, received):

        def all_delivered() -> bool:
            saga("--config", config, "alerts", "deliver")
            return received.keys() == ids

        wait_for(all_delivered, "every alert to reach the webhook", timeout=30)
    assert all(len(bodies) == 1 for bodies in received.acknowledged.values())
    assert saga("alerts", "--pending", "--json").json() == []
