"""examples/bank_transfer.py through the real `saga run`: money is conserved whatever happens.

Every assertion reads the example's own tables (``bank_*`` in the file named by
SAGA_EXAMPLE_DB), never the saga's answer alone.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
from collections import Counter
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from conftest import CliResult, SagaCli, cli_env
from pydantic import ValidationError
from support import load_example, wait_for

from saga_cli.testing import check_crash_points

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "bank_transfer.py"
SAGA = f"{EXAMPLE}:transfer"
SEEDED = {"alice": 100_00, "bob": 50_00, "carol": 25_00, "dave": 0, "frank": 10_00}
TOTAL = sum(SEEDED.values())
ALICE_TO_BOB = {"source": "alice", "target": "bob", "amount": 25_00}


@pytest.fixture
def bank(tmp_path: Path) -> Path:
    """The example's database (its "bank"), fresh per test."""
    return tmp_path / "bank.db"


def run(saga: SagaCli, bank: Path, payload: dict[str, Any], *options: str) -> CliResult:
    return saga(
        "run", SAGA, "--payload", json.dumps(payload), "--json", *options, SAGA_EXAMPLE_DB=str(bank)
    )


def rows(bank: Path, sql: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(bank)) as db:
        return list(db.execute(sql, params))


def balances(bank: Path) -> dict[str, int]:
    return {a: b for a, b in rows(bank, "SELECT id, balance FROM bank_account")}


def holds(bank: Path, execution_id: str) -> dict[str, str]:
    """The execution's holds, {kind: status}."""
    found = rows(bank, "SELECT kind, status FROM bank_hold WHERE execution_id = ?", (execution_id,))
    return {kind: status for kind, status in found}


def journal(bank: Path, execution_id: str) -> list[tuple[str, str | None, int]]:
    """What the execution's calls did, in order: (key less the id, account, balance delta)."""
    found = rows(
        bank,
        "SELECT key, account, delta FROM bank_journal WHERE execution_id = ? ORDER BY seq",
        (execution_id,),
    )
    return [(key.removeprefix(f"{execution_id}:"), a, d) for key, a, d in found]


def effects(bank: Path, execution_id: str) -> dict[str, int]:
    """For the crash-point kit: how many journal rows each idempotency key left."""
    return dict(Counter(key for key, _account, _delta in journal(bank, execution_id)))


def assert_conserved(bank: Path) -> None:
    """Nothing pending, the seeded total back, and every balance explained by the journal."""
    assert rows(bank, "SELECT key FROM bank_hold WHERE status = 'pending'") == []
    now = balances(bank)
    assert sum(now.values()) == TOTAL, now
    moved = dict(rows(bank, "SELECT account, SUM(delta) FROM bank_journal GROUP BY account"))
    for account, seed in SEEDED.items():
        assert now[account] == seed + (moved.get(account) or 0), account


def test_a_transfer_completes_and_moves_the_money(migrated: SagaCli, bank: Path) -> None:
    result = run(migrated, bank, ALICE_TO_BOB)

    assert result.code == 0, result
    outcome = result.json()
    assert outcome["status"] == "completed"
    execution_id = outcome["id"]
    assert balances(bank) == {**SEEDED, "alice": 75_00, "bob": 75_00}
    assert holds(bank, execution_id) == {"debit": "settled", "credit": "settled"}
    assert rows(bank, "SELECT source, target, amount FROM bank_transfer") == [
        ("alice", "bob", 25_00)
    ]
    assert sorted(rows(bank, "SELECT account, message FROM bank_notification")) == [
        ("alice", "You sent 25.00 to bob."),
        ("bob", "You received 25.00 from alice."),
    ]
    assert journal(bank, execution_id) == [
        ("debit", "alice", -25_00),
        ("credit", "bob", 0),
        ("record", "bob", 25_00),
        ("notify", None, 0),
    ]
    assert_conserved(bank)


