"""Shared fixtures: a fresh saga log per test and a way to run the real `saga` binary."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from saga_cli.store import SagaStore, open_store


def saga_executable() -> str:
    """The installed console script next to this interpreter (never a PATH lookup)."""
    candidate = Path(sys.executable).with_name("saga")
    if candidate.exists():
        return str(candidate)
    found = shutil.which("saga")
    assert found, "the saga console script is not installed"
    return found


def cli_env(**extra: str) -> dict[str, str]:
    """Environment for CLI subprocesses: fixed width, no colour, no SAGA_DB leaking in."""
    env = {k: v for k, v in os.environ.items() if k != "SAGA_DB"}
    env.update({"COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"})
    env.update(extra)
    return env


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


@dataclass
class SagaCli:
    """Runs `saga --db <db> …` in a subprocess and returns its exit code and output."""

    db: Path

    def __call__(self, *args: str, timeout: float = 120, **env: str) -> CliResult:
        done = subprocess.run(
            [saga_executable(), "--db", str(self.db), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=cli_env(**env),
            stdin=subprocess.DEVNULL,
        )
        return CliResult(done.returncode, done.stdout, done.stderr)

    def popen(self, *args: str, **env: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [saga_executable(), "--db", str(self.db), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=cli_env(**env),
            stdin=subprocess.DEVNULL,
        )


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """Path of a saga log that does not exist yet."""
    return tmp_path / "saga.db"


@pytest.fixture
def saga(db_path: Path) -> SagaCli:
    """The real `saga` command bound to a fresh log."""
    return SagaCli(db_path)


@pytest.fixture
def store(db_path: Path) -> Iterator[SagaStore]:
    """A migrated store on a fresh file, closed after the test."""
    opened = open_store(str(db_path))
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture(scope="session")
def migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saga log at the newest schema, made once; tests copy it instead of migrating."""
    path = tmp_path_factory.mktemp("template") / "saga.db"
    open_store(str(path)).close()
    for suffix in ("-wal", "-shm", "-journal"):
        assert not Path(f"{path}{suffix}").exists(), f"{suffix} left behind by the migration"
    return path


@pytest.fixture
def migrated(saga: SagaCli, db_path: Path, migrated_template: Path) -> SagaCli:
    """The real `saga` command bound to a fresh, already migrated log."""
    shutil.copyfile(migrated_template, db_path)
    return saga
