"""The README's HTTP demo, driven as its three terminals would be, on free loopback ports.

The block is prose for three terminals, so it is not run line by line: this
driver does what it says (checking that it still says it), with the ports
8001-8003 moved to free ones: start the three services, restock, book in
bulk through them, SIGKILL the hotel service mid-run, bring it back on the
same port and database, then close its breaker, resume what got stuck and
audit the whole log (every section before this one included).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import httpx

from readme.blocks import Block
from readme.session import BIN, Session

SAYS = (
    "$ saga serve all",
    "$ export SAGA_SERVICES=http://127.0.0.1:8001,http://127.0.0.1:8002,http://127.0.0.1:8003",
    "$ saga inventory --restock 1000",
    "$ kill -9 <the hotel's pid>",
    "hotel service (pid 14863) exited with code -9",
    "$ saga serve hotel --port 8002 --db hotel-service.db",
    "$ saga list --status stuck",
    "$ saga services --reset hotel",
    "$ saga resume <ID>",
    "$ saga check",
)


def wait_until(condition: Callable[[], object], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def free_ports(count: int) -> int:
    """The first of `count` consecutive free loopback ports."""
    for _ in range(200):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            first = int(probe.getsockname()[1])
        if first + count > 65535:
            continue
        try:
            for port in range(first, first + count):
                with socket.socket() as taken:
                    taken.bind(("127.0.0.1", port))
        except OSError:
            continue
        return first
    raise AssertionError("no consecutive free ports")


class Terminal:
    """A long-running command whose output is collected as it comes."""

    def __init__(self, session: Session, *args: str) -> None:
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            args,
            cwd=session.cwd,
            env=session.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def said(self, pattern: str) -> re.Match[str] | None:
        for line in list(self.lines):
            found = re.search(pattern, line)
            if found:
                return found
        return None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(timeout=10)


def healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=1, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


def reservations(url: str) -> int:
    try:
        return len(httpx.get(f"{url}/reservations", timeout=5, trust_env=False).json())
    except httpx.HTTPError:
        return 0


def breaker(log: Path, service: str) -> str | None:
    """`service`'s breaker state as the log keeps it (None: never recorded)."""
    with closing(sqlite3.connect(log, timeout=30)) as db:
        row = db.execute("SELECT state FROM circuit_breaker WHERE service=?", (service,)).fetchone()
    return None if row is None else str(row[0])


def run_http_demo(session: Session, block: Block, section: str) -> None:
    """Do what the README's HTTP demo (`block`, in `section`) says; end consistent."""
    for line in SAYS:
        assert line in section, f"the README's HTTP demo no longer says {line!r}"
    count = int(re.search(r"saga simulate --count (\d+) --json", block.text).group(1))  # type: ignore[union-attr]
    first = free_ports(3)
    urls = [f"http://127.0.0.1:{first + offset}" for offset in range(3)]
    saga = str(BIN / "saga")
    services = Terminal(session, saga, "serve", "all", "--port", str(first))
    hotel_again: Terminal | None = None
    try:
        wait_until(lambda: all(healthy(url) for url in urls), "the three services")
        found = services.said(r"^hotel: pid (\d+), ")
        assert found, services.lines
        hotel_pid = int(found.group(1))
        session.env["SAGA_SERVICES"] = ",".join(urls)
        assert session.run("saga inventory --restock 1000").code == 0
        bookings = Terminal(session, saga, "simulate", "--count", str(count), "--json")
        # terminal 3, while it runs: kill the hotel service without warning
        wait_until(lambda: reservations(urls[1]) >= count // 4, "bookings at the hotel")
        os.kill(hotel_pid, signal.SIGKILL)
        wait_until(
            lambda: services.said(rf"hotel service \(pid {hotel_pid}\) exited with code -9"),
            "terminal 1 to report the hotel's death",
        )
        # a few seconds later (its breaker opened meanwhile), bring it back
        wait_until(
            lambda: (
                breaker(session.cwd / "saga.db", "hotel") == "open"
                or bookings.process.poll() is not None
            ),
            "the hotel's breaker to open",
        )
        hotel_again = Terminal(
            session, saga, "serve", "hotel", "--port", str(first + 1), "--db", "hotel-service.db"
        )
        wait_until(lambda: healthy(urls[1]), "the hotel back")
        assert bookings.process.wait(timeout=300) == 0, bookings.lines
        bookings.stop()
        summary = json.loads("\n".join(bookings.lines))
        assert summary["count"] == count, summary
        # the hotel's death was noticed: steps failed (a booking at a reservation then
        # compensates; one past its pivot waits in `confirm` for the hotel to return)
        assert summary["failures"], summary
        # then: close the breaker, resume what got stuck, audit everything
        listed = session.run("saga list --status stuck --json")
        assert listed.code == 0, listed
        assert session.run("saga services --reset hotel").code == 0
        for row in json.loads(listed.output):
            resumed = session.run(f"saga resume {row['id']}")
            # past its pivot it completes; a stuck compensation of an earlier section ends
            assert resumed.code in (0, 3), resumed
        checked = session.run("saga check")
        assert checked.code == 0, checked
        assert checked.output.startswith("consistent: "), checked
    finally:
        for terminal in (hotel_again, services):
            if terminal is not None:
                terminal.stop()
        session.env.pop("SAGA_SERVICES", None)
