"""examples/transfer_api.py: a FastAPI app awaiting whole sagas, driven over real HTTP."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import cli_env
from support import wait_for

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SEEDED = {"alice": 100_00, "bob": 50_00, "carol": 25_00, "dave": 0, "frank": 10_00}


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[str, Path, Path]]:
    """The example app under uvicorn on a free loopback port: (url, log, bank)."""
    port = _free_port()
    log, bank = tmp_path / "transfers.db", tmp_path / "bank.db"
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "transfer_api:app", "--port", str(port)],
        cwd=EXAMPLES,
        env=cli_env(SAGA_DB=str(log), SAGA_EXAMPLE_DB=str(bank)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert server.poll() is None, server.communicate()[1]
        try:
            return httpx.get(f"{url}/docs", timeout=1, trust_env=False).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(up, "the transfer API to answer")
        yield url, log, bank
    finally:
        server.terminate()
        _out, err = server.communicate(timeout=30)
        assert "Traceback" not in err, err


def _balances(bank: Path) -> dict[str, int]:
    with closing(sqlite3.connect(bank)) as db:
        return dict(db.execute("SELECT id, balance FROM bank_account").fetchall())


def test_requests_run_sagas_side_by_side_and_answer_with_their_outcomes(
    api: tuple[str, Path, Path],
) -> None:
    url, _log, bank = api

    async def send() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url, timeout=60, trust_env=False) as client:
            requests: list[dict[str, Any]] = [
                {"source": "alice", "target": "bob", "amount": 10_00},
                {"source": "bob", "target": "carol", "amount": 5_00},
                {"source": "carol", "target": "frank", "amount": 1_00},  # frank is frozen
                {"source": "dave", "target": "alice", "amount": 1_00},  # dave has nothing
                {"source": "alice", "target": "carol", "amount": 10_00},  # waits for alice's key
            ]
            return await asyncio.gather(*(client.post("/transfers", json=r) for r in requests))

    answers = asyncio.run(send())
    assert [a.status_code for a in answers] == [201, 201, 409, 409, 201]
    assert {a.json()["status"] for a in answers[:2]} == {"completed"}
    assert "frozen" in answers[2].json()["error"]
    assert answers[3].json()["status"] == "compensated"

    shown = httpx.get(f"{url}/transfers/{answers[0].json()['id']}", trust_env=False).json()
    assert shown["status"] == "completed"
    assert [s["name"] for s in shown["steps"]] == ["debit", "credit", "record", "notify"]
    assert httpx.get(f"{url}/transfers/nosuchid", trust_env=False).status_code == 404
    malformed = httpx.post(f"{url}/transfers", json={"source": "alice"}, trust_env=False)
    assert malformed.status_code == 422

    balances = _balances(bank)
    assert sum(balances.values()) == sum(SEEDED.values())  # money is conserved
    assert balances["alice"] == SEEDED["alice"] - 20_00
    assert balances["carol"] == SEEDED["carol"] + 5_00 + 10_00
    assert balances["frank"] == SEEDED["frank"] and balances["dave"] == SEEDED["dave"]
