"""``saga worker --http-port``: /healthz, /readyz and /metrics, checked against the log.

The metrics are parsed back with prometheus_client's own parser, and every
count is compared with what the log recorded. Readiness is driven by what
really happens: a stop in progress, registry writes that fail, an outage
tracker that says the log is away.
"""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from conftest import SagaCli
from crash.logdb import LogDb
from prometheus_client.parser import text_string_to_metric_families
from support import BOOKING, assert_one_line_error, free_port, http_get, wait_for

from saga_cli import Saga, StepContext
from saga_cli.errors import StoreError
from saga_cli.health import HealthServer
from saga_cli.orchestrator import Orchestrator
from saga_cli.worker import Worker

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Samples:
    """Every sample of GET `url`/metrics, parsed by prometheus_client."""
    answer = http_get(url + "metrics")
    assert answer is not None and answer[0] == 200, answer
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(answer[1])
        for sample in family.samples
    }


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, lbls), v in samples.items() if n == name and wanted <= lbls)


def probe(url: str, path: str) -> tuple[int, dict[str, Any]] | None:
    answer = http_get(url + path)
    return None if answer is None else (answer[0], json.loads(answer[1]))


def answered(url: str, path: str, code: int) -> dict[str, Any]:
    """The JSON body of GET `url``path` once it answers with status `code` (polled)."""

    def look() -> dict[str, Any]:  # empty (falsy): look again
        answer = probe(url, path)
        return answer[1] if answer is not None and answer[0] == code else {}

    return wait_for(look, f"GET /{path} to answer {code}")


def test_metrics_count_what_the_log_recorded(migrated: SagaCli) -> None:
    db = LogDb(migrated.db)
    assert migrated("inventory", "--restock", "50").code == 0
    ids = [migrated("book", *BOOKING, "--submit").stdout.strip() for _ in range(5)]
    ids += [migrated("book", *BOOKING, "--fail", "car", "--submit").stdout.strip()]
    ids += [migrated("book", *BOOKING, "--fail", "payment", "--submit").stdout.strip()]
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    worker = migrated.popen(
        "worker", "--http-port", str(port), "--concurrency", "3", "--poll", "0.05"
    )
    try:
        ready = answered(url, "readyz", 200)
        alive = answered(url, "healthz", 200)
        assert ready == {**alive, "ready": True} and alive["alive"] is True, (alive, ready)
        wait_for(
            lambda: all(db.status(i) in ("completed", "compensated") for i in ids),
            "the worker to finish every booking",
        )
        # The last outcome is counted just after its commit: wait for it, then compare.
        wait_for(
            lambda: total(scrape(url), "saga_worker_executions_finished_total") == len(ids),
            "the metrics to count every outcome",
        )
        samples = scrape(url)
        missing = http_get(url + "nothing-here")
    finally:
        worker.send_signal(signal.SIGTERM)
        _out, err = worker.communicate(timeout=60)
    assert worker.returncode == 0, err
    assert missing is not None and missing[0] == 404

    statuses = Counter(db.status(i) for i in ids)
    assert statuses == {"completed": 5, "compensated": 2}
    for status, count in statuses.items():
        assert total(samples, "saga_worker_executions_finished_total", status=status) == count
    worker_id = alive["worker"]
    claims = sum(
        1
        for i in ids
        for e in db.events(i)
        if e.type == "saga_resumed" and e.detail is not None and e.detail["by"] == worker_id
    )
    assert claims == len(ids)
    assert total(samples, "saga_worker_executions_claimed_total", saga="travel-booking") == claims
    assert total(samples, "saga_worker_executions_lost_total") == 0
    assert total(samples, "saga_worker_executions_in_flight") == 0
    # Each call's outcome in the log is one observation of the step histogram.
    phase_of = {
        "step_succeeded": ("action", "succeeded"),
        "step_failed": ("action", "failed"),
        "compensation_succeeded": ("compensation", "succeeded"),
        "compensation_failed": ("compensation", "failed"),
    }
    logged = Counter(
        (e.step, *phase_of[e.type]) for i in ids for e in db.events(i) if e.type in phase_of
    )
    observed = {
        (labels["step"], labels["phase"], labels["result"]): value
        for (name, pairs), value in samples.items()
        if name == "saga_worker_step_duration_seconds_count"
        for labels in (dict(pairs),)
    }
    assert observed == logged
    assert logged[("car", "action", "failed")] == 1
    assert logged[("hotel", "compensation", "succeeded")] == 2
    assert total(samples, "saga_worker_commit_duration_seconds_count") > 0
    assert total(samples, "saga_worker_commit_duration_seconds_sum") > 0
    assert total(samples, "saga_worker_log_outages_total") == 0
    assert total(samples, "saga_worker_log_outage_active") == 0
    assert "Traceback" not in err


