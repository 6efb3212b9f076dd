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

With ``--workers 1,2,4`` it measures instead executions per second of N
``saga worker`` processes draining `--sagas` submitted bookings (each worker
K = ``--worker-concurrency`` at a time; the concurrent car failure rate
applies): the rate is counted from the first claim to the last terminal
record in the log, so process start-up is left out (the wall time, start-up
included, is shown too).

Usage:
    python bench/throughput.py [--sagas 2000] [--concurrency 1,2,4,8]
        [--failure-rates 0,0.2,0.3] [--synchronous FULL] [--json results.json]
    python bench/throughput.py --workers 1,2,4 [--worker-concurrency 8] [--sagas 2000]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
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


def run_scenario(
    directory: Path,
    query: str,
    concurrency: int,
    failure_rate: float,
    count: int,
    seed: int,
    full: bool,
) -> dict[str, Any]:
    """Run `count` bookings on a fresh log; return rate, latency, commit and CPU figures."""
    name = f"k{concurrency}-fail{int(failure_rate * 100)}"
    store = open_store(f"sqlite:///{directory / name}.db?{query}")
    assert isinstance(store, SqliteStore)
    batch = requests(count, failure_rate, seed)
    with service_commit_counter(store) as service_commits:
        travel = TravelBooking(store, payment=full)
        travel.restock(10 * count + 100)
        warm = batch[: min(50, count)]
        counted_from = service_commits()
        travel.runner.run_many(travel.definition, (r.to_payload() for r in warm))
        services_per_saga = (service_commits() - counted_from) / len(warm)

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
        "concurrency": concurrency,
        "car_failure_rate": failure_rate,
        "sagas": count,
        "sagas_per_second": round(count / elapsed, 1),
        "p50_ms": round(1000 * statistics.median(latencies), 3),
        "p99_ms": round(1000 * latencies[int(0.99 * (len(latencies) - 1))], 3),
        "log_commits_per_saga": round(log_commits / count, 2),
        "service_commits_per_saga": round(services_per_saga, 2),
        "cpu_ms_per_saga": round(1000 * cpu / count, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "completed": statuses.count(SagaStatus.COMPLETED),
        "compensated": statuses.count(SagaStatus.COMPENSATED),
        "consistent": report.consistent,
    }


def run_workers(
    directory: Path,
    query: str,
    workers: int,
    concurrency: int,
    failure_rate: float,
    count: int,
    seed: int,
    full: bool,
) -> dict[str, Any]:
    """Submit `count` bookings, then let `workers` worker processes drain them."""
    path = directory / f"workers{workers}.db"
    url = f"sqlite:///{path}?{query}"
    store = open_store(url)
    travel = TravelBooking(store, payment=full)
    travel.restock(10 * count + 100)
    travel.orchestrator.submit_many(
        travel.definition, [r.to_payload() for r in requests(count, failure_rate, seed)]
    )
    command = [sys.executable, "-m", "saga_cli", "--db", url, "worker", "--exit-when-idle"]
    command += ["--concurrency", str(concurrency), "--poll", "0.05", "--json"]
    started = time.perf_counter()
    processes = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(workers)
    ]
    reports = []
    for process in processes:
        out, err = process.communicate()
        if process.returncode != 0:
            raise SystemExit(f"a worker failed ({process.returncode}): {err}")
        reports.append(json.loads(out))
    wall = time.perf_counter() - started
    connection = sqlite3.connect(path)
    first_claim, last_end = connection.execute(
        "SELECT MIN(CASE WHEN type='saga_resumed' THEN at END),"
        " MAX(CASE WHEN type IN ('saga_completed','saga_compensated','saga_stuck') THEN at END)"
        " FROM saga_event"
    ).fetchone()
    statuses = dict(connection.execute("SELECT status, COUNT(*) FROM saga_execution GROUP BY 1"))
    connection.close()
    report = travel.check()
    travel.close()
    store.close()
    drained = last_end - first_claim
    return {
        "workers": workers,
        "worker_concurrency": concurrency,
        "car_failure_rate": failure_rate,
        "sagas": count,
        "executions_per_second": round(count / drained, 1),
        "drain_seconds": round(drained, 3),
        "wall_seconds": round(wall, 3),
        "per_worker": [r["completed"] + r["compensated"] for r in reports],
        "completed": statuses.get("completed", 0),
        "compensated": statuses.get("compensated", 0),
        "unfinished": count - statuses.get("completed", 0) - statuses.get("compensated", 0),
        "consistent": report.consistent,
    }


