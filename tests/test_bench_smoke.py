"""The benchmarks still run: tiny sizes, real logs, no timing asserted (speed is not tested)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parents[1] / "bench"


def run(script: str, *args: str, tmp_path: Path) -> dict[str, Any]:
    out = tmp_path / "result.json"
    done = subprocess.run(
        [sys.executable, str(BENCH / script), *args, "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    loaded: dict[str, Any] = json.loads(out.read_text())
    return loaded


def test_throughput_bench_runs_and_audits(tmp_path: Path) -> None:
    result = run(
        "throughput.py",
        "--sagas",
        "30",
        "--concurrency",
        "1,2",
        "--failure-rates",
        "0.2",
        "--raw-commits",
        "50",
        tmp_path=tmp_path,
    )
    (backend,) = result["backends"]
    scenarios = backend["scenarios"]
    assert [s["concurrency"] for s in scenarios] == [1, 2]
    assert all(s["consistent"] and s["completed"] + s["compensated"] == 30 for s in scenarios)


def test_recovery_bench_resumes_every_interrupted_execution(tmp_path: Path) -> None:
    result = run("recovery.py", "--executions", "30", tmp_path=tmp_path)
    assert result["interrupted"] == 30
    assert result["left_unfinished"] == 0 and result["consistent"] is True