@pytest.mark.parametrize(
    ("step", "expected_holds", "expected_journal"),
    [
        ("debit", {}, []),
        ("credit", {"debit": "released"}, [("debit", -25_00), ("debit:compensate", 25_00)]),
        (
            "record",
            {"debit": "released", "credit": "released"},
            # compensated in reverse: the credit is cancelled before the debit is refunded
            [
                ("debit", -25_00),
                ("credit", 0),
                ("credit:compensate", 0),
                ("debit:compensate", 25_00),
            ],
        ),
    ],
)
def test_each_step_failing_compensates_and_restores_every_balance(
    migrated: SagaCli,
    bank: Path,
    step: str,
    expected_holds: dict[str, str],
    expected_journal: list[tuple[str, int]],
) -> None:
    load_example(EXAMPLE).Bank(str(bank)).accounts()  # open the bank: `--fail debit` never does
    result = run(migrated, bank, ALICE_TO_BOB, "--fail", step)

    assert result.code == 3, result
    assert result.json()["error"] == f"{step} declined (--fail {step})"
    execution_id = result.json()["id"]
    assert balances(bank) == SEEDED
    assert holds(bank, execution_id) == expected_holds
    assert [(k, d) for k, _a, d in journal(bank, execution_id)] == expected_journal
    assert rows(bank, "SELECT * FROM bank_transfer") == []
    assert rows(bank, "SELECT * FROM bank_notification") == []
    assert_conserved(bank)


def test_notify_failing_past_the_pivot_rests_stuck_then_resume_delivers(
    migrated: SagaCli, bank: Path
) -> None:
    result = run(migrated, bank, ALICE_TO_BOB, "--fail", "notify")

    # Past the pivot nothing is compensated: the transfer stands, the message waits.
    assert result.code == 4, result
    execution_id = result.json()["id"]
    assert balances(bank) == {**SEEDED, "alice": 75_00, "bob": 75_00}
    assert rows(bank, "SELECT * FROM bank_notification") == []
    assert_conserved(bank)

    resumed = migrated("resume", execution_id, "--json", SAGA_EXAMPLE_DB=str(bank))

    assert resumed.code == 0, resumed
    assert len(rows(bank, "SELECT * FROM bank_notification")) == 2
    assert balances(bank) == {**SEEDED, "alice": 75_00, "bob": 75_00}


@pytest.mark.parametrize(
    ("payload", "error", "expected_holds"),
    [
        # refused by the debit: nothing happened, nothing to compensate
        ({"source": "dave", "target": "bob", "amount": 1}, "insufficient funds: dave has", {}),
        ({"source": "alice", "target": "bob", "amount": 100_01}, "insufficient funds", {}),
        ({"source": "zoe", "target": "bob", "amount": 1}, "unknown account 'zoe'", {}),
        ({"source": "frank", "target": "bob", "amount": 1}, "account 'frank' is frozen", {}),
        # refused by the credit: the debit is refunded
        (
            {"source": "alice", "target": "zoe", "amount": 5_00},
            "unknown account 'zoe'",
            {"debit": "released"},
        ),
        (
            {"source": "alice", "target": "frank", "amount": 5_00},
            "account 'frank' is frozen",
            {"debit": "released"},
        ),
    ],
)
def test_refusals_from_the_payload_compensate(
    migrated: SagaCli,
    bank: Path,
    payload: dict[str, Any],
    error: str,
    expected_holds: dict[str, str],
) -> None:
    result = run(migrated, bank, payload)

    assert result.code == 3, result
    assert error in result.json()["error"]
    assert holds(bank, result.json()["id"]) == expected_holds
    assert balances(bank) == SEEDED
    assert_conserved(bank)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"source": "alice", "target": "bob", "amount": 0}, "greater than 0"),
        ({"source": "alice", "target": "bob", "amount": "100"}, "valid integer"),
        ({"source": "alice", "target": "alice", "amount": 1}, "must be different accounts"),
        ({"source": "alice", "target": "bob", "amount": 1, "memo": "x"}, "memo"),
    ],
)
def test_a_malformed_transfer_is_refused_before_any_money_moves(
    migrated: SagaCli, bank: Path, payload: dict[str, Any], message: str
) -> None:
    result = run(migrated, bank, payload)

    assert result.code == 2, result
    assert result.stderr.startswith("Error: payload of saga 'bank-transfer' is invalid")
    assert message in result.stderr
    assert not bank.exists()  # no step ran, so the bank was never even opened


