"""Terminal conventions: -v/--quiet, logs on stderr, NO_COLOR, completion, a light --help."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SagaCli, cli_env, saga_executable
from support import BOOKING, run_python

COLOUR = re.compile(r"\x1b\[(?:[0-9;]*;)?(?:3[0-8]|9[0-7])(?:;[0-9;]*)?m")
BENCH = Path(__file__).resolve().parents[2] / "bench" / "log_scale.py"


def test_verbose_logs_go_to_stderr_and_stdout_stays_json(migrated: SagaCli) -> None:
    assert migrated("book", *BOOKING, "--json").code == 0

    loud = migrated("-v", "stats", "--json")
    plain = migrated("stats", "--json")

    assert loud.code == plain.code == 0
    assert json.loads(loud.stdout)["executions"] == 1
    assert "INFO saga_cli: opened saga log" in loud.stderr
    assert "INFO saga_cli.stats: stats over 1 executions" in loud.stderr
    assert plain.stderr == ""


def test_verbose_and_quiet_together_are_refused(migrated: SagaCli) -> None:
    result = migrated("-v", "--quiet", "list")

    assert result.code == 2
    assert result.stderr.strip() == "Error: --verbose and --quiet exclude each other"


def test_quiet_keeps_errors(migrated: SagaCli) -> None:
    result = migrated("--quiet", "show", "ffff")

    assert result.code == 2
    assert result.stderr.startswith("Error: no execution matches")


def run_coloured(db: Path, *args: str, no_color: bool) -> str:
    env = {k: v for k, v in cli_env().items() if k != "NO_COLOR"}
    env.update({"FORCE_COLOR": "1", "TERM": "xterm-256color"})
    if no_color:
        env["NO_COLOR"] = "1"
    done = subprocess.run(
        [saga_executable(), "--db", str(db), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    return done.stdout


@pytest.mark.parametrize("command", [("list",), ("stats",), ("show", "{id}")])
def test_no_color_removes_every_colour(migrated: SagaCli, command: tuple[str, ...]) -> None:
    booked = migrated("book", *BOOKING, "--fail", "car", "--json").json()["id"]
    args = tuple(a.format(id=booked) for a in command)

    coloured = run_coloured(migrated.db, *args, no_color=False)
    plain = run_coloured(migrated.db, *args, no_color=True)

    assert COLOUR.search(coloured), coloured
    assert not COLOUR.search(plain), plain


def test_shell_completion_script_is_available(saga: SagaCli) -> None:
    # Without a shell among its ancestors (a CI runner, a detached job) Typer
    # cannot detect one; its documented switch makes the option take the name.
    result = saga("--show-completion", "bash", _TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION="1")

    assert result.code == 0, result
    assert "_SAGA_COMPLETE" in result.stdout
    assert "complete " in result.stdout
    assert "--install-completion" in saga("--help").stdout


def test_help_imports_no_heavy_module(tmp_path: Path) -> None:
    heavy = (
        *("sqlalchemy", "sqlmodel", "alembic", "pydantic", "prometheus_client", "rich"),
        *("fastapi", "starlette", "uvicorn", "jinja2", "httpx"),
    )
    code = (
        "import sys\n"
        "sys.argv = ['saga', '--help']\n"
        "from saga_cli.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        f"print('LOADED', sorted(m for m in sys.modules if m.split('.')[0] in {heavy!r}))"
    )
    done = run_python(tmp_path, "-c", code)

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "LOADED []"


def test_log_scale_bench_fills_a_small_log_and_times_every_command(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    done = subprocess.run(
        [sys.executable, str(BENCH), "--db", str(tmp_path / "scale.db"), "--executions", "2000"]
        + ["--repeat", "1", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=240,
    )

    assert done.returncode == 0, done.stderr
    figures = json.loads(out.read_text())
    assert figures["executions"] == 2000
    assert figures["bytes_per_execution"] > 500
    timed = [t["command"] for t in figures["timings"]]
    for command in ("saga --help", "saga list", "saga show", "saga stats"):
        assert any(t.startswith(command) for t in timed), timed
    assert all(t["min"] > 0 for t in figures["timings"])
    pages = [t["page"] for t in figures["pages"]]
    for page in ("/executions", "/executions?cursor=", "/executions/", "/stats", "/stuck"):
        assert any(p.startswith(page) for p in pages), pages
    assert all(0 < t["min"] <= t["median"] <= t["max"] for t in figures["pages"])
