"""The package as users get it: console script, module entry point, shipped migrations."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import saga_cli
from saga_cli.store.migrate import KNOWN_REVISIONS, migrations_dir, script_revisions


def test_the_suite_runs_against_the_installed_wheel_when_ci_asks_for_it() -> None:
    if os.environ.get("SAGA_EXPECT_INSTALLED") != "1":
        return  # a developer's editable install; scripts/test.sh sets the variable
    package = Path(saga_cli.__file__).resolve().parent
    assert "site-packages" in package.parts, package
    assert migrations_dir().is_relative_to(package)


def test_the_shipped_migrations_are_the_known_revisions() -> None:
    assert (migrations_dir() / "env.py").is_file()
    assert script_revisions() == list(KNOWN_REVISIONS)


def test_python_dash_m_saga_cli_runs_the_cli(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "saga_cli", "--version"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("saga ")


def test_the_public_api_is_exactly_all() -> None:
    for name in saga_cli.__all__:
        assert getattr(saga_cli, name) is not None
    assert sorted(dir(saga_cli)) == sorted(saga_cli.__all__)
