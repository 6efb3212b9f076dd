"""Read latency at scale: `saga list`, `show`, `stats` and `saga ui`'s pages on N executions.

Fills a saga log to N executions quickly with direct inserts (one transaction
per batch, synchronous=OFF while filling; the schema is the real one, built by
the migrations), then times the commands through the real CLI, each run
several times as a fresh process, and prints min / median / max wall time and
the log's size on disk per execution. Then it starts `saga ui` on the log and
times each dashboard page over HTTP the same way (one process serving them
all, as a dashboard does).

The executions look like the travel saga's: mostly completed, some
compensated at the flight, hotel or car, a few retried, stuck, or left
running by a dead process; ids are random (as uuid4), creation times are
spread uniformly over the last `--days` days (default 30: a million
executions is then about 1,400 an hour, so `saga stats` over its default
hour window sees that many).

A log that already holds M < N executions is grown by N - M, so one file can
be measured at 100k and then at 1M:

    python bench/log_scale.py --db /tmp/scale.db --executions 100000
    python bench/log_scale.py --db /tmp/scale.db --executions 1000000

Usage:
    python bench/log_scale.py [--db PATH] [--executions N] [--days D] [--repeat R]
                              [--fill-only] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

STEPS = ("flight", "hotel", "car", "payment", "confirm", "notify")
RESERVATIONS = {"flight": "FL100", "hotel": "GRAND", "car": "ECONOMY"}
DEAD_OWNER = "bench-host-that-does-not-exist:1:1"
Row = tuple[Any, ...]


def _result(execution_id: str, step: str) -> dict[str, Any]:
    if step in RESERVATIONS:
        return {"reservation": f"{execution_id}:{step}", "resource": RESERVATIONS[step]}
    if step == "payment":
        return {"charge": f"{execution_id}:payment", "amount": 580}
    if step == "confirm":
        return {"confirmed": ["car", "flight", "hotel"]}
    return {"notified": "guest"}


class _Saga:
    """Builds one execution's event rows, advancing a clock step by step."""

    def __init__(self, rng: random.Random, execution_id: str, start: float) -> None:
        self.rng = rng
        self.id = execution_id
        self.at = start
        self.rows: list[Row] = []
        self.add(None, "saga_started", 0, None)

    def add(self, step: str | None, kind: str, attempt: int, detail: dict[str, Any] | None) -> None:
        encoded = None if detail is None else json.dumps(detail, separators=(",", ":"))
        self.rows.append((self.id, len(self.rows) + 1, step, kind, attempt, encoded, self.at))
        self.at += self.rng.expovariate(1 / 0.004)  # ~4 ms between records

    def step(self, name: str, *, fail: str | None = None, flaky: bool = False) -> None:
        attempt = 1
        if flaky:
            self.add(name, "step_started", 1, None)
            error = f"{name} call failed on attempt 1 (injected: the first 1)"
            self.add(name, "step_failed", 1, {"error": error, "retry_at": self.at + 0.02})
            attempt = 2
        self.add(name, "step_started", attempt, None)
        if fail is not None:
            self.add(name, "step_failed", attempt, {"error": fail, "kind": "BusinessError"})
        else:
            self.add(name, "step_succeeded", attempt, {"result": _result(self.id, name)})

    def compensate(self, names: list[str], *, give_up: str | None = None) -> None:
        for name in reversed(names):
            if name == give_up:
                for attempt in range(1, 6):
                    self.add(name, "compensation_started", attempt, None)
                    self.add(name, "compensation_failed", attempt, {"error": f"{name} is down"})
                return
            self.add(name, "compensation_started", 1, None)
            self.add(name, "compensation_succeeded", 1, None)


def _execution(rng: random.Random, execution_id: str, start: float) -> tuple[Row, list[Row]]:
    """One execution row and its events, with the travel saga's mix of outcomes."""
    saga = _Saga(rng, execution_id, start)
    draw = rng.random()
    owner: str | None = None
    lease: float | None = None
    if draw < 0.80:  # completed
        for name in STEPS:
            saga.step(name)
        status, step, last = "completed", "notify", "saga_completed"
    elif draw < 0.85:  # completed after a retried hotel
        for name in STEPS:
            saga.step(name, flaky=name == "hotel")
        status, step, last = "completed", "notify", "saga_completed"
    elif draw < 0.985:  # compensated at flight, hotel or car
        failing = rng.randrange(3)
        for name in STEPS[:failing]:
            saga.step(name)
        saga.step(STEPS[failing], fail=f"{STEPS[failing]} declined the booking")
        saga.compensate(list(STEPS[:failing]))
        status, step, last = "compensated", STEPS[0], "saga_compensated"
    elif draw < 0.995:  # stuck: the hotel's cancellation gave up
        saga.step("flight")
        saga.step("hotel")
        saga.step("car", fail="car declined the booking")
        saga.compensate(["flight", "hotel"], give_up="hotel")
        status, step, last = "stuck", "hotel", "saga_stuck"
    else:  # running, its process dead: interrupted
        saga.step("flight")
        saga.add("hotel", "step_started", 1, None)
        status, step, last = "running", "hotel", ""
        owner, lease = DEAD_OWNER, saga.at + 30
    if last:
        saga.add(None, last, 0, None)
    payload = json.dumps(
        {"flight": "FL100", "hotel": "GRAND", "car": "ECONOMY", "customer": "guest", "fail": []},
        separators=(",", ":"),
    )
    row = (
        execution_id,
        "travel-booking",
        payload,
        status,
        step,
        start,
        saga.rows[-1][6],
        owner,
        lease,
        len(saga.rows),
    )
    return row, saga.rows


