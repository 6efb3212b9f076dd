"""Throughput of the travel-booking saga on a durable log: SQLite, PostgreSQL, or both.

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

`--db` picks the backends, in one run: `sqlite` (a fresh file per scenario in a
temporary directory) and/or a PostgreSQL server URL, on which each scenario
gets a database of its own, created and dropped (the URL's database is only
used to run CREATE/DROP DATABASE). Repeat it to compare them side by side.

Usage:
    python bench/throughput.py [--sagas 2000] [--concurrency 1,2,4,8]
        [--failure-rates 0,0.2,0.3] [--synchronous FULL] [--json results.json]
        [--db sqlite] [--db postgresql+psycopg://postgres@127.0.0.1:5432/test]
    python bench/throughput.py --workers 1,2,4 [--worker-concurrency 8] [--sagas 2000]
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
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from saga_cli.booking import TravelBooking
from saga_cli.domain import Event, EventType, SagaStatus
from saga_cli.services.travel import BookingRequest, FaultPlan
from saga_cli.store import SagaStore, open_store
from saga_cli.store.postgres import (
    PostgresParticipant,
    PostgresStore,
    is_postgres_url,
    libpq_url,
    safe_url,
)
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


def raw_pg_commit_rate(server: str, count: int) -> float:
    """Committed single-row inserts per second on a PostgreSQL server (a scratch database)."""
    with pg_database(server) as url:
        import psycopg

        with psycopg.connect(libpq_url(url), autocommit=True) as db:
            db.execute("CREATE TABLE t (id serial PRIMARY KEY, v text)")
            started = time.perf_counter()
            for _ in range(count):
                with db.transaction():
                    db.execute("INSERT INTO t (v) VALUES ('x')")
            elapsed = time.perf_counter() - started
    return count / elapsed


@contextmanager
def pg_database(server: str) -> Iterator[str]:
    """A new database on the server of `server`, dropped afterwards; yields its URL."""
    import psycopg

    name = f"saga_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(libpq_url(server), autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        yield server.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(libpq_url(server), autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


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
def service_commit_counter(store: SagaStore) -> Iterator[Callable[[], int]]:
    """Count the transactions the demo services commit while the block runs."""
    if isinstance(store, PostgresStore):
        with pg_service_commit_counter() as counter:
            yield counter
        return
    assert isinstance(store, SqliteStore)
    with sqlite_service_commit_counter(store) as counter:
        yield counter


@contextmanager
def pg_service_commit_counter() -> Iterator[Callable[[], int]]:
    """Count the transactions the services' PostgreSQL connections commit.

    A transaction block that ends without an error commits once; a statement
    run outside one (a participant's execute) is a transaction of its own.
    """
    commits = 0
    transaction = PostgresParticipant.transaction
    execute = PostgresParticipant.execute

    @contextmanager
    def traced_transaction(self: PostgresParticipant) -> Iterator[Any]:
        nonlocal commits
        with transaction(self) as cursor:
            yield cursor
        commits += 1

    def traced_execute(self: PostgresParticipant, sql: str, params: Any = ()) -> int:
        nonlocal commits
        commits += 1
        return execute(self, sql, params)

    PostgresParticipant.transaction = traced_transaction  # type: ignore[method-assign]
    PostgresParticipant.execute = traced_execute  # type: ignore[method-assign]
    try:
        yield lambda: commits
    finally:
        PostgresParticipant.transaction = transaction  # type: ignore[method-assign]
        PostgresParticipant.execute = execute  # type: ignore[method-assign]


@contextmanager
def sqlite_service_commit_counter(store: SqliteStore) -> Iterator[Callable[[], int]]:
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


def log_commits(store: SagaStore) -> int:
    """Transactions the log has committed so far (group commits count once)."""
    if isinstance(store, PostgresStore):
        return store.commits
    assert isinstance(store, SqliteStore)
    return store._writer.batches


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def http_services(directory: Path, delay: float = 0.0) -> Iterator[dict[str, str]]:
    """Flight, hotel and car as `saga serve` processes on fresh databases; their URLs.

    `delay`: seconds each reservation waits before it is served (`--delay`).
    """
    directory.mkdir()
    urls: dict[str, str] = {}
    children: list[subprocess.Popen[bytes]] = []
    try:
        for name in ("flight", "hotel", "car"):
            port = _free_port()
            command = [sys.executable, "-m", "saga_cli", "--quiet", "serve", name]
            command += ["--port", str(port), "--db", str(directory / f"{name}.db")]
            command += ["--delay", str(delay)]
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


def dropping_tracer() -> Any:
    """A Tracing on an SDK provider whose batch exporter drops every span."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    from saga_cli.tracing import Tracing

    class Dropping(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Dropping()))
    return Tracing(provider)


