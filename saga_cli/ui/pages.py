"""The dashboard's pages: each reads one of the CLI's read models and renders a template.

Handlers are plain functions (FastAPI runs them on worker threads, so the
store's blocking reads never hold up the event loop) and take their query
parameters as text: a filter that does not parse is shown on the page as
the CLI's ``Error: …`` line, with the form kept for correcting it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from saga_cli import stats as figures
from saga_cli.domain import Event, EventType, SagaStatus, is_terminal
from saga_cli.durations import format_seconds, format_window, parse_duration
from saga_cli.errors import InvalidInputError
from saga_cli.store import ExecutionRecord
from saga_cli.timeline import Attempt
from saga_cli.ui import svg
from saga_cli.ui.app import dashboard_of
from saga_cli.ui.readable import percent
from saga_cli.views import (
    ExecutionView,
    Page,
    describe,
    detail_line,
    is_interrupted,
    list_page,
)
from saga_cli.watch import UNFINISHED
from saga_cli.worker import list_workers

router = APIRouter()

PAGE_SIZES = (20, 50, 100, 200)
DEFAULT_PAGE_SIZE = 50
WINDOWS = ("15m", "1h", "6h", "24h", "7d", "30d")
QUEUE_SIZE = 50


def _given(value: str | None) -> str | None:
    """A query parameter, None when absent or left blank in the form."""
    return value.strip() if value and value.strip() else None


def _limit(text: str | None, default: int = DEFAULT_PAGE_SIZE, most: int = 500) -> int:
    if text is None:
        return default
    from saga_cli.limits import whole

    number = whole(text, 1, most)
    if number is None:
        raise InvalidInputError(
            f"limit must be a whole number from 1 to {most} (got {text[:40]!r})"
        )
    return number


def _url(path: str, **params: str | int | None) -> str:
    """`path` with the given query parameters, leaving out the empty ones."""
    kept = {k: v for k, v in params.items() if v not in (None, "")}
    return f"{path}?{urlencode(kept)}" if kept else path


# -- executions -------------------------------------------------------------------------


@router.get("/executions", response_class=HTMLResponse)
def executions(
    request: Request,
    status: str | None = None,
    saga: str | None = None,
    since: str | None = None,
    until: str | None = None,
    limit: str | None = None,
    cursor: str | None = None,
) -> HTMLResponse:
    """Executions newest first, filtered like ``saga list``, a keyset page at a time."""
    dashboard = dashboard_of(request)
    filters = {
        "status": _given(status),
        "saga": _given(saga),
        "since": _given(since),
        "until": _given(until),
        "limit": _given(limit),
    }
    error = None
    page = Page([], None)
    sizes = set(PAGE_SIZES)
    try:
        size = _limit(filters["limit"])
        sizes.add(size)  # a size typed into the address stays selected
        page = list_page(
            dashboard.store,
            status=filters["status"],
            saga=filters["saga"],
            since=filters["since"],
            until=filters["until"],
            limit=size,
            cursor=_given(cursor),
        )
    except InvalidInputError as exc:
        error = str(exc)
    names = sorted({d.name for d in dashboard.store.definition_versions()})
    return dashboard.page(
        request,
        "executions.html",
        status_code=400 if error else 200,
        error=error,
        filters=filters,
        statuses=[s.value for s in SagaStatus],
        saga_names=names,
        windows=WINDOWS,
        page_sizes=sorted(sizes),
        rows=page.rows,
        paged=cursor is not None,
        first_url=_url("/executions", **filters),
        next_url=None
        if page.next_cursor is None
        else _url("/executions", **filters, cursor=page.next_cursor),
        live=cursor is None,  # new executions appear on the first page only
    )


# -- one execution ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Failure:
    """One failed attempt of a step or a compensation, for the page's failures list."""

    step: str
    phase: str
    attempt: int
    at: float | None
    error: str
    retried: bool


def failures_of(view: ExecutionView) -> list[Failure]:
    """Every failed attempt with its error, in the order they happened."""
    lines = view.timeline.forward + view.timeline.compensation
    failed: list[Attempt] = [
        a for line in lines for a in line.attempts if a.outcome in ("failed", "retrying")
    ]
    failed.sort(key=lambda a: a.ended_at or 0.0)
    return [
        Failure(a.step, a.phase, a.number, a.ended_at, a.error or "", a.outcome == "retrying")
        for a in failed
    ]


def actions_for(record: ExecutionRecord, interrupted: bool) -> list[str]:
    """The actions that make sense for an execution now (the orchestrator still decides).

    A stuck one is resumed (a fresh round of attempts) or resolved by hand;
    one that no live process runs can be resumed, compensated or cancelled;
    one that a live process runs can only be cancelled (taken over).
    """
    if is_terminal(record.status):
        return []
    if record.status is SagaStatus.STUCK:
        return ["resume", "resolve"]
    queued = record.status is SagaStatus.PENDING and record.owner is None
    if interrupted or queued:
        return ["resume", "compensate", "cancel"]
    return ["cancel"]


