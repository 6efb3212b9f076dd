"""Throughput of the travel-booking saga on a durable SQLite log.

Measures, in one run and under the same pragmas (WAL, synchronous=FULL by
default):

* the raw rate of committed single-row inserts on this machine's disk;
* sagas per second for the booking saga, sequentially and with K executions
  in flight (their log writes share commits), with and without car failures
  (a failed car compensates hotel and flight in reverse);
* per saga: p50/p99 latency (first record to last), log commits (fsynced),
  service commits, CPU ms; the process's peak RSS.

Every scenario runs on a fresh log restocked so that nothing sells out, and
ends with `saga check`'s audit.

With ``--services http`` every scenario also runs with the flight, hotel and
car services as real HTTP microservices (``saga serve``, one process and one
fsynced SQLite file each, fresh for each scenario, on loopback ports), beside
the in-process figures of the same run. Payment and notification stay
in-process, as in the demo.

Usage:
    python bench/throughput.py [--sagas 2000] [--concurrency 1,2,4,8]
        [--failure-rates 0,0.2,0.3] [--synchronous FULL] [--services http]
        [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from saga_cli.booking import TravelBooking
from saga_cli.domain import Event, EventType, SagaStatus
from saga_cli.services.travel import BookingRequest
from saga_cli.store import open_store
from saga_cli.store.sqlite import SqliteSettings, SqliteStore

WRITES = ("INSERT", "UPDATE", "DELETE")
TERMINAL_EVENTS = (EventType.SAGA_COMPLETED, EventType.SAGA_COMPENSATED, EventType.SAGA_STUCK)


def raw_commit_rate(directory: Path, synchronous: str, count: int) -> float:
    """Committed single-row inserts per second under the log's pragmas."""
    path = directory / "raw.db"
    db = SqliteSettings(f"sqlite:///{path}?synchronous={synchronous}").connect()
    db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    started = time.perf_counter()
    for _ in range(count):
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO t (v) VALUES ('x')")
        db.execute("COMMIT")
    elapsed = time.perf_counter() - started
    db.close()
    return count / elapsed


def requests(count: int, failure_rate: float, seed: int) -> list[BookingRequest]:
    """Bookings over the catalogue; a share of them fail at the car step."""
    rng = random.Random(seed)
    return [
        BookingRequest(
            flight=rng.choice(["FL100", "FL200", "FL300"]),
            hotel=rng.choice(["GRAND", "PLAZA", "HARBOUR"]),
            car=rng.choice(["ECONOMY", "COMPACT", "SUV"]),
            customer=f"bench-{i}",
            fail=("car",) if rng.random() < failure_rate else (),
        )
        for i in range(count)
    ]


@contextmanager
def service_commit_counter(store: SqliteStore) -> Iterator[Callable[[], int]]:
    """Count the transactions the services commit on connections opened inside the block.

    A COMMIT ends an explicit transaction; a write run outside one is a
    transaction of its own (SQLite's autocommit).
    """
    commits = 0
    original = store.settings.connect

    def traced_connect(*, participant: bool = False) -> sqlite3.Connection:
        connection = original(participant=participant)

        def trace(statement: str) -> None:
            nonlocal commits
            if statement == "COMMIT":
                commits += 1
            elif statement.startswith(WRITES) and not connection.in_transaction:
                commits += 1

        connection.set_trace_callback(trace)
        return connection

    store.settings.connect = traced_connect  # type: ignore[method-assign]
    try:
        yield lambda: commits
    finally:
        store.settings.connect = original  # type: ignore[method-assign]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def http_services(directory: Path) -> Iterator[dict[str, str]]:
    """Flight, hotel and car as `saga serve` processes on fresh databases; their URLs."""
    directory.mkdir()
    urls: dict[str, str] = {}
    children: list[subprocess.Popen[bytes]] = []
    try:
        for name in ("flight", "hotel", "car"):
            port = _free_port()
            command = [sys.executable, "-m", "saga_cli", "--quiet", "serve", name]
            command += ["--port", str(port), "--db", str(directory / f"{name}.db")]
            children.append(subprocess.Popen(command, stdin=subprocess.DEVNULL))
            urls[name] = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        for url in urls.values():
            while True:
                try:
                    with urllib.request.urlopen(f"{url}/health", timeout=1):
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{url} did not start") from None
                    time.sleep(0.05)
        yield urls
    finally:
        for child in children:
            os.kill(child.pid, signal.SIGTERM)
        for child in children:
            child.wait(timeout=30)


