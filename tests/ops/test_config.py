"""saga.toml: defaults for the options, which the command line and the environment override."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import CliResult, cli_env, saga_executable
from support import BOOKING, assert_one_line_error


def saga_in(cwd: Path, *args: str, **env: str) -> CliResult:
    """`saga ARGS` run in `cwd` with no --db (the configuration may give one)."""
    done = subprocess.run(
        [saga_executable(), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=cli_env(**env),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
    )
    return CliResult(done.returncode, done.stdout, done.stderr)


def test_saga_toml_in_the_directory_gives_the_log(tmp_path: Path) -> None:
    (tmp_path / "saga.toml").write_text('db = "from-config.db"\n')

    booked = saga_in(tmp_path, "book", *BOOKING, "--json")

    assert booked.code == 0, booked.stderr
    assert (tmp_path / "from-config.db").exists() and not (tmp_path / "saga.db").exists()


def test_the_command_line_and_the_environment_win_over_the_file(tmp_path: Path) -> None:
    (tmp_path / "saga.toml").write_text('db = "from-config.db"\n')

    assert saga_in(tmp_path, "--db", "from-flag.db", "book", *BOOKING).code == 0
    assert saga_in(tmp_path, "book", *BOOKING, SAGA_DB="from-env.db").code == 0

    assert (tmp_path / "from-flag.db").exists() and (tmp_path / "from-env.db").exists()
    assert not (tmp_path / "from-config.db").exists()


def test_config_and_saga_config_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "ops.toml").write_text('db = "named.db"\n')
    (tmp_path / "env.toml").write_text('db = "env-named.db"\n')

    assert saga_in(tmp_path, "--config", "ops.toml", "book", *BOOKING).code == 0
    assert saga_in(tmp_path, "book", *BOOKING, SAGA_CONFIG="env.toml").code == 0

    assert (tmp_path / "named.db").exists() and (tmp_path / "env-named.db").exists()


def test_services_from_the_file_reach_every_command_that_takes_them(tmp_path: Path) -> None:
    (tmp_path / "saga.toml").write_text('services = "flight=http://127.0.0.1:9"\n')

    # nothing listens there: each command tries the flight service the file names
    for command in (("book", *BOOKING), ("inventory",)):
        result = saga_in(tmp_path, *command)
        assert_one_line_error(result, 1, "flight service at http://127.0.0.1:9 unreachable")
    # and --services on the command line wins
    flag = saga_in(tmp_path, "inventory", "--services", "flight=http://127.0.0.1:7")
    assert_one_line_error(flag, 1, "flight service at http://127.0.0.1:7 unreachable")


def test_worker_options_come_from_the_worker_table(tmp_path: Path) -> None:
    (tmp_path / "saga.toml").write_text(
        "[worker]\nexit_when_idle = true\nconcurrency = 2\npoll = 0.05\nlease = 5\n"
    )
    assert saga_in(tmp_path, "book", *BOOKING, "--submit").code == 0

    # without --exit-when-idle on the command line it would poll for good
    worked = saga_in(tmp_path, "worker", "--json")

    assert worked.code == 0, worked.stderr
    assert worked.json()["completed"] == 1
    assert "(2 at once)" in worked.stderr


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("db = 3\n", "saga.toml: db must be a string (got 3)"),
        ("bogus = 1\n", "saga.toml: unknown setting bogus"),
        ("[worker]\nconcurrency = 'many'\n", "saga.toml: worker.concurrency must be a whole"),
        ("[alerts]\ncompensation_failures = -1\n", "compensation_failures must be 0"),
        ("[[alerts.webhook]]\nname = 'x'\n", "[[alerts.webhook]] needs url"),
        ("[tracing]\nexporter = 'carrier-pigeon'\n", "tracing: exporter must be one of"),
        ("db = \n", "saga.toml is not valid TOML"),
    ],
)
def test_a_bad_configuration_is_one_line_and_exit_2(
    tmp_path: Path, text: str, fragment: str
) -> None:
    (tmp_path / "saga.toml").write_text(text)

    result = saga_in(tmp_path, "list")

    assert_one_line_error(result, 2, fragment)
    assert not (tmp_path / "saga.db").exists()


def test_a_missing_named_configuration_is_refused(tmp_path: Path) -> None:
    result = saga_in(tmp_path, "--config", "nowhere.toml", "list")
    assert_one_line_error(result, 2, "cannot read the configuration nowhere.toml")
