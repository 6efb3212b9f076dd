"""Every page of a read-only `saga ui`, opened in Chromium on a log of every kind of execution."""

from __future__ import annotations

import json
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import SagaCli, cli_env, saga_executable
from playwright.sync_api import Locator, Page
from support import query, wait_for

from .dashboard import (
    BOOKING,
    SAGAS,
    Dashboard,
    demo_log,
    event_rows,
    fresh_log,
    start_dashboard,
    stop_process,
)
from .sagas import GROUP

Log = tuple[SagaCli, dict[str, str]]
EXPECTED_STATUS = {
    "interrupted": "running",
    "completed": "completed",
    "retried": "completed",
    "compensated": "compensated",
    "stuck": "stuck",
    "fifty": "completed",
    "fifty-compensated": "compensated",
}


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory, migrated_template: Path) -> Log:
    saga = fresh_log(tmp_path_factory, migrated_template)
    ids = demo_log(saga)
    for kind, payload in (("fifty", {}), ("fifty-compensated", {"fail_at": "s25"})):
        result = saga("run", f"{SAGAS}:fifty", "--payload", json.dumps(payload), "--json")
        assert result.code in (0, 3), result
        ids[kind] = result.json()["id"]
    return saga, ids


@pytest.fixture(scope="module")
def dashboard(log: Log) -> Iterator[Dashboard]:
    served = start_dashboard(str(log[0].db))
    try:
        yield served
    finally:
        served.stop()


def row_ids(page: Page) -> list[str]:
    return [str(row.get_attribute("data-id")) for row in page.locator("#executions tbody tr").all()]


def attempts(row: Locator) -> list[dict[str, Any]]:
    """The attempt bars of one timeline row: outcome, times and box on the screen."""
    found = []
    for bar in row.locator("rect.attempt").all():
        box = bar.bounding_box()
        assert box is not None and box["width"] > 0 and box["height"] > 0
        found.append(
            {
                "outcome": bar.get_attribute("data-outcome"),
                "start": float(bar.get_attribute("data-start") or "nan"),
                "end": float(bar.get_attribute("data-end") or "nan"),
                "box": box,
            }
        )
    return found


# -- executions --------------------------------------------------------------------------


def test_the_executions_page_lists_every_kind_with_its_status(
    page: Page, dashboard: Dashboard, log: Log
) -> None:
    _, ids = log
    page.goto(dashboard.url + "executions")

    for kind, execution_id in ids.items():
        row = page.locator(f'tr[data-id="{execution_id}"]')
        assert row.locator(".status").inner_text() == EXPECTED_STATUS[kind], kind
        assert (row.locator(".flag").count() == 1) == (kind == "interrupted"), kind
        assert row.locator("a").inner_text() == execution_id[:12]
    assert page.locator("header .where").inner_text().endswith("read-only")
    assert page.locator("#nav-stuck").inner_text() == "1"
    assert page.locator("form.action").count() == 0


def test_the_filters_narrow_the_list_as_saga_list_does(
    page: Page, dashboard: Dashboard, log: Log
) -> None:
    _, ids = log
    page.goto(dashboard.url + "executions")
    page.select_option("select[name=status]", "stuck")
    page.click("form.filters button[type=submit]")
    page.wait_for_url(re.compile(r"status=stuck"))
    assert row_ids(page) == [ids["stuck"]]

    page.fill("input[name=saga]", "fifty-steps")
    page.select_option("select[name=status]", "")
    page.click("form.filters button[type=submit]")
    assert sorted(row_ids(page)) == sorted([ids["fifty"], ids["fifty-compensated"]])

    page.goto(dashboard.url + "executions?saga=no-such-saga")
    assert page.locator("#empty").inner_text() == "No executions match."

    response = page.goto(dashboard.url + "executions?since=yesterday")
    assert response is not None and response.status == 400
    assert page.locator("#error").inner_text().startswith("Error: 'yesterday' is neither")
    assert page.locator("input[name=since]").input_value() == "yesterday"  # kept for fixing

    page.goto(dashboard.url + "executions?until=1h")
    assert row_ids(page) == []
    page.goto(dashboard.url + "executions?since=1h&limit=200")
    assert set(ids.values()) <= set(row_ids(page))