@pytest.mark.parametrize(
    "payload",
    [
        {"source": "alice", "target": "bob", "amount": -5},
        {"source": "alice", "target": "bob", "amount": 1.5},  # cents are whole
        {"source": "alice", "target": "bob", "amount": 10**15},
        {"source": "", "target": "bob", "amount": 1},
        {"source": "alice", "amount": 1},
    ],
)
def test_the_payload_model_refuses_what_is_not_a_transfer(payload: dict[str, Any]) -> None:
    example = load_example(EXAMPLE)
    with pytest.raises(ValidationError):
        example.Transfer.model_validate(payload)
    assert example.Transfer.model_validate({**payload, **ALICE_TO_BOB}).amount == 25_00


def test_a_compensation_stuck_with_money_held_still_conserves_it(
    migrated: SagaCli, bank: Path
) -> None:
    result = run(
        migrated, bank, ALICE_TO_BOB, "--fail", "record", "--fail-compensation", "debit:always"
    )

    assert result.code == 4, result
    execution_id = result.json()["id"]
    # The money is in flight: out of alice's balance, in her pending hold.
    assert holds(bank, execution_id) == {"debit": "pending", "credit": "released"}
    assert balances(bank) == {**SEEDED, "alice": 75_00}
    held = rows(bank, "SELECT SUM(amount) FROM bank_hold WHERE status = 'pending'")[0][0]
    assert sum(balances(bank).values()) + held == TOTAL

    resumed = migrated("resume", execution_id, "--json", SAGA_EXAMPLE_DB=str(bank))

    assert resumed.code == 3, resumed
    assert balances(bank) == SEEDED
    assert_conserved(bank)


def test_a_debit_arriving_after_its_refund_is_refused_by_the_tombstone(
    migrated: SagaCli, bank: Path
) -> None:
    # Killed once the debit's `started` record is durable, before the bank saw it;
    # then compensated by an operator: the refund finds no hold and leaves a tombstone.
    crashed = run(migrated, bank, ALICE_TO_BOB, "--crash-at", "debit:before")
    assert crashed.code == -9, crashed
    execution_id = rows(migrated.db, "SELECT id FROM saga_execution")[0][0]

    compensated = migrated("compensate", execution_id, SAGA_EXAMPLE_DB=str(bank))

    assert compensated.code == 3, compensated
    assert holds(bank, execution_id) == {"debit": "void"}
    assert journal(bank, execution_id) == [("debit:compensate", None, 0)]
    # The debit's request arrives late (a slow network): refused, no money moves.
    example = load_example(EXAMPLE)
    with pytest.raises(example.CancelledBeforeArrivalError):
        example.Bank(str(bank)).debit(f"{execution_id}:debit", execution_id, "alice", 25_00)
    assert balances(bank) == SEEDED
    assert_conserved(bank)


def test_repeated_calls_under_one_key_take_effect_once(bank: Path) -> None:
    example = load_example(EXAMPLE)
    accounts = example.Bank(str(bank))

    first = accounts.debit("x:debit", "x", "alice", 10_00)
    again = accounts.debit("x:debit", "x", "alice", 10_00)
    accounts.refund("x:debit:compensate", "x:debit", "x")
    accounts.refund("x:debit:compensate", "x:debit", "x")

    assert first == again == {"hold": "x:debit", "account": "alice", "balance": 90_00}
    assert balances(bank) == SEEDED
    assert effects(bank, "x") == {"debit": 1, "debit:compensate": 1}