def test_a_stopping_worker_is_alive_but_not_ready(migrated: SagaCli) -> None:
    db = LogDb(migrated.db)
    execution_id = migrated("book", *BOOKING, "--submit").stdout.strip()
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    worker = migrated.popen("worker", "--http-port", str(port), "--slow", "hotel:3", "--json")
    try:
        wait_for(
            lambda: any(e.step == "hotel" for e in db.events(execution_id)),
            "the worker to call the hotel",
        )
        answered(url, "readyz", 200)
        worker.send_signal(signal.SIGTERM)
        stopping = answered(url, "readyz", 503)
        alive = probe(url, "healthz")
        out, err = worker.communicate(timeout=60)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()

    assert stopping["reason"] == "the worker is stopping"
    assert alive is not None and alive[0] == 200  # finishing the hotel call: still alive
    assert worker.returncode == 0, err
    assert json.loads(out)["released"] == 1
    assert db.owner(execution_id) == (None, None)


def test_bad_http_ports_are_one_line_errors(migrated: SagaCli) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        in_use = migrated("worker", "--exit-when-idle", "--http-port", str(busy))

    assert_one_line_error(in_use, 1, f"cannot listen on 127.0.0.1:{busy}")
    for port in ("0", "70000"):
        assert_one_line_error(
            migrated("worker", "--exit-when-idle", "--http-port", port), 2, "--http-port"
        )
    assert_one_line_error(
        migrated(
            "worker", "--exit-when-idle", "--http-port", str(free_port()), "--http-host", "no.such."
        ),
        1,
        "cannot listen on no.such.",
    )


# -- the library: readiness follows the log ------------------------------------------------


def nap(ctx: StepContext) -> str:
    time.sleep(0.01)
    return ctx.step


@pytest.fixture
def running(db_path: Path) -> Iterator[tuple[Worker, str]]:
    """A worker with a short lease (beats every 0.1 s) serving its endpoints, on a thread."""
    saga: Saga[Any] = Saga("nap")
    saga.step("one", kind="pivot")(nap)
    with Orchestrator(str(db_path), [saga]) as orchestrator:
        worker = Worker(orchestrator, lease_seconds=0.3, poll=0.05)
        server = HealthServer(worker, "127.0.0.1", free_port())
        server.start()
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        try:
            yield worker, server.url
        finally:
            worker.stop()
            thread.join(timeout=60)
            server.close()
    assert not thread.is_alive()


def test_readiness_drops_while_the_log_refuses_writes_and_returns_after(
    running: tuple[Worker, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    worker, url = running
    answered(url, "readyz", 200)
    saved = worker.store.save_worker

    def refuse(*_args: object) -> None:
        raise StoreError("the log refused the write (test)")

    monkeypatch.setattr(worker.store, "save_worker", refuse)
    down = answered(url, "readyz", 503)
    alive = probe(url, "healthz")
    monkeypatch.setattr(worker.store, "save_worker", saved)
    answered(url, "readyz", 200)

    assert "the log did not answer" in down["reason"] and "refused" in down["reason"]
    assert alive is not None and alive[0] == 200


def test_an_outage_tracker_drives_readiness_and_the_outage_metrics(
    running: tuple[Worker, str],
) -> None:
    worker, url = running
    answered(url, "readyz", 200)

    # The attributes saga_cli reads of `worker.outage` (None or missing: no outage).
    worker.outage = SimpleNamespace(count=2, active=True, seconds_total=7.5)  # type: ignore[assignment]
    during = probe(url, "readyz")
    samples_during = scrape(url)
    worker.outage = SimpleNamespace(count=2, active=False, seconds_total=9.0)  # type: ignore[assignment]
    after = probe(url, "readyz")
    samples_after = scrape(url)

    assert during is not None and during[0] == 503 and "outage" in during[1]["reason"]
    assert total(samples_during, "saga_worker_log_outages_total") == 2
    assert total(samples_during, "saga_worker_log_outage_active") == 1
    assert total(samples_during, "saga_worker_log_outage_seconds_total") == 7.5
    assert after is not None and after[0] == 200
    assert total(samples_after, "saga_worker_log_outage_active") == 0
    assert total(samples_after, "saga_worker_log_outage_seconds_total") == 9.0
