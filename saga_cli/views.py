"""Read models: what ``list`` and ``show`` present, derived from the log alone.

No definition is needed to describe an execution, so ``saga show`` works on
any log, including executions of sagas this process has never loaded.
"""

from __future__ import annotations

import base64
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from saga_cli import lease
from saga_cli.domain import (
    Event,
    EventType,
    SagaDefinition,
    SagaStatus,
    StepKind,
    is_terminal,
    policies_of,
)
from saga_cli.errors import InvalidInputError
from saga_cli.limits import MAX_CURSOR_CHARS
from saga_cli.store import ExecutionRecord, SagaStore
from saga_cli.timeline import Timeline, build, failure_text


def is_interrupted(record: ExecutionRecord, now: float | None = None) -> bool:
    """Non-terminal, not parked as stuck, and no live process owns it.

    A pending execution nobody ever claimed (``--submit``) is queued for a
    worker, not interrupted.
    """
    if is_terminal(record.status) or record.status is SagaStatus.STUCK:
        return False
    if record.status is SagaStatus.PENDING and record.owner is None:
        return False
    return not lease.holds_lease(record, time.time() if now is None else now)


@dataclass(frozen=True, slots=True)
class StepView:
    """One step as the log tells it."""

    name: str
    status: str
    attempts: int = 0
    started_at: float | None = None
    ended_at: float | None = None
    error: str | None = None
    compensation_attempts: int = 0

    @property
    def duration(self) -> float | None:
        """Seconds from the first start to the last outcome, if both are known."""
        if self.started_at is None or self.ended_at is None:
            return None
        return self.ended_at - self.started_at

    def as_json(self) -> dict[str, Any]:
        """The JSON shape of ``saga show --json``."""
        return {
            "name": self.name,
            "status": self.status,
            "attempts": self.attempts,
            "compensation_attempts": self.compensation_attempts,
            "duration": self.duration,
            "error": self.error,
        }


@dataclass(frozen=True, slots=True)
class FailureView:
    """A failed call whose exception was unexpected: its type, message and traceback.

    The traceback holds the user's frames only (file, line, function, source
    line; never local variables), bounded in size when it was recorded.
    """

    step: str
    phase: str  # forward or compensation
    attempt: int
    at: float
    exception: str
    error: str
    traceback: str

    def as_json(self) -> dict[str, Any]:
        """The JSON shape of one of ``saga show --json``'s failures."""
        return {
            "step": self.step,
            "phase": self.phase,
            "attempt": self.attempt,
            "at": self.at,
            "exception": self.exception,
            "error": self.error,
            "traceback": self.traceback,
        }


def failures_of(events: Sequence[Event]) -> list[FailureView]:
    """The failed calls with a traceback, the newest of each step and phase (in log order).

    A step retried five times for the same bug shows its traceback once.
    """
    latest: dict[tuple[str, str], FailureView] = {}
    for event in events:
        if event.type not in (EventType.STEP_FAILED, EventType.COMPENSATION_FAILED):
            continue
        detail = event.detail or {}
        if event.step is None or "traceback" not in detail:
            continue
        phase = "forward" if event.type is EventType.STEP_FAILED else "compensation"
        latest.pop((event.step, phase), None)  # re-inserted: ordered by the newest
        latest[(event.step, phase)] = FailureView(
            step=event.step,
            phase=phase,
            attempt=event.attempt,
            at=event.at,
            exception=str(detail.get("exception") or detail.get("kind") or ""),
            error=str(detail.get("error", "")),
            traceback=str(detail["traceback"]),
        )
    return list(latest.values())


@dataclass(frozen=True, slots=True)
class ExecutionView:
    """An execution with its step summary, full transition log and debuggable failures."""

    record: ExecutionRecord
    interrupted: bool
    steps: list[StepView]
    events: list[Event]
    timeline: Timeline
    failures: list[FailureView] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """The JSON shape of ``saga show --json``."""
        r = self.record
        return {
            **summary_json(r, self.interrupted),
            "payload": json.loads(r.payload),
            "owner": r.owner,
            "lease_expires_at": r.lease_expires_at,
            "version": r.version,
            "steps": [s.as_json() for s in self.steps],
            "timeline": self.timeline.as_json(),
            "failures": [f.as_json() for f in self.failures],
            "events": [
                {
                    "seq": e.seq,
                    "step": e.step,
                    "type": e.type.value,
                    "attempt": e.attempt,
                    "at": e.at,
                    "detail": e.detail,
                }
                for e in self.events
            ],
        }


def summary_json(record: ExecutionRecord, interrupted: bool) -> dict[str, Any]:
    """The JSON shape of one row of ``saga list --json``."""
    return {
        "id": record.id,
        "saga": record.saga,
        "status": record.status.value,
        "step": record.step,
        "interrupted": interrupted,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
    }


