"""The README, run top to bottom as a new user would, and its tables checked against the code."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from readme.blocks import HTTP_DEMO, fenced_blocks
from readme.http_demo import run_http_demo
from readme.session import Session

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"


@pytest.mark.slow  # about a minute and a half: every example, the HTTP demo's kill included
def test_every_console_and_python_block_runs_as_printed_in_order(tmp_path: Path) -> None:
    # A reader's checkout: the examples the README runs, and nothing else.
    shutil.copytree(
        ROOT / "examples", tmp_path / "examples", ignore=shutil.ignore_patterns("__pycache__")
    )
    session = Session.fresh(tmp_path)
    ran = 0
    took: list[tuple[float, int]] = []
    for number, block in enumerate(fenced_blocks(README)):
        started = time.monotonic()
        if block.marker == HTTP_DEMO:
            run_http_demo(session, block, README.read_text(encoding="utf-8"))
        elif not block.runs:
            continue
        elif block.language == "console":
            session.console(block)
        else:
            session.python(block, f"snippet_{number}.py")
        ran += 1
        took.append((time.monotonic() - started, block.line))
    # Shown with -s (or on a failure): where the minutes go, for whoever makes it faster.
    print("slowest README blocks:", [f"line {n}: {t:.1f}s" for t, n in sorted(took)[-5:]])
    assert ran >= 15, "the README lost its examples?"
