"""Workers ride out outages of the log: PostgreSQL cut off, SQLite locked, --max-outage.

Real processes against a real log: two `saga worker` processes drain a few
hundred submitted bookings while the log goes away (every connection cut and
new ones refused by a proxy of the test's own, or SQLite's write lock held by
another process past the busy timeout). The same workers must finish every
booking, each effect once, with one log line per outage and no traceback.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from conftest import cli_env, saga_executable
from support import (
    OUTAGE_BEGAN,
    OUTAGE_ENDED,
    CuttableProxy,
    hold_sqlite_lock,
    start_worker,
    submit_bookings,
    wait_for,
)

pytestmark = pytest.mark.slow

BOOKINGS = 240
# Short leases, so an outage outlasts them: what a worker held is dropped and taken again.
WORKER_ARGS = (
    "--concurrency",
    "4",
    "--lease",
    "2",
    "--poll",
    "0.05",
    "--exit-when-idle",
    "--slow",
    "notify:0.1",  # keeps the workers busy long enough to be cut off twice
)
# The tables of the demo's services: one row per effect, keyed by idempotency key.
EFFECTS = (
    "flight_reservation",
    "hotel_reservation",
    "car_reservation",
    "payment_charge",
    "notification_outbox",
)


@pytest.fixture
def workers() -> Iterator[list[subprocess.Popen[str]]]:
    """Worker processes a test started; any still running at the end are killed."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.communicate()


@contextmanager
def finished_count(url: str) -> Iterator[Callable[[], int]]:
    """How many executions of the log at `url` are finished (read straight, not through a proxy)."""
    from saga_cli.domain import SagaStatus
    from saga_cli.store import open_store

    store = open_store(url)
    try:
        yield lambda: sum(
            store.count_statuses(statuses=(SagaStatus.COMPLETED, SagaStatus.COMPENSATED)).values()
        )
    finally:
        store.close()


def assert_drained_once_each(url: str, ids: list[str], rows: Callable[[str], list[Any]]) -> None:
    """Every booking finished, `saga check` agrees with the services, each effect happened once."""
    statuses = dict(rows("SELECT id, status FROM saga_execution"))
    assert sorted(statuses) == sorted(ids)
    assert_finished_once_each(url, statuses, rows)


def assert_finished_once_each(
    url: str, statuses: dict[str, str], rows: Callable[[str], list[Any]]
) -> None:
    """The executions finished, `saga check` agrees with the services, each effect happened once."""
    assert set(statuses.values()) <= {"completed", "compensated"}, statuses
    check = subprocess.run(
        [saga_executable(), "--db", url, "check", "--json"],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=120,
    )
    assert json.loads(check.stdout)["consistent"] is True, check
    for table in EFFECTS:
        twice = rows(f"SELECT saga_id FROM {table} GROUP BY saga_id HAVING COUNT(*) > 1")
        assert twice == [], (table, twice)


def in_outage(log: Path) -> bool:
    """Whether the process logging to `log` is waiting for the log right now."""
    text = log.read_text()
    return text.count(OUTAGE_BEGAN) > text.count(OUTAGE_ENDED)


def assert_rode_it_out(worker: subprocess.Popen[str], stderr: Path, outages: int) -> None:
    """The worker exited 0, logged each outage once as it began and once as it ended."""
    out, _ = worker.communicate(timeout=180)
    log = stderr.read_text()
    assert worker.returncode == 0, log
    assert "Traceback" not in log, log
    began, ended = log.count(OUTAGE_BEGAN), log.count(OUTAGE_ENDED)
    assert 1 <= began <= outages, log
    assert began == ended, log
    assert "lasted" in log, log
    json.loads(out)


