"""The examples on a PostgreSQL log: their sagas' log there, their own state where it always is."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import psycopg
from conftest import cli_env, saga_executable
from support import run_saga

from saga_cli.domain import SagaStatus
from saga_cli.store.postgres import libpq_url

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"pg_example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_the_travel_booking_example_runs_on_postgres(pg_url: str) -> None:
    statuses = load("travel_booking").main(pg_url)
    # two compact cars: two bookings complete, three compensate
    assert statuses == [SagaStatus.COMPLETED] * 2 + [SagaStatus.COMPENSATED] * 3
    with psycopg.connect(libpq_url(pg_url)) as db:
        counts = db.execute("SELECT status, COUNT(*) FROM saga_execution GROUP BY 1 ORDER BY 1")
        assert counts.fetchall() == [("compensated", 3), ("completed", 2)]
    assert run_saga(pg_url, "check").code == 0


def test_saga_run_of_the_bank_example_logs_to_postgres(pg_url: str, tmp_path: Path) -> None:
    bank = tmp_path / "bank.db"
    transfer = json.dumps({"source": "alice", "target": "bob", "amount": 2500})
    example = str(EXAMPLES / "bank_transfer.py")
    done = subprocess.run(
        [saga_executable(), "--db", pg_url, "run", f"{example}:transfer"]
        + ["--payload", transfer, "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env=cli_env(SAGA_EXAMPLE_DB=str(bank)),
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done
    execution_id = json.loads(done.stdout)["id"]
    with psycopg.connect(libpq_url(pg_url)) as db:
        row = db.execute("SELECT saga, status FROM saga_execution WHERE id=%s", (execution_id,))
        assert row.fetchone() == ("bank-transfer", "completed")
    assert bank.exists()  # the bank's own tables stay in its own SQLite file