def test_paging_walks_every_execution_once_newest_first(
    page: Page, dashboard: Dashboard, log: Log
) -> None:
    saga, _ = log
    expected = [
        str(row[0])
        for row in query(saga.db, "SELECT id FROM saga_execution ORDER BY created_at DESC, id DESC")
    ]
    page.goto(dashboard.url + "executions?limit=3")
    assert page.locator("select[name=limit]").input_value() == "3"
    seen: list[str] = []
    pages = 0
    while True:
        rows = row_ids(page)
        assert 0 < len(rows) <= 3
        seen += rows
        pages += 1
        assert (page.locator("#first-page").count() == 1) == (pages > 1)
        if page.locator("#next-page").count() == 0:
            break
        page.click("#next-page")
        page.wait_for_url(re.compile(r"cursor="))
    assert seen == expected
    assert pages == -(-len(expected) // 3)


def test_the_first_page_refreshes_itself_with_new_executions(
    page: Page, dashboard: Dashboard, log: Log
) -> None:
    saga, _ = log
    page.goto(dashboard.url + "executions")
    page.evaluate("window.stillTheSamePage = true")

    booked = saga("book", *BOOKING, "--json")
    assert booked.code == 0, booked

    page.wait_for_selector(f'tr[data-id="{booked.json()["id"]}"]')
    assert page.evaluate("window.stillTheSamePage") is True  # swapped in, not reloaded
    assert row_ids(page)[0] == booked.json()["id"]


# -- one execution -------------------------------------------------------------------------


def test_an_execution_page_draws_forward_steps_then_compensations_in_time(
    page: Page, dashboard: Dashboard, log: Log
) -> None:
    saga, ids = log
    execution_id = ids["compensated"]
    page.goto(dashboard.url + f"executions/{execution_id}")

    rows = page.locator("svg.timeline g.row")
    drawn = [
        (
            r.get_attribute("data-phase"),
            r.get_attribute("data-step"),
            r.get_attribute("data-status"),
        )
        for r in rows.all()
    ]
    assert drawn == [
        ("forward", "flight", "succeeded"),
        ("forward", "hotel", "succeeded"),
        ("forward", "car", "failed"),
        ("forward", "payment", "not run"),
        ("forward", "confirm", "not run"),
        ("forward", "notify", "not run"),
        ("compensation", "hotel", "compensated"),
        ("compensation", "flight", "compensated"),
    ]
    (car,) = attempts(page.locator('g.row.forward[data-step="car"]'))
    hotel_back = attempts(page.locator('g.row.compensation[data-step="hotel"]'))
    flight_back = attempts(page.locator('g.row.compensation[data-step="flight"]'))
    assert car["outcome"] == "failed"
    assert car["end"] <= hotel_back[0]["start"] <= flight_back[0]["start"]
    assert car["box"]["x"] <= hotel_back[0]["box"]["x"] <= flight_back[0]["box"]["x"]
    assert car["box"]["y"] < hotel_back[0]["box"]["y"] < flight_back[0]["box"]["y"]

    assert '"car": "SUV"' in page.locator("#payload").inner_text()
    logged = event_rows(saga.db, execution_id)
    shown = page.locator("#events tbody tr")
    assert shown.count() == len(logged)
    assert [r.get_attribute("data-type") for r in shown.all()] == [row[1] for row in logged]
    assert "car declined the booking" in page.locator("#failures").inner_text()
    assert page.locator("#steps tbody tr").count() == 8
    assert page.locator("#live-toggle").count() == 0  # a finished execution does not change


def test_a_stuck_execution_shows_every_failed_compensation_attempt(
    page: Page, dashboard: Dashboard, log: Log
) -> None:
    _, ids = log
    page.goto(dashboard.url + f"executions/{ids['stuck']}")

    back = attempts(page.locator('g.row.compensation[data-step="flight"]'))
    assert [a["outcome"] for a in back] == ["retrying"] * 4 + ["failed"]
    assert [a["start"] for a in back] == sorted(a["start"] for a in back)
    failures = page.locator("#failures tbody tr")
    assert failures.count() == 6  # the car's refusal, then five cancellations of the flight
    assert "flight compensation failed on attempt 5" in failures.nth(5).inner_text()
    assert page.locator("h1 .status").inner_text() == "stuck"


def test_the_timeline_of_a_50_step_execution_draws(
    page: Page, dashboard: Dashboard, log: Log
) -> None:
    _, ids = log
    page.goto(dashboard.url + f"executions/{ids['fifty']}")
    chart = page.locator("svg.timeline")
    frame = chart.bounding_box()
    assert frame is not None and frame["height"] > 50 * 10

    rows = page.locator("svg.timeline g.row.forward").all()
    assert len(rows) == 50
    bars = []
    for row in rows:
        (bar,) = attempts(row)
        assert bar["outcome"] == "succeeded"
        box = bar["box"]
        assert frame["x"] <= box["x"] and box["x"] + box["width"] <= frame["x"] + frame["width"] + 1
        assert frame["y"] <= box["y"] and box["y"] + box["height"] <= frame["y"] + frame["height"]
        bars.append((row.get_attribute("data-step"), bar))
    tops = [bar["box"]["y"] for _, bar in bars]
    assert tops == sorted(tops) and len(set(tops)) == 50  # one row each, in order
    group = [bar for step, bar in bars if step in GROUP]
    assert max(b["start"] for b in group) < min(b["end"] for b in group)  # they overlap
    for (_, before), (step, after) in zip(bars, bars[1:], strict=False):
        if step not in GROUP[1:]:
            assert before["end"] <= after["start"] + 1e-6, step  # the rest run one by one


def test_the_timeline_of_a_compensated_50_step_execution_draws_its_compensations(
    page: Page, dashboard: Dashboard, log: Log
) -> None:
    _, ids = log
    page.goto(dashboard.url + f"executions/{ids['fifty-compensated']}")

    forward = page.locator("svg.timeline g.row.forward")
    back = page.locator("svg.timeline g.row.compensation")
    assert forward.count() == 50
    assert back.count() == 24  # s01-s20, the group of three, s24: all that ran before s25
    names = [r.get_attribute("data-step") for r in back.all()]
    assert names[0] == "s24" and names[-1] == "s01"
    trio = [attempts(page.locator(f'g.row.compensation[data-step="{n}"]'))[0] for n in GROUP]
    assert max(b["start"] for b in trio) < min(b["end"] for b in trio)
    failed = page.locator('g.row.forward[data-step="s25"]')
    assert failed.get_attribute("data-status") == "failed"


def test_an_unknown_execution_is_an_error_page_saying_what_the_cli_says(
    page: Page, dashboard: Dashboard, log: Log
) -> None:
    saga, _ = log
    response = page.goto(dashboard.url + "executions/ffffffffffff")

    assert response is not None and response.status == 404
    said = saga("show", "ffffffffffff").stderr.strip()
    assert said.startswith("Error: no execution")
    assert page.locator("#error").inner_text() == said
    assert "Traceback" not in page.content()


# -- stats, stuck, workers -------------------------------------------------------------------


def test_the_stats_page_shows_the_cli_figures_and_charts(
    page: Page, dashboard: Dashboard, log: Log
) -> None:
    saga, _ = log
    figures = saga("stats", "--json").json()
    page.goto(dashboard.url + "stats")

    def tile(name: str) -> str:
        return page.locator(f"#tile-{name} .value").inner_text()

    assert tile("executions") == f"{figures['executions']:,}"
    assert tile("completion") == f"{figures['completion_rate'] * 100:.1f}%"
    assert tile("compensation") == f"{figures['compensation_rate'] * 100:.1f}%"
    assert tile("stuck-now") == "1"
    started = page.locator("svg.columns rect.column").all()
    assert (
        sum(int(bar.get_attribute("data-count") or 0) for bar in started) == (figures["executions"])
    )
    shares = {
        r.get_attribute("data-label"): int(r.get_attribute("data-value") or 0)
        for r in page.locator("svg.shares rect.share").all()
    }
    assert shares == {k: v for k, v in figures["statuses"].items() if k in shares}
    assert set(shares) == {"completed", "compensated", "stuck"}
    for step in figures["steps"]:
        bar = page.locator(f'svg.bars g.bar-row[data-label="{step["step"]}"]').first
        assert float(bar.get_attribute("data-value") or "nan") == pytest.approx(
            step["failure_rate"] or 0.0
        )
        timing = page.locator(f'svg.percentiles g.step-durations[data-step="{step["step"]}"]')
        p99 = timing.locator('rect[data-quantile="p99"]')
        assert float(p99.get_attribute("data-seconds") or "nan") == pytest.approx(
            step["duration"]["p99"], abs=1e-6
        )
    assert page.locator("#step-stats tbody tr").count() == len(figures["steps"])


def test_the_stats_window_and_saga_are_chosen_on_the_page(
    page: Page, dashboard: Dashboard, log: Log
) -> None:
    page.goto(dashboard.url + "stats")
    page.fill("input[name=saga]", "fifty-steps")
    page.fill("input[name=since]", "7d")
    page.click("form.filters button[type=submit]")
    page.wait_for_url(re.compile(r"since=7d"))

    assert page.locator("#tile-executions .value").inner_text() == "2"
    assert page.locator("#step-stats tbody tr").count() == 50
    response = page.goto(dashboard.url + "stats?since=soon")
    assert response is not None and response.status == 400
    assert page.locator("#error").inner_text().startswith("Error: 'soon' is not a duration")


def test_the_stuck_page_is_a_work_queue_with_the_interrupted_below(
    page: Page, dashboard: Dashboard, log: Log
) -> None:
    _, ids = log
    page.goto(dashboard.url + "stuck")

    queue = page.locator("#queue tbody tr")
    assert queue.count() == 1
    assert queue.get_attribute("data-id") == ids["stuck"]
    assert "flight compensation failed on attempt 5" in queue.inner_text()
    interrupted = page.locator("#interrupted tbody tr")
    assert [r.get_attribute("data-id") for r in interrupted.all()] == [ids["interrupted"]]
    assert page.locator("form.action").count() == 0  # read-only


def test_the_workers_page_shows_live_workers_and_marks_a_killed_one_dead(
    page: Page, dashboard: Dashboard, log: Log
) -> None:
    saga, _ = log
    # It takes only a saga this log has no execution of, so it changes nothing.
    worker = subprocess.Popen(
        [saga_executable(), "--db", str(saga.db), "--load", str(SAGAS), "worker"]
        + ["--saga", "slow-wait", "--poll", "0.2", "--lease", "3"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        env=cli_env(),
    )
    try:
        wait_for(lambda: query(saga.db, "SELECT id FROM saga_worker"), "the worker to register")
        page.goto(dashboard.url + "workers")
        row = page.locator("#workers tbody tr")
        assert row.get_attribute("data-state") == "live"
        assert f":{worker.pid}" in row.inner_text()
        assert "slow-wait" in row.inner_text()

        worker.send_signal(signal.SIGKILL)
        worker.wait()
        page.wait_for_selector('#workers tr[data-state="dead"]')  # the page refreshes itself
    finally:
        stop_process(worker)


# -- read-only and the host check -------------------------------------------------------------


def test_a_read_only_dashboard_has_no_actions_to_call(dashboard: Dashboard, log: Log) -> None:
    saga, ids = log
    before = event_rows(saga.db, ids["interrupted"])

    for action in ("resume", "compensate", "cancel", "resolve"):
        response = dashboard.post(f"/executions/{ids['interrupted']}/{action}")
        assert response.status_code in (404, 405), action
    assert dashboard.get("/login").status_code == 404
    assert event_rows(saga.db, ids["interrupted"]) == before


def test_a_page_asked_for_under_a_foreign_host_name_is_refused(dashboard: Dashboard) -> None:
    # A DNS-rebinding page would reach the loopback dashboard under its own name.
    assert dashboard.get("/executions", headers={"Host": "evil.example"}).status_code == 400
    assert dashboard.get("/executions", headers={"Host": "localhost"}).status_code == 200
