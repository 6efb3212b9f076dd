"""The CLI on a log that holds only a user's executions, not the travel demo's."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import pytest
from conftest import CliResult, SagaCli, cli_env, saga_executable
from support import assert_one_line_error, execute, query

LONG_NAME = "nightly-ledger-reconciliation-between-the-warehouse-and-the-accounting-system"

MODULE = f'''
"""A user's sagas: one step, one with a compensation and a retried step."""
from saga_cli import RetryPolicy, Saga, StepContext

tiny = Saga("tiny")


@tiny.step(kind="retriable", retry=RetryPolicy(max_attempts=3, initial_delay=0.01))
def hello(ctx: StepContext) -> str:
    return "hello"


reconcile = Saga("{LONG_NAME}")


@reconcile.step()
def take(ctx: StepContext) -> None:
    pass


@take.compensation
def give_back(ctx: StepContext) -> None:
    pass


@reconcile.step(kind="pivot")
def settle(ctx: StepContext) -> None:
    pass
'''


@pytest.fixture
def sagas(tmp_path: Path) -> Path:
    path = tmp_path / "mine.py"
    path.write_text(textwrap.dedent(MODULE))
    return path


def piped(saga: SagaCli, *args: str, columns: str | None = None) -> CliResult:
    """Run `saga` with stdout to a pipe and no COLUMNS, as `saga list | grep x` or cron does."""
    environment = cli_env()
    del environment["COLUMNS"]
    if columns is not None:
        environment["COLUMNS"] = columns
    done = subprocess.run(
        [saga_executable(), "--db", str(saga.db), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=environment,
        stdin=subprocess.DEVNULL,
    )
    return CliResult(done.returncode, done.stdout, done.stderr)


def test_piped_output_is_not_wrapped_at_80_columns(migrated: SagaCli, sagas: Path) -> None:
    assert migrated("run", f"{sagas}:reconcile", "--payload", "{}").code == 0

    listed = piped(migrated, "list")
    shown = piped(migrated, "definitions")

    assert listed.code == 0, listed
    assert any(LONG_NAME in line for line in listed.stdout.splitlines()), listed.stdout
    assert max(map(len, listed.stdout.splitlines())) > 80
    assert shown.code == 0, shown
    assert f"{LONG_NAME}  (version " in shown.stdout, shown.stdout


def test_piped_output_still_honours_columns(migrated: SagaCli, sagas: Path) -> None:
    assert migrated("run", f"{sagas}:reconcile", "--payload", "{}").code == 0

    listed = piped(migrated, "list", columns="60")

    assert listed.code == 0, listed
    assert max(map(len, listed.stdout.splitlines())) <= 60
    assert not any(LONG_NAME in line for line in listed.stdout.splitlines())


def test_run_takes_the_name_the_saga_was_given(migrated: SagaCli, sagas: Path) -> None:
    by_name = migrated("run", f"{sagas}:{LONG_NAME}", "--payload", "{}", "--json")
    by_variable = migrated("run", f"{sagas}:reconcile", "--payload", "{}", "--json")

    assert by_name.code == 0, by_name
    assert by_name.json()["saga"] == by_variable.json()["saga"] == LONG_NAME
    # Either way the log records the Python name, so a resume imports the same object.
    listed = migrated("definitions", "--json").json()
    mine = next(row for row in listed if row["saga"] == LONG_NAME)
    assert mine["source"] == f"{sagas.resolve()}:reconcile"


def test_an_unknown_saga_name_lists_both_names_of_each_saga(migrated: SagaCli, sagas: Path) -> None:
    result = migrated("run", f"{sagas}:nothing", "--payload", "{}")

    assert_one_line_error(
        result, 2, f"has no saga named 'nothing' (sagas: reconcile ({LONG_NAME}), tiny)"
    )


def test_check_counts_and_audits_the_users_executions(migrated: SagaCli, sagas: Path) -> None:
    assert migrated("check").stdout.strip() == "consistent: 0 executions"
    assert migrated("run", f"{sagas}:tiny", "--payload", "{}").code == 0

    one = migrated("check")
    assert migrated("run", f"{sagas}:reconcile", "--payload", "{}", "--fail", "settle").code == 3
    two = migrated("check", "--json")

    assert one.code == 0, one
    assert one.stdout.strip() == "consistent: 1 execution"
    assert two.code == 0, two
    assert two.json() == {"consistent": True, "violations": []}
    assert migrated("check").stdout.strip() == "consistent: 2 executions"


def test_check_never_makes_the_demo_tables_in_a_log_of_the_users_sagas(
    saga: SagaCli, sagas: Path
) -> None:
    assert saga("run", f"{sagas}:tiny", "--payload", "{}").code == 0

    checked = saga("check")

    assert checked.stdout.strip() == "consistent: 1 execution", checked
    tables = {str(row[0]) for row in query(saga.db, "SELECT name FROM sqlite_master")}
    assert "saga_execution" in tables
    assert not {"flight_reservation", "payment_charge", "circuit_breaker"} & tables


@pytest.mark.parametrize(
    ("tamper", "expected"),
    [
        pytest.param(
            "UPDATE saga_execution SET status = 'compensated' WHERE saga = 'tiny'",
            [
                "compensated execution {tiny} has no saga_compensated event",
                "compensated execution {tiny} has step hello succeeded, expected compensated",
            ],
            id="compensated-but-its-step-took-effect",
        ),
        pytest.param(
            "DELETE FROM saga_event WHERE saga_id = '{tiny}' AND type = 'step_succeeded'",
            ["completed execution {tiny} has step hello running, expected succeeded"],
            id="completed-with-a-step-still-running",
        ),
        pytest.param(
            "DELETE FROM saga_event WHERE saga_id = '{undone}' AND type = 'compensation_succeeded'",
            ["compensated execution {undone} has step take compensating, expected compensated"],
            id="compensated-without-its-compensation",
        ),
    ],
)
def test_check_finds_a_users_execution_whose_log_disagrees_with_its_status(
    migrated: SagaCli, sagas: Path, tamper: str, expected: list[str]
) -> None:
    ids = {
        "tiny": migrated("run", f"{sagas}:tiny", "--payload", "{}", "--json").json()["id"],
        "undone": migrated(
            "run", f"{sagas}:reconcile", "--payload", "{}", "--fail", "settle", "--json"
        ).json()["id"],
    }
    execute(migrated.db, tamper.format(**ids))

    result = migrated("check", "--json")

    assert result.code == 1, result
    assert result.json()["violations"] == [line.format(**ids) for line in expected]


def test_definitions_shows_what_the_log_recorded_without_load(
    migrated: SagaCli, sagas: Path
) -> None:
    assert migrated("run", f"{sagas}:tiny", "--payload", "{}").code == 0
    assert migrated("run", f"{sagas}:reconcile", "--payload", "{}").code == 0

    rows = {row["saga"]: row for row in migrated("definitions", "--json").json()}
    table = migrated("definitions")

    tiny, reconcile = rows["tiny"], rows[LONG_NAME]
    assert tiny["loaded"] is reconcile["loaded"] is False
    (hello,) = tiny["steps"]
    assert (hello["kind"], hello["compensation"], hello["retry"]["max_attempts"]) == (
        "retriable",
        False,
        3,
    )
    take, settle = reconcile["steps"]
    assert take["compensation"] is True and take["compensation_retry"]["max_attempts"] == 5
    assert settle["compensation"] is False and settle["compensation_retry"] is None
    lines = table.stdout.splitlines()
    assert any("hello" in line and "3 × 0.01s↑2" in line for line in lines), table.stdout
    assert any("take" in line and "yes (5 × 0.05s↑2)" in line for line in lines), table.stdout


def test_definitions_of_a_log_without_recorded_policies_still_shows_compensations(
    migrated: SagaCli, sagas: Path
) -> None:
    assert migrated("run", f"{sagas}:reconcile", "--payload", "{}").code == 0
    # As a log written before the policies were recorded holds it.
    execute(
        migrated.db,
        "UPDATE saga_definition SET steps = ? WHERE name = ?",
        ('[["take", "compensatable", null], ["settle", "pivot", null]]', LONG_NAME),
    )

    rows = {row["saga"]: row for row in migrated("definitions", "--json").json()}
    table = migrated("definitions")

    assert rows[LONG_NAME]["steps"] == [
        {"name": "take", "kind": "compensatable", "group": None, "compensation": True},
        {"name": "settle", "kind": "pivot", "group": None, "compensation": False},
    ]
    assert any(
        "take" in line and "compensatable" in line and "│ yes " in line
        for line in table.stdout.splitlines()
    ), table.stdout
    assert "as the log recorded them" not in table.stdout