@router.get("/executions/{execution_id}", response_class=HTMLResponse)
def execution(request: Request, execution_id: str) -> HTMLResponse:
    """One execution: its timeline as a chart, its steps, payload, failures and event log."""
    dashboard = dashboard_of(request)
    view = describe(dashboard.store, execution_id)
    record = view.record
    now = time.time()
    live = not is_terminal(record.status) and record.status is not SagaStatus.STUCK
    driven = live and not view.interrupted  # by a live process: its open step grows till now
    try:
        payload = json.dumps(json.loads(record.payload), indent=2, ensure_ascii=False)
    except ValueError:
        payload = record.payload
    return dashboard.page(
        request,
        "execution.html",
        view=view,
        record=record,
        chart=svg.timeline_chart(view.timeline, until=now if driven else None),
        payload=payload,
        failures=failures_of(view),
        event_detail=detail_line,
        event_json=lambda e: json.dumps(e.detail, indent=2, ensure_ascii=False),
        actions=actions_for(record, view.interrupted),
        live=live,
        took=format_seconds(
            None
            if view.timeline.started_at is None
            else (view.timeline.ended_at or now) - view.timeline.started_at
        ),
    )


# -- stats ------------------------------------------------------------------------------


def _charts(result: figures.Stats) -> dict[str, Any]:
    """The stats page's SVG charts, from the same figures ``saga stats`` prints."""
    from saga_cli.stats import quantile

    counts = result.statuses
    outcome = [
        svg.Bar(s.value, counts[s], f"{counts[s]:,} ({percent(result.rate(s))})", s.value)
        for s in figures.FINISHED
    ]
    failure_rows = [
        svg.Bar(
            step.step,
            step.failure_rate or 0.0,
            f"{percent(step.failure_rate)} ({step.failures:,} of {step.finished:,})",
            "failure",
        )
        for step in result.steps
    ]
    timings = [
        svg.Percentiles(step.step, *(quantile(step.durations, q) for q in figures.QUANTILES))
        for step in result.steps
    ]
    histogram = result.duration_histogram()
    while histogram and histogram[-1][1] == 0:
        histogram.pop()
    buckets = [
        svg.Bar(
            "longer" if bound == float("inf") else f"≤ {format_seconds(bound)}",
            count,
            f"{count:,}",
            "duration",
        )
        for bound, count in histogram
    ]
    window = f"the last {format_window(result.until - result.since)}"
    return {
        "outcomes": svg.shares(outcome, label=f"how executions of {window} ended"),
        "started": svg.columns(
            result.started, result.since, result.until, label=f"executions started in {window}"
        ),
        "failures": svg.bars(failure_rows, label="failure rate per step", scale=1.0)
        if failure_rows
        else None,
        "durations": svg.percentiles(timings, label="step durations p50, p95, p99")
        if timings
        else None,
        "histogram": svg.bars(buckets, label="saga durations") if buckets else None,
    }


@router.get("/stats", response_class=HTMLResponse)
def stats(request: Request, since: str | None = None, saga: str | None = None) -> HTMLResponse:
    """Completion and compensation rates, step failure rates and durations, starts over time."""
    dashboard = dashboard_of(request)
    window_text = _given(since) or "1h"
    saga_name = _given(saga)
    result = figures.compute(dashboard.store, window=parse_duration(window_text), saga=saga_name)
    return dashboard.page(
        request,
        "stats.html",
        stats=result,
        since=window_text,
        saga=saga_name,
        windows=WINDOWS,
        saga_names=sorted({d.name for d in dashboard.store.definition_versions()}),
        charts=_charts(result),
        rate=lambda status: result.rate(SagaStatus(status)),
        statuses=SagaStatus,
        quantile=figures.quantile,
        live=True,
    )


# -- the stuck work queue ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QueueItem:
    """A stuck execution waiting for an operator, with the error that stopped it."""

    record: ExecutionRecord
    error: str
    failed_step: str | None


def _last_failure(events: Sequence[Event]) -> tuple[str, str | None]:
    for event in reversed(events):
        if event.type in (EventType.STEP_FAILED, EventType.COMPENSATION_FAILED):
            return str((event.detail or {}).get("error", "")), event.step
    return "", None


@router.get("/stuck", response_class=HTMLResponse)
def stuck(request: Request) -> HTMLResponse:
    """Stuck executions as a work queue, and the unfinished ones no live process owns."""
    dashboard = dashboard_of(request)
    store = dashboard.store
    now = time.time()
    records = store.list_executions(status=SagaStatus.STUCK, limit=QUEUE_SIZE)
    events = store.events_of([r.id for r in records])
    queue = [QueueItem(r, *_last_failure(events.get(r.id, []))) for r in records]
    interrupted: list[ExecutionRecord] = []
    for status in UNFINISHED:
        rows = store.list_executions(status=status, limit=QUEUE_SIZE)
        interrupted += [r for r in rows if is_interrupted(r, now)]
    interrupted.sort(key=lambda r: (r.created_at, r.id), reverse=True)
    return dashboard.page(
        request,
        "stuck.html",
        queue=queue,
        queue_size=QUEUE_SIZE,
        interrupted=interrupted[:QUEUE_SIZE],
        live=True,
    )


# -- workers ----------------------------------------------------------------------------


@router.get("/workers", response_class=HTMLResponse)
def workers(request: Request) -> HTMLResponse:
    """The registered workers, their heartbeats and the executions they hold."""
    dashboard = dashboard_of(request)
    views = list_workers(dashboard.store)
    return dashboard.page(request, "workers.html", workers=views, live=True)
