"""`saga ui --allow-actions`: signing in, CSRF, and each action clicked in Chromium.

Every action must land in the log as the CLI command of the same name
lands: for resume and resolve the test does one execution through the CLI
and its twin through the dashboard, and compares what each wrote.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import SagaCli
from playwright.sync_api import Page
from support import query, wait_for

from .dashboard import (
    BOOKING,
    SAGAS,
    TOKEN,
    Dashboard,
    crashed_booking,
    event_rows,
    fresh_log,
    sign_in,
    start_dashboard,
    status_of,
    stop_process,
    stuck_booking,
    wait_for_event,
    wait_for_status,
)

Log = tuple[SagaCli, dict[str, str]]
NOTE = "refunded the flight by hand, ticket OPS-42"


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory, migrated_template: Path) -> Log:
    saga = fresh_log(tmp_path_factory, migrated_template)
    ids = {
        "resume-cli": crashed_booking(saga, "COMPACT"),
        "resume-ui": crashed_booking(saga, "COMPACT"),
        "compensate-ui": crashed_booking(saga, "ECONOMY"),
        "resolve-cli": stuck_booking(saga),
        "resolve-ui": stuck_booking(saga),
    }
    slow = saga("run", f"{SAGAS}:slow", "--payload", '{"seconds": 6}', "--crash-at", "wait:before")
    assert slow.code == -9, slow
    ids["slow"] = _running_slow_wait(saga)
    return saga, ids


def _running_slow_wait(saga: SagaCli) -> str:
    """The slow-wait execution left running (its process was killed before the wait)."""
    (row,) = query(
        saga.db, "SELECT id FROM saga_execution WHERE saga='slow-wait' AND status='running'"
    )
    return str(row[0])


@pytest.fixture(scope="module")
def dashboard(log: Log) -> Iterator[Dashboard]:
    served = start_dashboard(str(log[0].db), "--allow-actions", SAGA_UI_TOKEN=TOKEN)
    try:
        yield served
    finally:
        served.stop()


def after_the_crash(db: Path, execution_id: str) -> list[tuple[Any, ...]]:
    """What was written from the first record after the crash on: kinds, steps, detail keys."""
    rows = event_rows(db, execution_id)
    first = next(i for i, row in enumerate(rows) if row[1] == "saga_resumed")
    return [
        (kind, step, attempt, sorted(json.loads(str(detail)) if detail else []))
        for _seq, kind, step, attempt, detail in rows[first:]
    ]


def assert_audited(saga: SagaCli, execution_id: str) -> None:
    """`saga check` finds nothing wrong with this execution and the services.

    (The stuck ones resolved by hand keep their flight reservation: undoing
    it was the operator's job, so the whole log is not expected to pass.)
    """
    audit = saga("check", "--json").json()
    assert not [v for v in audit["violations"] if execution_id in v], audit


def csrf_and_cookies(page: Page, dashboard: Dashboard, execution_id: str) -> tuple[str, Any]:
    """A signed-in session's CSRF token and cookies, as a script (or an attacker) could use them."""
    sign_in(page, dashboard)
    page.goto(dashboard.url + f"executions/{execution_id}")
    csrf = page.locator("form.action input[name=csrf]").first.input_value()
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    return csrf, cookies


# -- who may act -------------------------------------------------------------------------------


def test_the_buttons_wait_for_a_signed_in_operator(
    page: Page, dashboard: Dashboard, log: Log
) -> None:
    saga, ids = log
    target = ids["resume-ui"]
    page.goto(dashboard.url + f"executions/{target}")
    assert page.locator("form.action").count() == 0
    assert "Sign in to resume, compensate, cancel it." in page.locator("#summary").inner_text()

    page.click("text=sign in to act")
    page.fill("input[name=token]", "not-the-token-at-all")
    page.click("form[action='/login'] button[type=submit]")
    assert page.locator("#error").inner_text() == "That is not the token."

    page.fill("input[name=token]", TOKEN)
    page.click("form[action='/login'] button[type=submit]")
    page.wait_for_url(re.compile(rf".*/executions/{target}$"))  # back where it started
    buttons = page.locator("form.action button").all_inner_texts()
    assert buttons == ["resume", "compensate", "cancel"]
    cookie = next(c for c in page.context.cookies() if c["name"].startswith("saga_ui_"))
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert status_of(saga.db, target) == "running"


def test_a_post_without_a_session_a_csrf_token_or_from_another_site_changes_nothing(
    page: Page, dashboard: Dashboard, log: Log
) -> None:
    saga, ids = log
    target = ids["compensate-ui"]
    before = event_rows(saga.db, target)
    csrf, cookies = csrf_and_cookies(page, dashboard, target)
    path = f"/executions/{target}/compensate"

    refused = [
        dashboard.post(path, data={"csrf": csrf}),  # no session
        dashboard.post(path, data={"csrf": "forged"}, cookies=cookies),
        dashboard.post(path, data={}, cookies=cookies),
        dashboard.post(
            path, data={"csrf": csrf}, cookies=cookies, headers={"Origin": "http://evil.example"}
        ),
        dashboard.post(
            path, data={"csrf": csrf}, cookies=cookies, headers={"Sec-Fetch-Site": "cross-site"}
        ),
        dashboard.post("/login", data={"token": TOKEN}, headers={"Origin": "http://evil.example"}),
    ]

    assert [r.status_code for r in refused] == [403] * len(refused)
    assert all("Error: " in r.text for r in refused[:-1])
    assert event_rows(saga.db, target) == before
    page.context.clear_cookies()
    page.goto(dashboard.url + f"executions/{target}")
    assert page.locator("form.action").count() == 0  # signed out with the cookies


# -- the actions -------------------------------------------------------------------------------


def test_resume_from_the_execution_page_writes_what_saga_resume_writes(
    page: Page, dashboard: Dashboard, log: Log
) -> None:
    saga, ids = log
    by_cli = saga("resume", ids["resume-cli"])
    assert by_cli.code == 0, by_cli

    sign_in(page, dashboard)
    page.goto(dashboard.url + f"executions/{ids['resume-ui']}")
    page.click("form.action.resume button")

    message = page.locator("#message")
    assert message.inner_text() == f"resume: {ids['resume-ui']} is completed"
    assert "message=" not in page.url  # shown once, not kept in the address
    assert page.locator("h1 .status").inner_text() == "completed"
    assert status_of(saga.db, ids["resume-ui"]) == "completed"
    assert after_the_crash(saga.db, ids["resume-ui"]) == after_the_crash(saga.db, ids["resume-cli"])
    assert_audited(saga, ids["resume-ui"])


def test_resolve_from_the_stuck_queue_writes_what_saga_resolve_writes(
    page: Page, dashboard: Dashboard, log: Log
) -> None:
    saga, ids = log
    by_cli = saga("resolve", ids["resolve-cli"], "--note", NOTE)
    assert by_cli.code == 0, by_cli

    sign_in(page, dashboard)
    page.goto(dashboard.url + "stuck")
    row = page.locator(f'#queue tr[data-id="{ids["resolve-ui"]}"]')
    row.locator("[name=note]").fill(NOTE)
    row.locator("form.action.resolve button").click()

    page.wait_for_url(re.compile(r".*/stuck$"))
    assert page.locator("#message").inner_text() == (f"resolve: {ids['resolve-ui']} is compensated")
    assert page.locator(f'#queue tr[data-id="{ids["resolve-ui"]}"]').count() == 0
    ui_rows = event_rows(saga.db, ids["resolve-ui"])
    cli_rows = event_rows(saga.db, ids["resolve-cli"])
    assert ui_rows[-1][1] == cli_rows[-1][1] == "saga_resolved"
    ui_detail, cli_detail = json.loads(str(ui_rows[-1][4])), json.loads(str(cli_rows[-1][4]))
    assert ui_detail["note"] == cli_detail["note"] == NOTE
    assert sorted(ui_detail) == sorted(cli_detail)
    assert status_of(saga.db, ids["resolve-ui"]) == status_of(saga.db, ids["resolve-cli"])


def test_compensate_an_interrupted_execution(page: Page, dashboard: Dashboard, log: Log) -> None:
    saga, ids = log
    target = ids["compensate-ui"]
    sign_in(page, dashboard)
    page.goto(dashboard.url + f"executions/{target}")
    page.click("form.action.compensate button")

    assert page.locator("#message").inner_text() == (
        f"compensate: {target} is compensated (requested by operator)"
    )
    assert status_of(saga.db, target) == "compensated"
    requested = [r for r in event_rows(saga.db, target) if r[1] == "compensation_requested"]
    assert [json.loads(str(r[4]))["reason"] for r in requested] == ["requested by operator"]
    assert page.locator('svg.timeline g.row.compensation[data-step="car"]').count() == 1
    assert_audited(saga, target)


def test_cancel_takes_a_live_execution_from_the_process_running_it(
    page: Page, dashboard: Dashboard, log: Log
) -> None:
    saga, _ = log
    live = saga.popen("book", *BOOKING, "--car", "ECONOMY", "--slow", "car:30")
    try:
        execution_id = _newest_booking(saga)
        wait_for_event(saga.db, execution_id, "step_started", "car")
        sign_in(page, dashboard)
        page.goto(dashboard.url + f"executions/{execution_id}")
        assert page.locator("h1 .flag").count() == 0  # a live process runs it
        assert page.locator("form.action button").all_inner_texts() == ["cancel"]

        page.click("form.action.cancel button")

        wait_for_status(saga.db, execution_id, "compensated")
        reasons = [
            json.loads(str(r[4]))["reason"]
            for r in event_rows(saga.db, execution_id)
            if r[1] == "compensation_requested"
        ]
        assert reasons == ["cancelled by operator"]
        page.wait_for_selector("h1 .status.compensated")  # the page follows it
    finally:
        stop_process(live)
    assert_audited(saga, execution_id)


def _newest_booking(saga: SagaCli) -> str:
    def found() -> str | None:
        rows = query(
            saga.db,
            "SELECT id FROM saga_execution WHERE status='running' AND step IS NOT NULL"
            " AND saga='travel-booking' ORDER BY created_at DESC LIMIT 1",
        )
        return str(rows[0][0]) if rows else None

    booked = wait_for(found, "the live booking to start")
    assert booked is not None
    return booked


def test_a_long_action_goes_on_in_the_background_while_pages_answer(
    page: Page, dashboard: Dashboard, log: Log
) -> None:
    saga, ids = log
    target = ids["slow"]
    sign_in(page, dashboard)
    page.goto(dashboard.url + f"executions/{target}")
    latencies: list[float] = []
    done = threading.Event()

    def read_pages() -> None:
        with httpx.Client(base_url=dashboard.url, timeout=30) as client:
            while not done.is_set():
                began = time.monotonic()
                assert client.get("/executions").status_code == 200
                latencies.append(time.monotonic() - began)
                time.sleep(0.05)

    reader = threading.Thread(target=read_pages)
    reader.start()
    try:
        page.click("form.action.resume button")  # waits about 3 s, then redirects
    finally:
        done.set()
        reader.join()

    assert "goes on in the background" in page.locator("#message").inner_text()
    assert status_of(saga.db, target) == "running"  # the 6 s step is still waiting
    assert len(latencies) >= 10 and max(latencies) < 1.0, latencies
    page.wait_for_selector("h1 .status.completed", timeout=30_000)  # live refresh shows the end
    assert status_of(saga.db, target) == "completed"


def test_a_running_action_is_handed_back_when_the_dashboard_stops(log: Log, page: Page) -> None:
    saga, _ = log
    slow = saga("run", f"{SAGAS}:slow", "--payload", '{"seconds": 30}', "--crash-at", "wait:before")
    assert slow.code == -9, slow
    target = _running_slow_wait(saga)
    other = start_dashboard(str(saga.db), "--allow-actions", SAGA_UI_TOKEN=TOKEN)
    try:
        sign_in(page, other)
        page.goto(other.url + f"executions/{target}")
        page.click("form.action.resume button")
        assert "goes on in the background" in page.locator("#message").inner_text()
    finally:
        other.process.terminate()
        code = other.process.wait(timeout=20)

    assert code == 0
    row = query(saga.db, "SELECT status, owner FROM saga_execution WHERE id=?", (target,))
    assert row == [("running", None)]  # handed back: any process may resume it at once


def test_a_form_body_over_the_limit_is_refused_unread(dashboard: Dashboard) -> None:
    """Issue #15: the dashboard, like `saga serve`, reads at most MAX_REQUEST_BYTES of a body."""
    from saga_cli.limits import MAX_REQUEST_BYTES

    form = {"Content-Type": "application/x-www-form-urlencoded"}
    big = b"token=" + b"x" * MAX_REQUEST_BYTES

    declared = dashboard.post("login", content=big, headers=form)
    streamed = dashboard.post("login", content=iter([big[:1000], big[1000:]]), headers=form)

    assert declared.status_code == 413
    assert streamed.status_code == 413