def main_workers(args: argparse.Namespace, query: str) -> int:
    """The --workers table: N worker processes draining submitted bookings."""
    counts = [int(n) for n in args.workers.split(",")]
    with tempfile.TemporaryDirectory(prefix="saga-bench-") as tmp:
        scenarios = [
            run_workers(
                Path(tmp),
                query,
                n,
                args.worker_concurrency,
                args.concurrent_failure_rate,
                args.sagas,
                args.seed,
                args.saga == "full",
            )
            for n in counts
        ]
    print(
        f"saga worker processes draining {args.sagas} submitted bookings ({args.saga} saga)"
        f" (K={args.worker_concurrency} each, car failure rate"
        f" {args.concurrent_failure_rate:.0%}, synchronous={args.synchronous})"
    )
    print(
        f"{'workers':>8}{'exec/s':>9}{'drain s':>9}{'wall s':>8}{'ok':>7}{'comp':>6}"
        f"{'left':>6}{'check':>7}  per worker"
    )
    for s in scenarios:
        print(
            f"{s['workers']:>8}{s['executions_per_second']:>9.1f}{s['drain_seconds']:>9.2f}"
            f"{s['wall_seconds']:>8.2f}{s['completed']:>7}{s['compensated']:>6}"
            f"{s['unfinished']:>6}{'ok' if s['consistent'] else 'FAIL':>7}  {s['per_worker']}"
        )
    print("exec/s: from the first claim to the last terminal record; wall: with process start-up")
    if args.json:
        args.json.write_text(json.dumps({"worker_scenarios": scenarios}, indent=2) + "\n")
    return 0 if all(s["consistent"] and not s["unfinished"] for s in scenarios) else 1


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
    parser.add_argument("--raw-commits", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument(
        "--workers",
        metavar="N,N,...",
        help="instead: N `saga worker` processes draining --sagas submitted bookings, e.g. 1,2,4",
    )
    parser.add_argument(
        "--worker-concurrency", type=int, default=8, help="K of each worker (with --workers)"
    )
    args = parser.parse_args(argv)

    query = f"synchronous={args.synchronous}"
    if args.participant_synchronous:
        query += f"&participant_synchronous={args.participant_synchronous}"
    if args.workers:
        return main_workers(args, query)
    plan = [(1, float(rate)) for rate in args.failure_rates.split(",")]
    plan += [
        (int(k), args.concurrent_failure_rate) for k in args.concurrency.split(",") if int(k) > 1
    ]
    with tempfile.TemporaryDirectory(prefix="saga-bench-") as tmp:
        directory = Path(tmp)
        raw = raw_commit_rate(directory, args.synchronous, args.raw_commits)
        scenarios = [
            run_scenario(directory, query, k, rate, args.sagas, args.seed, args.saga == "full")
            for k, rate in plan
        ]
    print(f"saga: {args.saga}")
    print(
        f"raw committed single-row inserts: {raw:,.0f}/s "
        f"(WAL, synchronous={args.synchronous}, same machine, same run)"
    )
    print(
        f"{'K':>3}{'car fail':>9}{'sagas/s':>9}{'x raw':>7}{'p50 ms':>8}{'p99 ms':>8}"
        f"{'log c.':>8}{'svc c.':>8}{'cpu ms':>8}{'RSS MB':>8}{'ok':>6}{'comp':>6}{'check':>7}"
    )
    for s in scenarios:
        s["raw_commits_per_saga_time"] = round(raw / s["sagas_per_second"], 2)
        print(
            f"{s['concurrency']:>3}{s['car_failure_rate']:>9.0%}{s['sagas_per_second']:>9.1f}"
            f"{s['raw_commits_per_saga_time']:>7.2f}{s['p50_ms']:>8.2f}{s['p99_ms']:>8.2f}"
            f"{s['log_commits_per_saga']:>8.2f}{s['service_commits_per_saga']:>8.2f}"
            f"{s['cpu_ms_per_saga']:>8.3f}{s['peak_rss_mb']:>8.1f}{s['completed']:>6}"
            f"{s['compensated']:>6}{'ok' if s['consistent'] else 'FAIL':>7}"
        )
    print(
        "x raw: raw commits that fit in the time of one saga; log c.: fsynced commits of the"
        " log per saga; svc c.: the services' own commits per saga"
    )
    if args.json:
        args.json.write_text(
            json.dumps({"raw_commits_per_second": round(raw, 1), "scenarios": scenarios}, indent=2)
            + "\n"
        )
    return 0 if all(s["consistent"] for s in scenarios) else 1


if __name__ == "__main__":
    sys.exit(main())
