"""The dashboard on a PostgreSQL log: every page opened in Chromium, and an action clicked."""

from __future__ import annotations

from typing import Any

import psycopg
from playwright.sync_api import Page
from support import BOOKING, run_saga

from saga_cli.store.postgres import libpq_url

from .dashboard import TOKEN, sign_in, start_dashboard


def rows(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(libpq_url(url)) as db:
        return db.execute(sql, params).fetchall()


def test_every_page_reads_a_postgresql_log_and_resume_writes_to_it(page: Page, pg_url: str) -> None:
    killed = run_saga(pg_url, "book", *BOOKING, "--crash-at", "car:after")
    assert killed.code == -9, killed
    (interrupted,) = rows(pg_url, "SELECT id FROM saga_execution WHERE status='running'")[0]
    done = run_saga(pg_url, "book", *BOOKING, "--json").json()["id"]
    undone = run_saga(pg_url, "book", *BOOKING, "--fail", "car", "--json").json()["id"]
    stuck = run_saga(
        pg_url, "book", *BOOKING, "--fail", "car", "--fail-compensation", "flight:always"
    )
    assert stuck.code == 4, stuck
    assert run_saga(pg_url, "services", "--reset", "flight").code == 0
    (stuck_id,) = rows(pg_url, "SELECT id FROM saga_execution WHERE status='stuck'")[0]

    served = start_dashboard(pg_url, "--allow-actions", SAGA_UI_TOKEN=TOKEN)
    try:
        page.goto(served.url + "executions")
        shown = {
            row.get_attribute("data-id"): row.get_attribute("data-status")
            for row in page.locator("#executions tbody tr").all()
        }
        assert shown == {
            interrupted: "running",
            done: "completed",
            undone: "compensated",
            stuck_id: "stuck",
        }
        assert "postgresql" in page.locator("header .where").inner_text()

        page.goto(served.url + f"executions/{undone}")
        assert page.locator("svg.timeline g.row.compensation").count() == 2
        page.goto(served.url + "stats")
        assert page.locator("#tile-executions .value").inner_text() == "4"
        page.goto(served.url + "stuck")
        assert page.locator("#queue tbody tr").get_attribute("data-id") == stuck_id
        assert page.locator("#interrupted tbody tr").get_attribute("data-id") == interrupted
        page.goto(served.url + "workers")
        assert page.locator("#no-workers").count() == 1

        sign_in(page, served)
        page.goto(served.url + f"executions/{interrupted}")
        page.click("form.action.resume button")
        assert page.locator("#message").inner_text() == f"resume: {interrupted} is completed"
    finally:
        served.stop()
    assert rows(pg_url, "SELECT status FROM saga_execution WHERE id=%s", (interrupted,)) == [
        ("completed",)
    ]
    kinds = [
        kind
        for (kind,) in rows(
            pg_url, "SELECT type FROM saga_event WHERE saga_id=%s ORDER BY seq", (interrupted,)
        )
    ]
    assert kinds.count("saga_resumed") == 1 and kinds[-1] == "saga_completed"