def count_executions(path: Path) -> int:
    with closing(sqlite3.connect(path)) as db:
        return int(db.execute("SELECT COUNT(*) FROM saga_execution").fetchone()[0])


def fill(path: Path, executions: int, *, days: float, seed: int, batch: int = 20_000) -> int:
    """Grow the log at `path` to `executions` executions; returns how many were added."""
    from saga_cli.store import open_store

    open_store(str(path)).close()  # the real schema, from the migrations
    have = count_executions(path)
    missing = max(0, executions - have)
    rng = random.Random(seed + have)
    now = time.time()
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=DELETE")
        db.execute("PRAGMA synchronous=OFF")
        db.execute("PRAGMA cache_size=-1000000")  # 1 GB: random ids touch every page
        for start in range(0, missing, batch):
            rows: list[Row] = []
            events: list[Row] = []
            for _ in range(min(batch, missing - start)):
                created = now - rng.random() * days * 86400
                row, its_events = _execution(rng, f"{rng.getrandbits(128):032x}", created)
                rows.append(row)
                events.extend(its_events)
            db.execute("BEGIN")
            db.executemany(
                "INSERT INTO saga_execution (id, saga, payload, status, step, created_at,"
                " updated_at, owner, lease_expires_at, version) VALUES (?,?,?,?,?,?,?,?,?,?)",
                rows,
            )
            db.executemany(
                "INSERT INTO saga_event (saga_id, seq, step, type, attempt, detail, at)"
                " VALUES (?,?,?,?,?,?,?)",
                events,
            )
            db.execute("COMMIT")
            print(f"  filled {have + start + len(rows):,}", file=sys.stderr, end="\r")
        db.execute("PRAGMA journal_mode=WAL")
    finally:
        db.close()
    if missing:
        print(file=sys.stderr)
    return missing


