"""`saga db …`, `--version`, `python -m saga_cli`, and help and README coverage of commands."""

from __future__ import annotations

import json
import subprocess
from importlib.metadata import version
from pathlib import Path

import pytest
import typer
from conftest import SagaCli, cli_env, saga_executable
from support import query, run_python
from typer.core import TyperGroup

from saga_cli.cli import app
from saga_cli.store.migrate import HEAD_REVISION, KNOWN_REVISIONS

README = Path(__file__).resolve().parents[2] / "README.md"


def command_names() -> list[str]:
    """Every command as typed after `saga`: `book`, …, `db upgrade`, `db status`."""
    root = typer.main.get_command(app)
    assert isinstance(root, TyperGroup)
    names: list[str] = []
    for name, command in root.commands.items():
        if isinstance(command, TyperGroup):
            names += [f"{name} {sub}" for sub in command.commands]
        else:
            names.append(name)
    return names


COMMANDS = command_names()


def test_the_command_list_is_the_documented_one() -> None:
    assert sorted(COMMANDS) == sorted(
        [
            "book",
            "run",
            "definitions",
            "list",
            "show",
            "resume",
            "compensate",
            "resolve",
            "cancel",
            "services",
            "simulate",
            "faults",
            "inventory",
            "check",
            "serve",
            "stats",
            "watch",
            "prune",
            "worker",
            "workers",
            "ui",
            "db upgrade",
            "db status",
            "db copy",
            "alerts deliver",
            "alerts test",
        ]
    )


def test_db_upgrade_creates_and_migrates_a_new_log(saga: SagaCli) -> None:
    result = saga("db", "upgrade")

    assert result.code == 0, result
    assert f"revision {HEAD_REVISION}" in result.stdout
    assert query(saga.db, "SELECT version_num FROM alembic_version") == [(HEAD_REVISION,)]
    again = saga("db", "upgrade")
    assert again.code == 0, again
    assert query(saga.db, "SELECT version_num FROM alembic_version") == [(HEAD_REVISION,)]


def test_db_status_of_a_missing_log_lists_every_revision_pending_and_creates_nothing(
    saga: SagaCli,
) -> None:
    result = saga("db", "status")

    assert result.code == 0, result
    assert "none" in result.stdout
    assert f"pending: {', '.join(KNOWN_REVISIONS)}" in result.stdout
    assert not saga.db.exists()


def test_db_status_of_a_migrated_log_has_nothing_pending(migrated: SagaCli) -> None:
    result = migrated("db", "status")

    assert result.code == 0, result
    assert f"revision {HEAD_REVISION}" in result.stdout
    assert f"applied: {', '.join(KNOWN_REVISIONS)}" in result.stdout
    assert "pending: -" in result.stdout


def test_saga_db_environment_variable_selects_the_log(tmp_path: Path) -> None:
    log = tmp_path / "from-env.db"
    done = subprocess.run(
        [saga_executable(), "book", "--flight", "FL100", "--hotel", "GRAND", "--json"],
        capture_output=True,
        text=True,
        env=cli_env(SAGA_DB=str(log)),
        cwd=tmp_path,
        timeout=60,
    )

    assert done.returncode == 0, done.stderr
    assert query(log, "SELECT id FROM saga_execution") == [(json.loads(done.stdout)["id"],)]
    assert not (tmp_path / "saga.db").exists()  # the default was not used


def test_version_prints_the_installed_version(saga: SagaCli) -> None:
    result = saga("--version")

    assert result.code == 0, result
    assert result.stdout.strip() == f"saga {version('saga-cli')}"
    assert not saga.db.exists()


def test_python_dash_m_saga_cli_help(tmp_path: Path) -> None:
    done = run_python(tmp_path, "-m", "saga_cli", "--help")

    assert done.returncode == 0, done.stderr
    assert "Usage: python -m saga_cli" in done.stdout
    for name in COMMANDS:
        assert f"\n  {name.split()[0]} " in done.stdout, name
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_has_help(saga: SagaCli, name: str) -> None:
    result = saga(*name.split(), "--help")

    assert result.code == 0, result
    assert f"Usage: saga {name}" in result.stdout
    assert "Example: saga " in result.stdout
    assert "--help" in result.stdout
    assert not saga.db.exists()


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_appears_in_the_readme(name: str) -> None:
    assert f"saga {name}" in README.read_text(encoding="utf-8")