def test_workers_ride_out_postgres_cut_off_twice(
    pg_url: str, tmp_path: Path, workers: list[subprocess.Popen[str]]
) -> None:
    import psycopg

    from saga_cli.store.postgres import libpq_url

    ids = submit_bookings(pg_url, BOOKINGS, seed=13)
    proxy = CuttableProxy(5432)
    through = proxy.url(pg_url)
    logs = [tmp_path / f"worker{n}.err" for n in range(2)]
    try:
        workers += [start_worker(through, log, *WORKER_ARGS) for log in logs]
        with finished_count(pg_url) as finished:
            wait_for(lambda: finished() >= 20, "the workers to get going")

        # A restart: every connection cut, new ones refused for 3 s.
        proxy.cut(3.0)
        wait_for(lambda: all(OUTAGE_ENDED in log.read_text() for log in logs), "the log back")
        # A failover in the middle of a commit: its answer never comes back.
        proxy.cut_on(b"COMMIT", 1.5)
        wait_for(lambda: proxy.cuts == 2, "a commit to be cut off")

        for worker, log in zip(workers, logs, strict=True):
            assert_rode_it_out(worker, log, outages=2)
    finally:
        proxy.close()

    with psycopg.connect(libpq_url(pg_url)) as db:
        assert_drained_once_each(pg_url, ids, lambda sql: db.execute(sql).fetchall())


def test_workers_wait_while_another_process_holds_sqlite_locked(
    tmp_path: Path, workers: list[subprocess.Popen[str]]
) -> None:
    import sqlite3

    path = tmp_path / "saga.db"
    # A busy timeout the lock below outlasts several times over (and ordinary
    # contention between the workers and their services does not).
    url = f"sqlite:///{path}?busy_timeout=1000&synchronous=NORMAL"
    ids = submit_bookings(url, BOOKINGS, seed=13)
    logs = [tmp_path / f"worker{n}.err" for n in range(2)]
    workers += [start_worker(url, log, *WORKER_ARGS) for log in logs]
    with finished_count(url) as finished:
        wait_for(lambda: finished() >= 20, "the workers to get going")

    holder = hold_sqlite_lock(path, 4.0)
    wait_for(lambda: all(in_outage(log) for log in logs), "the workers to wait")
    holder.communicate(timeout=60)
    for worker, log in zip(workers, logs, strict=True):
        assert_rode_it_out(worker, log, outages=1)

    with sqlite3.connect(path) as db:
        assert_drained_once_each(url, ids, lambda sql: db.execute(sql).fetchall())


def test_max_outage_gives_up_with_one_error_line(
    pg_url: str, tmp_path: Path, workers: list[subprocess.Popen[str]]
) -> None:
    submit_bookings(pg_url, 40, seed=13)
    proxy = CuttableProxy(5432)
    log = tmp_path / "worker.err"
    try:
        worker = start_worker(proxy.url(pg_url), log, *WORKER_ARGS, "--max-outage", "1s")
        workers.append(worker)
        with finished_count(pg_url) as finished:
            wait_for(lambda: finished() >= 1, "the worker to get going")
        began = time.monotonic()
        proxy.cut(600)  # gone for good, as far as the worker can tell
        worker.communicate(timeout=120)
    finally:
        proxy.close()

    stderr = log.read_text()
    assert worker.returncode == 1, stderr
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, stderr
    assert "--max-outage 1s" in errors[0], stderr
    assert stderr.count(OUTAGE_BEGAN) == 1, stderr
    assert time.monotonic() - began < 60  # it gave up, rather than wait for the failsafe


def assert_one_outage_ridden_out(result: subprocess.CompletedProcess[str], code: int = 0) -> None:
    """The command exited with `code`, logged the outage as it began and ended, no traceback."""
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.count(OUTAGE_BEGAN) == result.stderr.count(OUTAGE_ENDED) >= 1, (
        result.stderr
    )


def run_through(
    proxy: CuttableProxy, *args: str, url: str = "", then: tuple[str, ...] = ()
) -> subprocess.Popen[str]:
    """`saga ARGS… --db URL THEN…` through `proxy`, in the background."""
    return subprocess.Popen(
        [saga_executable(), *args, "--db", proxy.url(url), *then],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
        stdin=subprocess.DEVNULL,
    )