def run_scenario(
    directory: Path,
    query: str,
    concurrency: int,
    failure_rate: float,
    count: int,
    seed: int,
    full: bool,
    services: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Run `count` bookings on a fresh log; return rate, latency, commit and CPU figures.

    With `services`, the reservation services are those remote ones (their
    own commits are not counted: they happen in other processes).
    """
    transport = "http" if services else "in-process"
    name = f"{transport}-k{concurrency}-fail{int(failure_rate * 100)}"
    store = open_store(f"sqlite:///{directory / name}.db?{query}")
    assert isinstance(store, SqliteStore)
    batch = requests(count, failure_rate, seed)
    with service_commit_counter(store) as service_commits:
        travel = TravelBooking(store, payment=full, services=services)
        travel.restock(10 * count + 100)
        warm = batch[: min(50, count)]
        counted_from = service_commits()
        travel.runner.run_many(travel.definition, (r.to_payload() for r in warm))
        services_per_saga: float | None = (service_commits() - counted_from) / len(warm)
    if services:
        services_per_saga = None  # the in-process payment's only; the rest is remote

    started_at: dict[str, float] = {}
    latencies: list[float] = []

    def timing(execution_id: str, event: Event) -> None:
        if event.type is EventType.SAGA_STARTED:
            started_at[execution_id] = event.at
        elif event.type in TERMINAL_EVENTS:
            latencies.append(event.at - started_at.pop(execution_id))

    travel.orchestrator.subscribe(timing)
    log_commits_before = store._writer.batches
    cpu_started = time.process_time()
    started = time.perf_counter()
    outcomes = travel.runner.run_many(
        travel.definition, (r.to_payload() for r in batch), concurrency=concurrency
    )
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    log_commits = store._writer.batches - log_commits_before
    report = travel.check()
    travel.close()
    store.close()
    latencies.sort()
    statuses = [o.status for o in outcomes]
    return {
        "services": transport,
        "concurrency": concurrency,
        "car_failure_rate": failure_rate,
        "sagas": count,
        "sagas_per_second": round(count / elapsed, 1),
        "p50_ms": round(1000 * statistics.median(latencies), 3),
        "p99_ms": round(1000 * latencies[int(0.99 * (len(latencies) - 1))], 3),
        "log_commits_per_saga": round(log_commits / count, 2),
        "service_commits_per_saga": (
            None if services_per_saga is None else round(services_per_saga, 2)
        ),
        "cpu_ms_per_saga": round(1000 * cpu / count, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "completed": statuses.count(SagaStatus.COMPLETED),
        "compensated": statuses.count(SagaStatus.COMPENSATED),
        "consistent": report.consistent,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Throughput of the travel-booking saga.")
    parser.add_argument("--sagas", type=int, default=2000, help="sagas per scenario")
    parser.add_argument("--concurrency", default="1,2,4,8", help="comma-separated K values")
    parser.add_argument(
        "--failure-rates", default="0,0.2,0.3", help="car failure rates run sequentially"
    )
    parser.add_argument(
        "--concurrent-failure-rate", type=float, default=0.2, help="car failure rate for K > 1"
    )
    parser.add_argument("--synchronous", default="FULL", choices=["OFF", "NORMAL", "FULL"])
    parser.add_argument(
        "--participant-synchronous",
        choices=["OFF", "NORMAL", "FULL"],
        help="the services' level (default: NORMAL under a FULL log; see README, The saga log)",
    )
    parser.add_argument(
        "--saga",
        choices=["basic", "full"],
        default="basic",
        help="basic: flight, hotel, car, confirm (the peer's 3-step saga plus the lock"
        " release); full: the demo's saga with the payment pivot and the notification",
    )
    parser.add_argument(
        "--services",
        choices=["in-process", "http"],
        default="in-process",
        help="http: run every scenario over HTTP too (saga serve processes), beside in-process",
    )
    parser.add_argument("--raw-commits", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args(argv)

    query = f"synchronous={args.synchronous}"
    if args.participant_synchronous:
        query += f"&participant_synchronous={args.participant_synchronous}"
    plan = [(1, float(rate)) for rate in args.failure_rates.split(",")]
    plan += [
        (int(k), args.concurrent_failure_rate) for k in args.concurrency.split(",") if int(k) > 1
    ]
    with tempfile.TemporaryDirectory(prefix="saga-bench-") as tmp:
        directory = Path(tmp)
        raw = raw_commit_rate(directory, args.synchronous, args.raw_commits)
        full = args.saga == "full"
        scenarios = []
        for k, rate in plan:
            scenarios.append(run_scenario(directory, query, k, rate, args.sagas, args.seed, full))
            if args.services == "http":
                where = directory / f"services-k{k}-fail{int(rate * 100)}"
                with http_services(where) as urls:
                    scenarios.append(
                        run_scenario(directory, query, k, rate, args.sagas, args.seed, full, urls)
                    )
    print(f"saga: {args.saga}")
    print(
        f"raw committed single-row inserts: {raw:,.0f}/s "
        f"(WAL, synchronous={args.synchronous}, same machine, same run)"
    )
    print(
        f"{'services':>11}{'K':>3}{'car fail':>9}{'sagas/s':>9}{'x raw':>7}{'p50 ms':>8}"
        f"{'p99 ms':>8}{'log c.':>8}{'svc c.':>8}{'cpu ms':>8}{'RSS MB':>8}{'ok':>6}"
        f"{'comp':>6}{'check':>7}"
    )
    for s in scenarios:
        s["raw_commits_per_saga_time"] = round(raw / s["sagas_per_second"], 2)
        svc = s["service_commits_per_saga"]
        print(
            f"{s['services']:>11}{s['concurrency']:>3}{s['car_failure_rate']:>9.0%}{s['sagas_per_second']:>9.1f}"
            f"{s['raw_commits_per_saga_time']:>7.2f}{s['p50_ms']:>8.2f}{s['p99_ms']:>8.2f}"
            f"{s['log_commits_per_saga']:>8.2f}{'-' if svc is None else f'{svc:.2f}':>8}"
            f"{s['cpu_ms_per_saga']:>8.3f}{s['peak_rss_mb']:>8.1f}{s['completed']:>6}"
            f"{s['compensated']:>6}{'ok' if s['consistent'] else 'FAIL':>7}"
        )
    print(
        "x raw: raw commits that fit in the time of one saga; log c.: fsynced commits of the"
        " log per saga; svc c.: the services' own commits per saga (in-process only)"
    )
    if args.json:
        args.json.write_text(
            json.dumps({"raw_commits_per_second": round(raw, 1), "scenarios": scenarios}, indent=2)
            + "\n"
        )
    return 0 if all(s["consistent"] for s in scenarios) else 1


if __name__ == "__main__":
    sys.exit(main())
