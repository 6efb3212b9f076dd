"""Screenshots of every page, as the README shows them, taken with the same Chromium.

They are always taken (into a temporary directory) and checked to be
pictures of the pages; with ``SAGA_UI_SCREENSHOTS=DIR`` they are also
written to DIR, which is how the README's images are made:

    SAGA_UI_SCREENSHOTS=docs/ui .venv/bin/pytest tests/ui/test_screenshots.py
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import SagaCli, cli_env, saga_executable
from playwright.sync_api import Browser
from support import query, wait_for

from .dashboard import (
    SAGAS,
    TOKEN,
    Dashboard,
    crashed_booking,
    fresh_log,
    sign_in,
    start_dashboard,
    stop_process,
    stuck_booking,
)

ROOT = Path(__file__).resolve().parents[2]
VIDEO = ROOT / "examples" / "video_pipeline.py"
BENCH = ROOT / "bench" / "log_scale.py"
WIDTH, MOST_HEIGHT = 1100, 1000


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory, migrated_template: Path) -> tuple[SagaCli, str]:
    """A day of bookings (as bench/log_scale.py makes them), then some of every kind now.

    The newest is a video whose publication failed: its timeline shows a
    parallel group, forward and back.
    """
    saga = fresh_log(tmp_path_factory, migrated_template)
    filled = subprocess.run(
        [sys.executable, str(BENCH), "--db", str(saga.db), "--executions", "3000", "--days", "1"]
        + ["--fill-only"],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert filled.returncode == 0, filled.stderr
    simulated = saga(
        "simulate", "--count", "12", "--fail-rate", "0.3", "--seed", "7", "--capacity", "100"
    )
    assert simulated.code == 0, simulated
    assert saga("services", "--reset", "flight", "--reset", "hotel", "--reset", "car").code == 0
    crashed_booking(saga, "COMPACT")
    stuck_booking(saga)
    video = saga(
        "run",
        f"{VIDEO}:pipeline",
        "--payload",
        json.dumps({"slug": "dog-7", "title": "Dog", "cdn_quota_kb": 4}),
        "--json",
        SAGA_EXAMPLE_DB=str(saga.db.parent / "examples.db"),
        SAGA_EXAMPLE_FILES=str(saga.db.parent / "files"),
    )
    assert video.code == 3, video
    return saga, str(video.json()["id"])


@pytest.fixture(scope="module")
def dashboard(log: tuple[SagaCli, str]) -> Iterator[Dashboard]:
    db = log[0].db
    served = start_dashboard(db.name, "--allow-actions", cwd=db.parent, SAGA_UI_TOKEN=TOKEN)
    try:
        yield served
    finally:
        served.stop()


def png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", path
    width, height = struct.unpack(">II", header[16:24])
    return int(width), int(height)


def test_every_page_is_photographed(
    browser: Browser, dashboard: Dashboard, log: tuple[SagaCli, str], tmp_path: Path
) -> None:
    saga, video = log
    worker = subprocess.Popen(
        [saga_executable(), "--db", str(saga.db), "--load", str(SAGAS), "worker"]
        + ["--saga", "slow-wait", "--poll", "0.5"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        env=cli_env(),
    )
    pages = {
        "executions": ("executions?limit=15", "#executions"),
        "execution": (f"executions/{video}", "svg.timeline"),
        "stats": ("stats?since=24h", "svg.percentiles"),
        "stuck": ("stuck", "#queue"),
        "workers": ("workers", '#workers tr[data-state="live"]'),
    }
    context = browser.new_context(viewport={"width": WIDTH, "height": 800})
    try:
        wait_for(lambda: query(saga.db, "SELECT id FROM saga_worker"), "the worker to register")
        page = context.new_page()
        sign_in(page, dashboard)
        for name, (path, marker) in pages.items():
            page.goto(dashboard.url + path)
            page.wait_for_selector(marker)
            height = min(MOST_HEIGHT, int(page.evaluate("document.body.scrollHeight")))
            page.screenshot(
                path=tmp_path / f"{name}.png",
                full_page=True,
                clip={"x": 0, "y": 0, "width": WIDTH, "height": height},
            )
    finally:
        context.close()
        stop_process(worker)

    for name in pages:
        shot = tmp_path / f"{name}.png"
        width, height = png_size(shot)
        assert width == WIDTH and 200 <= height <= MOST_HEIGHT, (name, width, height)
        assert shot.stat().st_size > 20_000, name  # a page, not a blank
    wanted = os.environ.get("SAGA_UI_SCREENSHOTS")
    if wanted:
        Path(wanted).mkdir(parents=True, exist_ok=True)
        for name in pages:
            shutil.copyfile(tmp_path / f"{name}.png", Path(wanted) / f"{name}.png")