def detail_line(event: Event) -> str:
    """An event's detail as one line for people: its error, reason or note (else blank)."""
    detail = event.detail or {}
    if "error" in detail:
        retry = " (will retry)" if detail.get("retry_at") is not None else ""
        return f"{failure_text(detail)}{retry}"
    if "reason" in detail:
        return str(detail["reason"])
    if "note" in detail:
        return f"note: {detail['note']}"
    return ""


_STEP_STATUS = {
    EventType.STEP_STARTED: "running",
    EventType.STEP_SUCCEEDED: "succeeded",
    EventType.STEP_FAILED: "failed",
    EventType.COMPENSATION_STARTED: "compensating",
    EventType.COMPENSATION_SUCCEEDED: "compensated",
    EventType.COMPENSATION_FAILED: "compensation failed",
}


def step_views(events: Sequence[Event], step_names: Sequence[str] = ()) -> list[StepView]:
    """Summarise each step from the events; steps never started show as ``not run``."""
    order: list[str] = list(step_names)
    fields: dict[str, dict[str, Any]] = {}
    for event in events:
        if event.step is None or event.type not in _STEP_STATUS:
            continue
        if event.step not in order:
            order.append(event.step)
        info = fields.setdefault(event.step, {"status": "not run", "attempts": 0, "comp": 0})
        info["status"] = _STEP_STATUS[event.type]
        if event.type is EventType.STEP_STARTED:
            info["attempts"] = max(info["attempts"], event.attempt)
            info.setdefault("started_at", event.at)
        elif event.type is EventType.COMPENSATION_STARTED:
            info["comp"] = max(info["comp"], event.attempt)
        else:
            info["ended_at"] = event.at
        if event.type in (EventType.STEP_FAILED, EventType.COMPENSATION_FAILED):
            detail = event.detail or {}
            info["error"] = failure_text(detail)
            if detail.get("retry_at") is not None:
                info["status"] = (
                    "retrying" if event.type is EventType.STEP_FAILED else ("compensation retrying")
                )
    return [
        StepView(
            name=name,
            status=fields.get(name, {}).get("status", "not run"),
            attempts=fields.get(name, {}).get("attempts", 0),
            started_at=fields.get(name, {}).get("started_at"),
            ended_at=fields.get(name, {}).get("ended_at"),
            error=fields.get(name, {}).get("error"),
            compensation_attempts=fields.get(name, {}).get("comp", 0),
        )
        for name in order
    ]


def logged_step_names(store: SagaStore, record: ExecutionRecord) -> tuple[str, ...]:
    """The step names of the definition version `record` started under, as the log recorded it.

    Falls back to the saga's newest recorded version (executions from before
    versions were recorded), or to nothing.
    """
    versions = store.definition_versions(record.saga)
    for version in versions:
        if version.version == record.definition_version:
            return tuple(str(step[0]) for step in version.steps)
    return tuple(str(step[0]) for step in versions[0].steps) if versions else ()


def describe(
    store: SagaStore,
    execution_id: str,
    steps_of: Callable[[str], Sequence[str]] | None = None,
) -> ExecutionView:
    """Load one execution (by id or unique prefix) with its steps and events.

    Args:
        store: the saga log.
        execution_id: an id or a unique prefix of one.
        steps_of: the step names of a saga, by saga name, so that steps not
            yet run show too; by default the names the log recorded for the
            execution's definition version (no code needs loading).

    Raises:
        UnknownExecutionError: no execution matches.
        AmbiguousIdError: the prefix matches several.
    """
    record = store.get(store.resolve_id(execution_id))
    events = store.events(record.id)
    names = logged_step_names(store, record) if steps_of is None else steps_of(record.saga)
    steps = step_views(events, names)
    return ExecutionView(
        record, is_interrupted(record), steps, events, build(events, names), failures_of(events)
    )


def page_cursor(record: ExecutionRecord) -> str:
    """An opaque token for ``saga list --cursor``: the page after `record`.

    It holds the row's (created_at, id), the list's sort key, so a page
    starts exactly after the previous one however many executions are added
    meanwhile (they sort before it).
    """
    raw = f"{record.created_at!r}:{record.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def parse_cursor(token: str) -> tuple[float, str]:
    """The (created_at, id) inside a token from :func:`page_cursor`.

    Raises:
        InvalidInputError: the token was not made by ``saga list``.
    """
    after = (math.nan, "")
    if len(token) <= MAX_CURSOR_CHARS:
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
            created, _, execution_id = raw.partition(":")
            after = (float(created), execution_id)
        except ValueError:  # binascii.Error and UnicodeDecodeError are ValueErrors
            pass
    if not math.isfinite(after[0]) or not after[1]:
        raise InvalidInputError(
            f"{token[:MAX_CURSOR_CHARS]!r} is not a cursor printed by saga list"
        )
    return after


