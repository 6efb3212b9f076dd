"""Recovery rate: `saga resume --all` over many interrupted executions.

A child process runs N bookings and "crashes" each one at a crash point (the
crash is raised as an exception the runner does not catch, so the log is left
exactly as a SIGKILL would leave it: a `started` record with no outcome),
then exits, so every lease belongs to a dead process. Then the real CLI,
`saga resume --all`, finishes them all. Reported: executions per second over
the resume window, the delay from launching the command to the first
`saga_resumed` record, the interpreter's own start-up for comparison, and
whether `saga check` is consistent afterwards.

Usage:
    python bench/recovery.py [--executions 10000] [--concurrency 8] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CHILD = """
import dataclasses
import sys
import saga_cli.faults as faults
from saga_cli.booking import TravelBooking
from saga_cli.faults import CrashPoint
from saga_cli.services.travel import SERVICES, STEPS, FaultPlan
from saga_cli.store import open_store

class Crash(BaseException):
    pass

def crash() -> None:
    raise Crash()

faults.die = crash  # the crash point raises instead of SIGKILL, once per booking
db, count = sys.argv[1], int(sys.argv[2])
store = open_store(db)
points = [
    CrashPoint.parse(p, STEPS, SERVICES)
    for p in ("car:before", "hotel:after", "compensate-hotel:before")
]
booking = {str(p): TravelBooking(store, faults=FaultPlan(crash_at=p)) for p in points}
booking[str(points[0])].restock(10 * count + 100)
requests = booking[str(points[0])].random_requests(count, seed=1)
for number, request in enumerate(requests):
    point = points[number % len(points)]
    if point.compensation:
        request = dataclasses.replace(request, fail=("car",))
    try:
        booking[str(point)].book(request)
    except Crash:
        pass
"""


def saga_binary() -> str:
    candidate = Path(sys.executable).with_name("saga")
    return str(candidate) if candidate.exists() else "saga"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Recovery rate of `saga resume --all`.")
    parser.add_argument("--executions", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="saga-recovery-") as tmp:
        db = str(Path(tmp) / "recovery.db")
        subprocess.run([sys.executable, "-c", CHILD, db, str(args.executions)], check=True)
        with sqlite3.connect(db) as conn:
            interrupted = conn.execute(
                "SELECT COUNT(*) FROM saga_execution WHERE status IN ('running','compensating')"
            ).fetchone()[0]
        started = time.perf_counter()
        time.sleep(0)
        launch = time.time()
        done = subprocess.run(
            [
                saga_binary(),
                "--db",
                db,
                "resume",
                "--all",
                "--concurrency",
                str(args.concurrency),
                "--json",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        wall = time.perf_counter() - started
        if done.returncode != 0:
            print(done.stderr, file=sys.stderr)
            return 1
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import saga_cli.cli"], check=True)
        startup = time.perf_counter() - t0
        with sqlite3.connect(db) as conn:
            first = conn.execute(
                "SELECT MIN(at) FROM saga_event WHERE type='saga_resumed'"
            ).fetchone()[0]
            last = conn.execute("SELECT MAX(at) FROM saga_event").fetchone()[0]
            left = conn.execute(
                "SELECT COUNT(*) FROM saga_execution"
                " WHERE status NOT IN ('completed','compensated')"
            ).fetchone()[0]
        check = subprocess.run(
            [saga_binary(), "--db", db, "check", "--json"], capture_output=True, text=True
        )
        consistent = json.loads(check.stdout)["consistent"]
    window = last - first
    results: dict[str, Any] = {
        "interrupted": interrupted,
        "concurrency": args.concurrency,
        "command_seconds": round(wall, 3),
        "resume_window_seconds": round(window, 3),
        "executions_per_second": round(interrupted / window, 1),
        "executions_per_second_whole_command": round(interrupted / wall, 1),
        "first_resume_after_launch_s": round(first - launch, 3),
        "interpreter_and_import_startup_s": round(startup, 3),
        "first_resume_excluding_startup_s": round(first - launch - startup, 3),
        "left_unfinished": left,
        "consistent": consistent,
        "cpus": os.cpu_count(),
    }
    for key, value in results.items():
        print(f"{key:<38}{value}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0 if consistent and left == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