def test_the_debit_never_overdraws_even_without_the_concurrency_key(bank: Path) -> None:
    example = load_example(EXAMPLE)
    example.Bank(str(bank)).accounts()  # create the tables before the race
    outcomes: list[str] = []

    def debit(number: int) -> None:
        try:
            example.Bank(str(bank)).debit(f"t{number}:debit", f"t{number}", "carol", 10_00)
            outcomes.append("debited")
        except example.InsufficientFundsError:
            outcomes.append("refused")

    threads = [threading.Thread(target=debit, args=(n,)) for n in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # carol has 25.00: exactly two debits of 10.00 fit
    assert Counter(outcomes) == {"debited": 2, "refused": 10}
    assert balances(bank)["carol"] == 5_00
    held = rows(bank, "SELECT SUM(amount) FROM bank_hold WHERE status = 'pending'")[0][0]
    assert sum(balances(bank).values()) + held == TOTAL


@pytest.mark.slow
def test_every_crash_point_then_resume_ends_consistent(tmp_path: Path, bank: Path) -> None:
    sums: dict[str, int] = {}

    def counted(execution_id: str) -> dict[str, int]:
        # Called once per scenario, after its resume: the bank must be whole again.
        sums[execution_id] = sum(balances(bank).values())
        assert rows(bank, "SELECT key FROM bank_hold WHERE status = 'pending'") == []
        return effects(bank, execution_id)

    report = check_crash_points(
        SAGA,
        payload={"source": "alice", "target": "bob", "amount": 30},
        effects=counted,
        workdir=tmp_path / "logs",
        env={"SAGA_EXAMPLE_DB": str(bank)},
    )

    assert report.ok, report.summary()
    assert len(report.scenarios) == 4 * 2 + 2 * 2
    assert {s.execution_id: TOTAL for s in report.scenarios} == sums
    completed = [str(s.execution_id) for s in report.scenarios if s.status == "completed"]
    assert len(completed) == 8
    assert sorted(e for (e,) in rows(bank, "SELECT execution_id FROM bank_transfer")) == sorted(
        completed
    )
    assert balances(bank) == {**SEEDED, "alice": 100_00 - 8 * 30, "bob": 50_00 + 8 * 30}
    assert_conserved(bank)


@pytest.mark.slow
def test_concurrent_transfers_from_one_account_never_overdraw(
    migrated: SagaCli, bank: Path
) -> None:
    payload = json.dumps({"source": "alice", "target": "bob", "amount": 30_00})
    processes = [
        migrated.popen(
            "run",
            SAGA,
            "--payload",
            payload,
            "--key-busy",
            "wait",
            "--json",
            SAGA_EXAMPLE_DB=str(bank),
        )  # fmt: skip
        for _ in range(8)
    ]
    results = [(p.wait(timeout=120), p.communicate()) for p in processes]

    codes = Counter(code for code, _out in results)
    # 8 x 30.00 asked of 100.00: three fit, five are refused by the debit
    assert codes == {0: 3, 3: 5}, results
    errors = [json.loads(out)["error"] for code, (out, _err) in results if code == 3]
    assert all(e.startswith("insufficient funds: alice has 10.00") for e in errors), errors
    assert balances(bank) == {**SEEDED, "alice": 10_00, "bob": 140_00}
    # alice's balance after every movement of hers, in commit order: never below zero
    running, lowest = SEEDED["alice"], SEEDED["alice"]
    for (delta,) in rows(
        bank, "SELECT delta FROM bank_journal WHERE account = 'alice' ORDER BY seq"
    ):
        running += delta
        lowest = min(lowest, running)
    assert running == 10_00 and lowest >= 0
    assert_conserved(bank)


def test_a_second_transfer_from_a_busy_account_is_refused(migrated: SagaCli, bank: Path) -> None:
    first = migrated.popen(
        "run", SAGA, "--payload", json.dumps(ALICE_TO_BOB), "--slow", "debit:2", "--json",
        SAGA_EXAMPLE_DB=str(bank),
    )  # fmt: skip
    try:
        wait_for(lambda: rows(migrated.db, "SELECT id FROM saga_execution"), "the first transfer")

        second = run(migrated, bank, {"source": "alice", "target": "carol", "amount": 1_00})
        other = run(migrated, bank, {"source": "bob", "target": "carol", "amount": 1_00})
    finally:
        out, err = first.communicate(timeout=60)

    assert second.code == 1, second
    assert "account:alice" in second.stderr
    assert other.code == 0, other  # another source holds another key
    assert first.returncode == 0, err
    assert balances(bank) == {**SEEDED, "alice": 75_00, "bob": 74_00, "carol": 26_00}
    assert_conserved(bank)


def test_the_example_cli_shows_and_resets_the_bank(migrated: SagaCli, bank: Path) -> None:
    assert run(migrated, bank, ALICE_TO_BOB).code == 0

    def example(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(EXAMPLE), "--db", str(bank), *args],
            capture_output=True,
            text=True,
            timeout=30,
            env=cli_env(),
            check=True,
        )

    shown = example("show").stdout
    assert "  alice          75.00\n" in shown
    assert "  sum           185.00\n" in shown
    assert "holds: 0 pending, 2 settled, 0 released, 0 void" in shown
    assert "alice -> bob  25.00" in shown
    assert "bob: You received 25.00 from alice." in shown

    reset = example("reset").stdout

    assert "  alice         100.00\n" in reset
    assert "ledger: 0 transfer(s)" in reset
    assert balances(bank) == SEEDED