def parse_status(text: str) -> SagaStatus:
    """A status by its stored name.

    Raises:
        InvalidInputError: no status has that name.
    """
    try:
        return SagaStatus(text)
    except ValueError:
        names = ", ".join(s.value for s in SagaStatus)
        raise InvalidInputError(f"unknown status {text!r}; choose from {names}") from None


@dataclass(frozen=True, slots=True)
class Page:
    """One page of ``saga list`` and the cursor of the next, if more rows follow."""

    rows: list[tuple[ExecutionRecord, bool]]
    next_cursor: str | None

    def as_json(self) -> list[dict[str, Any]]:
        """``saga list --json``: an array of summaries, each with its own cursor."""
        return [
            {**summary_json(record, interrupted), "cursor": page_cursor(record)}
            for record, interrupted in self.rows
        ]


def list_page(
    store: SagaStore,
    *,
    status: str | None = None,
    saga: str | None = None,
    since: str | None = None,
    until: str | None = None,
    limit: int = 20,
    cursor: str | None = None,
    now: float | None = None,
) -> Page:
    """One page of executions, newest first, filtered as ``saga list`` is told.

    Args:
        store: the saga log.
        status: a status name.
        saga: a saga name.
        since: created at or after this: a duration ago (``1h``) or an ISO time.
        until: created before this, in the same forms.
        limit: the page size.
        cursor: where the page starts, from the previous page.
        now: the time durations count back from (default: now).

    Raises:
        InvalidInputError: a filter or the cursor does not parse.
    """
    from saga_cli.durations import parse_instant

    now = time.time() if now is None else now
    records = store.list_executions(
        status=None if status is None else parse_status(status),
        saga=saga,
        since=None if since is None else parse_instant(since, now),
        until=None if until is None else parse_instant(until, now),
        after=None if cursor is None else parse_cursor(cursor),
        limit=limit + 1,  # one more tells whether a next page exists
    )
    page = records[:limit]
    rows = [(record, is_interrupted(record, now)) for record in page]
    return Page(rows, page_cursor(page[-1]) if len(records) > limit else None)


PRUNABLE = (SagaStatus.COMPLETED, SagaStatus.COMPENSATED)


def prune(
    store: SagaStore, older_than: str, statuses: Sequence[str] = (), now: float | None = None
) -> tuple[int, float, list[SagaStatus]]:
    """Delete finished executions older than a duration (``saga prune``).

    Returns:
        (how many were deleted, the cutoff time, the statuses pruned).

    Raises:
        InvalidInputError: the age does not parse, or a status is not terminal.
    """
    from saga_cli.durations import parse_duration

    cutoff = (time.time() if now is None else now) - parse_duration(older_than)
    wanted = [parse_status(s) for s in statuses] or list(PRUNABLE)
    return store.prune(cutoff, wanted), cutoff, wanted


def definition_rows(loaded: Sequence[SagaDefinition], store: SagaStore) -> list[dict[str, Any]]:
    """What ``saga definitions`` shows: the loaded sagas in full, then those only the log knows.

    A saga the log has seen but this process has not loaded shows its newest
    recorded version as the log recorded it: the steps, whether each has a
    compensation (its kind says so), and the policies of the version's first
    execution (logs from before they were recorded have none).
    """
    rows: list[dict[str, Any]] = []
    recorded = store.definition_versions()
    versions: dict[str, int] = {}
    for record in recorded:
        versions[record.name] = versions.get(record.name, 0) + 1
    for definition in loaded:
        model = definition.payload
        rows.append(
            {
                "saga": definition.name,
                "version": definition.version,
                "loaded": True,
                "source": definition.source,
                "description": definition.description,
                "payload": None if model is None else model.__qualname__,
                "concurrency_key": definition.concurrency_key is not None,
                "versions_in_log": versions.get(definition.name, 0),
                "steps": [
                    {
                        "name": step.name,
                        "kind": step.kind.value,
                        "group": step.group,
                        "compensation": step.compensation is not None,
                        **policies_of(step, definition.step_timeout),
                    }
                    for step in definition.steps
                ],
            }
        )
    shown = {definition.name for definition in loaded}
    for record in recorded:  # newest first: the first of each name is its latest
        if record.name in shown:
            continue
        shown.add(record.name)
        rows.append(
            {
                "saga": record.name,
                "version": record.version,
                "loaded": False,
                "source": record.source,
                "description": "",
                "payload": None,
                "concurrency_key": None,
                "versions_in_log": versions[record.name],
                "steps": [_logged_step(*step) for step in record.steps],
            }
        )
    return rows


def _logged_step(
    name: str, kind: str, group: str | None, policies: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """One step of a recorded version (see domain.recorded_steps), in definition_rows' shape."""
    row = {
        "name": name,
        "kind": kind,
        "group": group,
        # a compensatable step always has a compensation (SagaDefinition checks it)
        "compensation": kind == StepKind.COMPENSATABLE.value,
    }
    return {**row, **(policies or {})}