def finish(process: subprocess.Popen[str]) -> subprocess.CompletedProcess[str]:
    out, err = process.communicate(timeout=180)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def ride_one_commit_cut(
    pg_url: str, workers: list[subprocess.Popen[str]], then: tuple[str, ...], what: str
) -> subprocess.CompletedProcess[str]:
    """`saga --db PG THEN…` through a proxy that cuts once, right after a COMMIT; how it ended."""
    proxy = CuttableProxy(5432)
    try:
        process = run_through(proxy, url=pg_url, then=then)
        workers.append(process)
        with finished_count(pg_url) as finished:
            wait_for(lambda: finished() >= 5, what)
        proxy.cut_on(b"COMMIT", 1.5)
        result = finish(process)
    finally:
        proxy.close()
    assert proxy.cuts == 1
    return result


def test_resume_all_rides_out_a_cut_in_the_middle_of_a_commit(
    pg_url: str, workers: list[subprocess.Popen[str]]
) -> None:
    import psycopg

    from saga_cli.store.postgres import libpq_url

    ids = submit_bookings(pg_url, BOOKINGS, seed=7)
    result = ride_one_commit_cut(
        pg_url,
        workers,
        ("resume", "--all", "--concurrency", "4", "--json"),
        "the resume to get going",
    )

    assert_one_outage_ridden_out(result)
    report = json.loads(result.stdout)
    assert report["busy"] == [] and report["failed"] == {}, report
    with psycopg.connect(libpq_url(pg_url)) as db:
        assert_drained_once_each(pg_url, ids, lambda sql: db.execute(sql).fetchall())


def test_simulate_rides_out_a_cut_in_the_middle_of_a_commit(
    pg_url: str, workers: list[subprocess.Popen[str]]
) -> None:
    import psycopg

    from saga_cli.store.postgres import libpq_url

    args = ("simulate", "--count", str(BOOKINGS), "--concurrency", "4", "--capacity", "1000")
    result = ride_one_commit_cut(
        pg_url, workers, (*args, "--fail-rate", "0.2", "--json"), "the simulation to get going"
    )

    assert_one_outage_ridden_out(result)
    with psycopg.connect(libpq_url(pg_url)) as db:
        statuses: dict[str, str] = dict(
            db.execute("SELECT id, status FROM saga_execution").fetchall()
        )
        assert len(statuses) == BOOKINGS
        assert_finished_once_each(pg_url, statuses, lambda sql: db.execute(sql).fetchall())


def test_watch_rides_out_a_cut(pg_url: str, workers: list[subprocess.Popen[str]]) -> None:
    proxy = CuttableProxy(5432)
    try:
        watch = run_through(
            proxy, "-v", url=pg_url, then=("watch", "--interval", "0.1", "--count", "30")
        )
        workers.append(watch)
        assert watch.stderr is not None
        opened = next(line for line in iter(watch.stderr.readline, "") if "opened saga log" in line)
        assert opened
        proxy.cut(1.5)
        result = finish(watch)
    finally:
        proxy.close()
    assert_one_outage_ridden_out(result)


def test_sigterm_during_an_outage_exits_0_after_the_grace(
    tmp_path: Path, workers: list[subprocess.Popen[str]]
) -> None:
    import signal

    path = tmp_path / "saga.db"
    url = f"sqlite:///{path}?busy_timeout=1000&synchronous=NORMAL"
    submit_bookings(url, 80, seed=13)
    log = tmp_path / "worker.err"
    worker = start_worker(url, log, *WORKER_ARGS, "--grace", "1s")
    workers.append(worker)
    with finished_count(url) as finished:
        wait_for(lambda: finished() >= 5, "the worker to get going")
    holder = hold_sqlite_lock(path, 600)  # longer than the test may take: never released
    try:
        wait_for(lambda: in_outage(log), "the worker to wait for the log")
        worker.send_signal(signal.SIGTERM)
        out, _ = worker.communicate(timeout=120)
    finally:
        holder.kill()
        holder.communicate()
    stderr = log.read_text()
    assert worker.returncode == 0, stderr
    assert "Traceback" not in stderr, stderr
    assert "could not remove worker" in stderr  # the registry is locked too: one line, no more
    json.loads(out)
