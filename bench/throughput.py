"""Throughput of the travel-booking saga on a durable SQLite log.

Measures, in one run and under the same pragmas (WAL, synchronous=FULL by
default):

* the raw rate of committed single-row inserts on this machine's disk;
* sagas per second for the booking saga with no failures and with a share of
  car failures (compensating hotel and flight in reverse);
* how many commits one saga costs (counted on every connection, log and
  services alike, in a separate untimed pass) and CPU ms per saga.

Usage:
    python bench/throughput.py [--sagas 2000] [--car-failure-rate 0.3]
        [--synchronous FULL] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from saga_cli.booking import TravelBooking
from saga_cli.domain import SagaStatus
from saga_cli.services.travel import BookingRequest
from saga_cli.store import open_store
from saga_cli.store.sqlite import SqliteSettings, SqliteStore


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
def commit_counter(store: SqliteStore) -> Iterator[Callable[[], tuple[int, int]]]:
    """Count COMMIT statements on the log's and on the services' connections."""
    commits = {"log": 0, "participant": 0}

    def tracer(kind: str) -> Callable[[str], None]:
        def trace(statement: str) -> None:
            if statement == "COMMIT":
                commits[kind] += 1

        return trace

    original = store.settings.connect

    def traced_connect(*, participant: bool = False) -> sqlite3.Connection:
        connection = original(participant=participant)
        connection.set_trace_callback(tracer("participant" if participant else "log"))
        return connection

    store._db.set_trace_callback(tracer("log"))
    store.settings.connect = traced_connect  # type: ignore[method-assign]
    try:
        yield lambda: (commits["log"], commits["participant"])
    finally:
        store._db.set_trace_callback(None)
        store.settings.connect = original  # type: ignore[method-assign]


def run_sagas(
    directory: Path, name: str, url_query: str, batch: list[BookingRequest]
) -> dict[str, Any]:
    """Run `batch` sequentially on a fresh log; return rate, latency and CPU figures."""
    url = f"sqlite:///{directory / name}.db?{url_query}"
    store = open_store(url)
    assert isinstance(store, SqliteStore)
    travel = TravelBooking(store)
    travel.restock(10 * len(batch) + 100)
    # Warm up, and count commits per saga in an untimed pass.
    warm = batch[: min(50, len(batch))]
    with commit_counter(store) as commits:
        counting = TravelBooking(store)
        for request in warm:
            counting.runner.run(counting.definition, request.to_payload())
        log_commits, participant_commits = commits()
        log_per_saga = log_commits / len(warm)
        participant_per_saga = participant_commits / len(warm)
        counting.close()
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    cpu_started = time.process_time()
    started = time.perf_counter()
    for request in batch:
        t0 = time.perf_counter()
        outcome = travel.runner.run(travel.definition, request.to_payload())
        latencies.append(time.perf_counter() - t0)
        statuses[outcome.status.value] = statuses.get(outcome.status.value, 0) + 1
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    report = travel.check()
    travel.close()
    store.close()
    latencies.sort()
    return {
        "scenario": name,
        "sagas": len(batch),
        "sagas_per_second": round(len(batch) / elapsed, 1),
        "ms_per_saga": round(1000 * elapsed / len(batch), 3),
        "cpu_ms_per_saga": round(1000 * cpu / len(batch), 3),
        "p50_ms": round(1000 * statistics.median(latencies), 3),
        "p99_ms": round(1000 * latencies[int(0.99 * (len(latencies) - 1))], 3),
        "log_commits_per_saga": round(log_per_saga, 2),
        "participant_commits_per_saga": round(participant_per_saga, 2),
        "completed": statuses.get(SagaStatus.COMPLETED.value, 0),
        "compensated": statuses.get(SagaStatus.COMPENSATED.value, 0),
        "consistent": report.consistent,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sagas", type=int, default=2000, help="sagas per scenario")
    parser.add_argument("--car-failure-rate", type=float, default=0.3)
    parser.add_argument("--synchronous", default="FULL", choices=["OFF", "NORMAL", "FULL"])
    parser.add_argument(
        "--participant-synchronous",
        choices=["OFF", "NORMAL", "FULL"],
        help="the services' level (default: NORMAL under a FULL log, see store/sqlite.py)",
    )
    parser.add_argument("--raw-commits", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="saga-bench-") as tmp:
        directory = Path(tmp)
        raw = raw_commit_rate(directory, args.synchronous, args.raw_commits)
        query = f"synchronous={args.synchronous}"
        if args.participant_synchronous:
            query += f"&participant_synchronous={args.participant_synchronous}"
        failing = f"car-fails-{int(args.car_failure_rate * 100)}pct"
        scenarios = [
            run_sagas(directory, "no-failures", query, requests(args.sagas, 0.0, args.seed)),
            run_sagas(
                directory, failing, query, requests(args.sagas, args.car_failure_rate, args.seed)
            ),
        ]
    results = {
        "synchronous": args.synchronous,
        "participant_synchronous": args.participant_synchronous or "default",
        "raw_commits_per_second": round(raw, 1),
        "scenarios": scenarios,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    print(f"raw committed inserts: {raw:,.0f}/s  (synchronous={args.synchronous}, WAL)")
    header = (
        f"{'scenario':<18}{'sagas/s':>9}{'ms/saga':>9}{'cpu ms':>8}{'p50 ms':>8}{'p99 ms':>8}"
        f"{'log c.':>8}{'svc c.':>8}{'raw/saga':>10}{'ok':>6}{'comp':>6}"
    )
    print(header)
    for s in scenarios:
        raw_equivalent = raw / s["sagas_per_second"]
        s["raw_commits_per_saga_time"] = round(raw_equivalent, 2)
        print(
            f"{s['scenario']:<18}{s['sagas_per_second']:>9.1f}{s['ms_per_saga']:>9.3f}"
            f"{s['cpu_ms_per_saga']:>8.3f}{s['p50_ms']:>8.3f}{s['p99_ms']:>8.3f}"
            f"{s['log_commits_per_saga']:>8.2f}{s['participant_commits_per_saga']:>8.2f}"
            f"{raw_equivalent:>10.2f}{s['completed']:>6}"
            f"{s['compensated']:>6}"
        )
    print(
        "log c./svc c.: commits per saga on the log's connection (synchronous as given) and on"
        " the services' connections; raw/saga: raw commits that fit in the time of one saga"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0 if all(s["consistent"] for s in scenarios) else 1


if __name__ == "__main__":
    sys.exit(main())
