"""Fixtures for the crash tests: the real `saga` on a log migrated once per session."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import SagaCli

from saga_cli.store import open_store


@pytest.fixture(scope="session")
def migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saga log at the newest schema, made once; tests copy it instead of migrating."""
    path = tmp_path_factory.mktemp("crash-template") / "saga.db"
    open_store(str(path)).close()
    for suffix in ("-wal", "-shm", "-journal"):
        assert not Path(f"{path}{suffix}").exists(), f"{suffix} left behind by the migration"
    return path


@pytest.fixture
def migrated(saga: SagaCli, db_path: Path, migrated_template: Path) -> SagaCli:
    """The real `saga` command bound to a fresh, already migrated log."""
    shutil.copyfile(migrated_template, db_path)
    return saga
