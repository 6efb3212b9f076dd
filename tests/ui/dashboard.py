"""Running the real `saga ui` on a log built with the real CLI, for the browser tests.

Each test module builds a log with every kind of execution and serves it
with `saga ui` as a child process on a free port (``--port 0``; the address
is read from what it prints).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import CliResult, SagaCli, cli_env, saga_executable
from playwright.sync_api import Page
from support import query, wait_for

TOKEN = "test-token-for-the-dashboard-0123"
SAGAS = Path(__file__).with_name("sagas.py")
BOOKING = ("--flight", "FL100", "--hotel", "GRAND")


# -- a dashboard process -----------------------------------------------------------------


@dataclass
class Dashboard:
    """A running `saga ui` and the log it serves."""

    process: subprocess.Popen[str]
    url: str
    db: str
    stderr: list[str] = field(default_factory=list)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.get(self.url + path.lstrip("/"), timeout=30, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.post(self.url + path.lstrip("/"), timeout=30, **kwargs)

    def stop(self) -> None:
        stop_process(self.process)


def start_dashboard(db: str, *args: str, cwd: Path | None = None, **env: str) -> Dashboard:
    """`saga --db DB ui --port 0 ARGS…` (run in `cwd`), once it says where it listens.

    Its stderr is read on a thread for as long as it runs (a full pipe would
    stall it), and kept for the test to read.
    """
    process = subprocess.Popen(
        [saga_executable(), "--db", db, "ui", "--port", "0", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=cli_env(**env),
        cwd=cwd,
    )
    lines: list[str] = []

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.append(line)

    threading.Thread(target=read, daemon=True).start()

    def address() -> str | None:
        assert process.poll() is None, "".join(lines)
        found = re.search(r"saga ui on (http://\S+/)", "".join(lines))
        return None if found is None else found.group(1)

    url = wait_for(address, "saga ui to say where it listens", timeout=60)
    assert url is not None
    dashboard = Dashboard(process, url, db, lines)
    wait_for(lambda: dashboard.get("/executions").status_code == 200, "the first page")
    return dashboard


# -- logs with every kind of execution -------------------------------------------------------


def _id_of(result: CliResult) -> str:
    assert result.stdout.strip(), result
    return str(result.json()["id"])


def crashed_booking(saga: SagaCli, car: str) -> str:
    """A booking SIGKILLed right after its car was reserved: running, and interrupted."""
    before = {row[0] for row in query(saga.db, "SELECT id FROM saga_execution")}
    killed = saga("book", *BOOKING, "--car", car, "--crash-at", "car:after")
    assert killed.code == -9, killed
    (new,) = {row[0] for row in query(saga.db, "SELECT id FROM saga_execution")} - before
    return str(new)


def stuck_booking(saga: SagaCli) -> str:
    """A booking whose flight cancellation gives up: stuck (then the flight's breaker is reset)."""
    result = saga(
        "book", *BOOKING, "--car", "SUV", "--fail", "car", "--fail-compensation", "flight:always"
    )
    assert result.code == 4, result
    assert saga("services", "--reset", "flight").code == 0
    return str(
        query(saga.db, "SELECT id FROM saga_execution WHERE status='stuck' ORDER BY created_at")[
            -1
        ][0]
    )


def demo_log(saga: SagaCli) -> dict[str, str]:
    """A log with completed, retried, compensated, stuck and interrupted bookings, by kind."""
    ids = {"interrupted": crashed_booking(saga, "COMPACT")}
    ids["completed"] = _id_of(saga("book", *BOOKING, "--car", "ECONOMY", "--json"))
    ids["retried"] = _id_of(saga("book", *BOOKING, "--flaky", "hotel:1", "--json"))
    ids["compensated"] = _id_of(saga("book", *BOOKING, "--car", "SUV", "--fail", "car", "--json"))
    ids["stuck"] = stuck_booking(saga)
    return ids


def fresh_log(tmp_path_factory: pytest.TempPathFactory, template: Path) -> SagaCli:
    """The real CLI on a new, migrated log in its own directory."""
    db = tmp_path_factory.mktemp("ui") / "saga.db"
    shutil.copyfile(template, db)
    return SagaCli(db)


def event_rows(db: Path, execution_id: str) -> list[tuple[object, ...]]:
    """(seq, type, step, attempt, detail) of an execution's events, in order."""
    return query(
        db,
        "SELECT seq, type, step, attempt, detail FROM saga_event WHERE saga_id=? ORDER BY seq",
        (execution_id,),
    )


def status_of(db: Path, execution_id: str) -> str:
    return str(query(db, "SELECT status FROM saga_execution WHERE id=?", (execution_id,))[0][0])


def wait_for_status(db: Path, execution_id: str, wanted: str, timeout: float = 60) -> None:
    wait_for(lambda: status_of(db, execution_id) == wanted, f"{execution_id} {wanted}", timeout)


def wait_for_event(db: Path, execution_id: str, kind: str, step: str) -> None:
    def seen() -> bool:
        return any(row[1] == kind and row[2] == step for row in event_rows(db, execution_id))

    wait_for(seen, f"{kind} of {step} in {execution_id}")


def stop_process(process: subprocess.Popen[Any]) -> None:
    """Terminate a child the test started (SIGKILL if it lingers) and reap it."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def sign_in(page: Page, dashboard: Dashboard, token: str = TOKEN) -> None:
    page.goto(dashboard.url + "login")
    page.fill("input[name=token]", token)
    page.click("form[action='/login'] button[type=submit]")
    page.wait_for_url(re.compile(r".*/executions$"))
