"""Real `saga serve` processes on free loopback ports, and reads of their databases."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from conftest import cli_env, saga_executable
from support import SERVICES, wait_for

HOST = "127.0.0.1"


def free_port() -> int:
    """A loopback port nobody listens on now (uvicorn's CLI cannot bind port 0 for us)."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


@dataclass
class ServiceProcess:
    """One `saga serve NAME` subprocess, its port, its database and its log file."""

    name: str
    port: int
    db: Path
    log: Path
    delay: float = 0.0
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self, *, wait: bool = True) -> None:
        """Run `saga serve` for this service; with `wait`, until it answers /health."""
        command = [saga_executable(), "serve", self.name, "--port", str(self.port)]
        command += ["--host", HOST, "--db", str(self.db), "--delay", str(self.delay)]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=cli_env(PYTHONUNBUFFERED="1"),
                stdin=subprocess.DEVNULL,
            )
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        wait_for(self.ready, f"{self.name} service on port {self.port}")

    def ready(self) -> bool:
        assert self.process is not None
        assert self.process.poll() is None, self.log.read_text()
        try:
            response = httpx.get(f"{self.url}/health", timeout=1, trust_env=False)
        except httpx.TransportError:
            return False
        return response.status_code == 200 and response.json()["service"] == self.name

    def kill(self) -> None:
        """SIGKILL the service (no shutdown, replies in flight are lost)."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def rows(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        """A read of the service's own database."""
        with closing(sqlite3.connect(self.db, timeout=30)) as connection:
            return list(connection.execute(sql, params))

    def reservations(self, saga_id: str) -> list[tuple[Any, ...]]:
        """(key, resource, status) of every reservation of one execution here."""
        return self.rows(
            f"SELECT key, resource, status FROM {self.name}_reservation WHERE saga_id=?",
            (saga_id,),
        )

    def capacity(self) -> dict[str, tuple[int, int]]:
        """Resource -> (capacity, available)."""
        rows = self.rows(f"SELECT code, capacity, available FROM {self.name}_resource")
        return {code: (total, available) for code, total, available in rows}


@dataclass
class Services:
    """The three services, each in its own process with its own database."""

    by_name: dict[str, ServiceProcess]

    @property
    def spec(self) -> str:
        """The value of `--services`."""
        return ",".join(self.by_name[name].url for name in SERVICES)

    def __getitem__(self, name: str) -> ServiceProcess:
        return self.by_name[name]


@contextmanager
def running_services(
    directory: Path, template: Path | None = None, **delays: float
) -> Iterator[Services]:
    """Start the three services under `directory`, stop (or reap) them at the end.

    `template`, a migrated database, saves each service its migration (seconds
    on a loaded machine); `delays` hold a service's reserves (`--delay`).
    """
    directory.mkdir(parents=True, exist_ok=True)
    started = Services(
        {
            name: ServiceProcess(
                name,
                free_port(),
                directory / f"{name}.db",
                directory / f"{name}.log",
                delays.get(name, 0.0),
            )
            for name in SERVICES
        }
    )
    try:
        for service in started.by_name.values():
            if template is not None:
                shutil.copyfile(template, service.db)
            service.start(wait=False)  # the three start side by side
        for service in started.by_name.values():
            service.wait_ready()
        yield started
    finally:
        for service in started.by_name.values():
            service.stop()