def _saga(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    saga = str(Path(sys.executable).with_name("saga"))
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.run(
        [saga, "--db", str(db), *args], capture_output=True, text=True, env=env, check=False
    )


def _timed(db: Path, args: tuple[str, ...], repeat: int) -> dict[str, Any]:
    seconds: list[float] = []
    for _ in range(repeat):
        began = time.perf_counter()
        done = _saga(db, *args)
        seconds.append(time.perf_counter() - began)
        if done.returncode != 0:
            raise SystemExit(f"saga {' '.join(args)} failed ({done.returncode}): {done.stderr}")
    return {
        "command": "saga " + " ".join(args),
        "min": min(seconds),
        "median": statistics.median(seconds),
        "max": max(seconds),
    }


def _samples(db: Path) -> tuple[str, str | None, str]:
    """An execution from the middle of the list, a stuck one, and the cursor of the middle."""
    with closing(sqlite3.connect(db)) as connection:
        middle = connection.execute(
            "SELECT id, created_at FROM saga_execution ORDER BY created_at DESC, id DESC"
            " LIMIT 1 OFFSET (SELECT COUNT(*) / 2 FROM saga_execution)"
        ).fetchone()
        stuck = connection.execute(
            "SELECT id FROM saga_execution WHERE status='stuck' LIMIT 1"
        ).fetchone()
    from saga_cli.store import open_store
    from saga_cli.views import page_cursor

    store = open_store(str(db))
    try:
        token = page_cursor(store.get(middle[0]))
    finally:
        store.close()
    return str(middle[0]), None if stuck is None else str(stuck[0]), token


def commands(db: Path) -> Iterator[tuple[str, ...]]:
    """The commands timed: listing, paging, filters, one execution, and stats."""
    middle, stuck, token = _samples(db)
    yield ("--help",)
    yield ("list",)
    yield ("list", "--status", "stuck")
    yield ("list", "--saga", "travel-booking", "--status", "compensated", "--since", "7d")
    yield ("list", "--cursor", token)
    yield ("show", middle[:10])
    if stuck is not None:
        yield ("show", stuck[:10])
    yield ("stats",)
    yield ("stats", "--since", "24h")
    yield ("stats", "--since", "7d", "--json")
    yield ("stats", "--format", "prometheus")


def pages(db: Path) -> Iterator[str]:
    """The dashboard's pages timed: the same questions as the commands, asked of `saga ui`."""
    middle, stuck, token = _samples(db)
    yield "/executions"
    yield "/executions?status=stuck"
    yield "/executions?saga=travel-booking&status=compensated&since=7d"
    yield f"/executions?cursor={token}"
    yield f"/executions/{middle}"
    if stuck is not None:
        yield f"/executions/{stuck}"
    yield "/stats"
    yield "/stats?since=24h"
    yield "/stats?since=7d"
    yield "/stuck"
    yield "/workers"


def _dashboard(db: Path) -> tuple[subprocess.Popen[str], str]:
    """Start `saga ui` on a free port; returns the process and its address."""
    saga = str(Path(sys.executable).with_name("saga"))
    process = subprocess.Popen(
        [saga, "--db", str(db), "ui", "--port", "0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    assert process.stderr is not None
    said = process.stderr.readline()
    if not said.startswith("saga ui on "):
        process.kill()
        raise SystemExit(f"saga ui did not start: {said}{process.stderr.read()}")
    # Keep reading what it says, so a full pipe never stalls it.
    threading.Thread(target=process.stderr.read, daemon=True).start()
    return process, said.split()[3].rstrip("/")


def time_pages(db: Path, repeat: int) -> list[dict[str, Any]]:
    """Wall time of each page's request through HTTP, after one untimed first request.

    The first request of a page compiles its templates; it is reported as
    `first`, and min / median / max are of the `repeat` requests after it.
    """
    import httpx

    process, url = _dashboard(db)
    timings: list[dict[str, Any]] = []
    try:
        with httpx.Client(base_url=url, timeout=60) as client:
            for path in pages(db):
                seconds: list[float] = []
                for _ in range(repeat + 1):
                    began = time.perf_counter()
                    response = client.get(path)
                    seconds.append(time.perf_counter() - began)
                    if response.status_code != 200:
                        raise SystemExit(f"GET {path} answered {response.status_code}")
                timings.append(
                    {
                        "page": path,
                        "first": seconds[0],
                        "min": min(seconds[1:]),
                        "median": statistics.median(seconds[1:]),
                        "max": max(seconds[1:]),
                    }
                )
    finally:
        process.terminate()
        process.wait(timeout=30)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", type=Path, help="log to fill and read (default: a temp file)")
    parser.add_argument("--executions", type=int, default=100_000)
    parser.add_argument("--days", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--fill-only", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        db = options.db or Path(scratch) / "saga.db"
        began = time.perf_counter()
        added = fill(db, options.executions, days=options.days, seed=options.seed)
        filled_in = time.perf_counter() - began
        _saga(db, "db", "upgrade")  # checkpoint-free open: the timed runs start warm
        total = count_executions(db)
        size = sum(
            os.path.getsize(f"{db}{suffix}")
            for suffix in ("", "-wal", "-shm")
            if os.path.exists(f"{db}{suffix}")
        )
        report: dict[str, Any] = {
            "executions": total,
            "added": added,
            "fill_seconds": round(filled_in, 1),
            "bytes": size,
            "bytes_per_execution": round(size / max(total, 1)),
            "timings": [],
        }
        print(
            f"{total:,} executions ({added:,} added in {filled_in:.1f} s); "
            f"{size / 1e6:,.1f} MB on disk, {report['bytes_per_execution']:,} bytes per execution"
        )
        if not options.fill_only:
            print(f"{'command':<78} {'min':>7} {'median':>7} {'max':>7}")
            for args in commands(db):
                timing = _timed(db, args, options.repeat)
                report["timings"].append(timing)
                print(
                    f"{timing['command'][:78]:<78} {timing['min']:7.3f} "
                    f"{timing['median']:7.3f} {timing['max']:7.3f}"
                )
        if not options.fill_only:
            print(f"{'saga ui page':<70} {'first':>7} {'min':>7} {'median':>7} {'max':>7}")
            report["pages"] = time_pages(db, options.repeat)
            for timing in report["pages"]:
                print(
                    f"{timing['page'][:70]:<70} {timing['first']:7.3f} {timing['min']:7.3f} "
                    f"{timing['median']:7.3f} {timing['max']:7.3f}"
                )
        if options.json:
            options.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