def run_scenario(
    url: str,
    concurrency: int,
    failure_rate: float,
    count: int,
    seed: int,
    full: bool,
    services: Mapping[str, str] | None = None,
    latency: float = 0.0,
    tracing: bool = False,
) -> dict[str, Any]:
    """Run `count` bookings on a fresh log at `url`; return rate, latency, commits, CPU.

    With `services`, the reservation services are those remote ones (their
    own commits are not counted: they happen in other processes). With
    `latency`, every in-process flight, hotel and car call waits that long
    first, as a call to a remote service would (remote ones are started
    with `saga serve --delay` instead). With `tracing`, the engine makes its
    OpenTelemetry spans (an SDK provider whose batch exporter drops them: the
    cost of making and ending spans, not of shipping them).
    """
    store = open_store(url)
    batch = requests(count, failure_rate, seed)
    faults = None
    if latency and not services:
        faults = FaultPlan(slow={name: latency for name in ("flight", "hotel", "car")})
    with service_commit_counter(store) as service_commits:
        travel = TravelBooking(store, payment=full, services=services, faults=faults)
        if tracing:
            travel.runner.tracing = dropping_tracer()
        travel.restock(10 * count + 100)
        warm = batch[: min(50, count)]
        counted_from = service_commits()
        travel.runner.run_many(travel.definition, (travel.payload_of(r) for r in warm))
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
    log_commits_before = log_commits(store)
    cpu_started = time.process_time()
    started = time.perf_counter()
    outcomes = travel.runner.run_many(
        travel.definition, (travel.payload_of(r) for r in batch), concurrency=concurrency
    )
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    commits = log_commits(store) - log_commits_before
    report = travel.check()
    travel.close()
    store.close()
    latencies.sort()
    statuses = [o.status for o in outcomes]
    return {
        "services": "http" if services else "in-process",
        "latency_ms": round(latency * 1000, 1),
        "concurrency": concurrency,
        "car_failure_rate": failure_rate,
        "sagas": count,
        "sagas_per_second": round(count / elapsed, 1),
        "p50_ms": round(1000 * statistics.median(latencies), 3),
        "p99_ms": round(1000 * latencies[int(0.99 * (len(latencies) - 1))], 3),
        "log_commits_per_saga": round(commits / count, 2),
        "service_commits_per_saga": (
            None if services_per_saga is None else round(services_per_saga, 2)
        ),
        "cpu_ms_per_saga": round(1000 * cpu / count, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "completed": statuses.count(SagaStatus.COMPLETED),
        "compensated": statuses.count(SagaStatus.COMPENSATED),
        "consistent": report.consistent,
    }


def log_rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    """Rows of a read-only query on the log at `url`, SQLite or PostgreSQL."""
    if is_postgres_url(url):
        import psycopg

        with psycopg.connect(libpq_url(url)) as db:
            return [tuple(row) for row in db.execute(sql).fetchall()]
    connection = sqlite3.connect(SqliteSettings(url).path)
    try:
        return connection.execute(sql).fetchall()
    finally:
        connection.close()


def run_workers(
    url: str,
    workers: int,
    concurrency: int,
    failure_rate: float,
    count: int,
    seed: int,
    full: bool,
    latency: float = 0.0,
) -> dict[str, Any]:
    """Submit `count` bookings to the log at `url`, then let `workers` processes drain them.

    With `latency`, each worker's flight, hotel and car calls wait that long first.
    """
    store = open_store(url)
    travel = TravelBooking(store, payment=full)
    travel.restock(10 * count + 100)
    travel.orchestrator.submit_many(
        travel.definition, [r.to_payload() for r in requests(count, failure_rate, seed)]
    )
    command = [sys.executable, "-m", "saga_cli", "--db", url, "worker", "--exit-when-idle"]
    command += ["--concurrency", str(concurrency), "--poll", "0.05", "--json"]
    if latency:
        command += [f"--slow={name}:{latency}" for name in ("flight", "hotel", "car")]
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
    ((first_claim, last_end),) = log_rows(
        url,
        "SELECT MIN(CASE WHEN type='saga_resumed' THEN at END),"
        " MAX(CASE WHEN type IN ('saga_completed','saga_compensated','saga_stuck') THEN at END)"
        " FROM saga_event",
    )
    statuses = dict(log_rows(url, "SELECT status, COUNT(*) FROM saga_execution GROUP BY 1"))
    report = travel.check()
    travel.close()
    store.close()
    drained = last_end - first_claim
    return {
        "workers": workers,
        "worker_concurrency": concurrency,
        "latency_ms": round(latency * 1000, 1),
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
    """The --workers tables: N worker processes draining submitted bookings, per backend."""
    counts = [int(n) for n in args.workers.split(",")]
    full = args.saga == "full"
    tables: list[dict[str, Any]] = []
    for db in args.db or ["sqlite"]:
        scenarios = []
        if is_postgres_url(db):
            for n in counts:
                with pg_database(db) as url:
                    scenarios.append(
                        run_workers(
                            url,
                            n,
                            args.worker_concurrency,
                            args.concurrent_failure_rate,
                            args.sagas,
                            args.seed,
                            full,
                            args.latency,
                        )
                    )
            backend = f"PostgreSQL {safe_url(db).rsplit('/', 1)[0]}"
        else:
            with tempfile.TemporaryDirectory(prefix="saga-bench-") as tmp:
                for n in counts:
                    url = f"sqlite:///{Path(tmp) / f'workers{n}.db'}?{query}"
                    scenarios.append(
                        run_workers(
                            url,
                            n,
                            args.worker_concurrency,
                            args.concurrent_failure_rate,
                            args.sagas,
                            args.seed,
                            full,
                            args.latency,
                        )
                    )
            backend = f"SQLite (WAL, synchronous={args.synchronous})"
        tables.append({"backend": backend, "worker_scenarios": scenarios})
    print(
        f"saga worker processes draining {args.sagas} submitted bookings ({args.saga} saga)"
        f" (K={args.worker_concurrency} each, car failure rate"
        f" {args.concurrent_failure_rate:.0%}, {args.latency * 1000:g} ms per flight, hotel"
        " and car call)"
    )
    for table in tables:
        print(f"\n{table['backend']}")
        print(
            f"{'workers':>8}{'exec/s':>9}{'drain s':>9}{'wall s':>8}{'ok':>7}{'comp':>6}"
            f"{'left':>6}{'check':>7}  per worker"
        )
        for s in table["worker_scenarios"]:
            print(
                f"{s['workers']:>8}{s['executions_per_second']:>9.1f}{s['drain_seconds']:>9.2f}"
                f"{s['wall_seconds']:>8.2f}{s['completed']:>7}{s['compensated']:>6}"
                f"{s['unfinished']:>6}{'ok' if s['consistent'] else 'FAIL':>7}  {s['per_worker']}"
            )
    print("exec/s: from the first claim to the last terminal record; wall: with process start-up")
    if args.json:
        args.json.write_text(json.dumps({"backends": tables}, indent=2) + "\n")
    scenarios = [s for t in tables for s in t["worker_scenarios"]]
    return 0 if all(s["consistent"] and not s["unfinished"] for s in scenarios) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Throughput of the travel-booking saga.")
    parser.add_argument("--sagas", type=int, default=2000, help="sagas per scenario")
    parser.add_argument("--concurrency", default="1,2,4,8", help="comma-separated K values")
    parser.add_argument(
        "--sequential-sagas",
        type=int,
        metavar="N",
        help="sagas of the K=1 scenarios (default: --sagas); with --latency they take long",
    )
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
    parser.add_argument(
        "--services",
        choices=["in-process", "http"],
        default="in-process",
        help="http: run every scenario over HTTP too (saga serve processes), beside in-process",
    )
    parser.add_argument(
        "--latency",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="every flight, hotel and car call waits this long first, as a remote call would"
        " (in-process: --slow; over HTTP: saga serve --delay; workers: --slow)",
    )
    parser.add_argument(
        "--tracing",
        action="store_true",
        help="the engine makes its OpenTelemetry spans (the otel extra; dropped, not shipped)",
    )
    parser.add_argument(
        "--db",
        action="append",
        metavar="sqlite|URL",
        help="a backend to measure (repeatable, all in one run): `sqlite` (default), or a"
        " postgresql+psycopg:// server URL (each scenario gets a fresh database on it)",
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
    full = args.saga == "full"

    def count(k: int) -> int:
        sequential: int | None = args.sequential_sagas
        total: int = args.sagas
        return sequential if k == 1 and sequential else total

    transports = ["in-process", "http"] if args.services == "http" else ["in-process"]
    services_root = Path(tempfile.mkdtemp(prefix="saga-bench-services-"))

    @contextmanager
    def services_for(transport: str, k: int, rate: float) -> Iterator[dict[str, str] | None]:
        if transport != "http":
            yield None
            return
        where = services_root / f"{uuid.uuid4().hex[:8]}-k{k}-fail{int(rate * 100)}"
        with http_services(where, args.latency) as urls:
            yield urls

    results: list[dict[str, Any]] = []
    for db in args.db or ["sqlite"]:
        if is_postgres_url(db):
            raw = raw_pg_commit_rate(db, args.raw_commits)
            scenarios = []
            for k, rate in plan:
                for services in transports:
                    with pg_database(db) as url, services_for(services, k, rate) as urls:
                        scenarios.append(
                            run_scenario(
                                url,
                                k,
                                rate,
                                count(k),
                                args.seed,
                                full,
                                urls,
                                args.latency,
                                args.tracing,
                            )
                        )
            backend = f"PostgreSQL {safe_url(db).rsplit('/', 1)[0]}"
        elif db == "sqlite":
            with tempfile.TemporaryDirectory(prefix="saga-bench-") as tmp:
                directory = Path(tmp)
                raw = raw_commit_rate(directory, args.synchronous, args.raw_commits)
                scenarios = []
                for k, rate in plan:
                    for services in transports:
                        name = f"{services}-k{k}-fail{int(rate * 100)}"
                        with services_for(services, k, rate) as urls:
                            scenarios.append(
                                run_scenario(
                                    f"sqlite:///{directory}/{name}.db?{query}",
                                    k,
                                    rate,
                                    count(k),
                                    args.seed,
                                    full,
                                    urls,
                                    args.latency,
                                    args.tracing,
                                )
                            )
            backend = f"SQLite (WAL, synchronous={args.synchronous})"
        else:
            parser.error(f"--db takes `sqlite` or a postgresql URL, not {db!r}")
        results.append({"backend": backend, "raw_commits_per_second": raw, "scenarios": scenarios})
    print(f"saga: {args.saga}")
    for result in results:
        print_table(result["backend"], result["raw_commits_per_second"], result["scenarios"])
    print(
        "x raw: raw commits that fit in the time of one saga; log c.: committed transactions of"
        " the log per saga; svc c.: the services' own commits per saga"
    )
    if args.json:
        for result in results:
            result["raw_commits_per_second"] = round(result["raw_commits_per_second"], 1)
        args.json.write_text(json.dumps({"backends": results}, indent=2) + "\n")
    return 0 if all(s["consistent"] for r in results for s in r["scenarios"]) else 1


def print_table(backend: str, raw: float, scenarios: list[dict[str, Any]]) -> None:
    print()
    print(f"{backend}: raw committed single-row inserts {raw:,.0f}/s (same machine, same run)")
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


if __name__ == "__main__":
    sys.exit(main())
