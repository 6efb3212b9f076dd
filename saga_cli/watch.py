"""``saga watch``: snapshots of the log taken again and again, for a live view.

Each snapshot costs a few index-only queries (counts over a short window,
the unfinished executions, the newest of them), so one terminal can watch a
log that another is writing to at full speed; readers never block the
writer in WAL mode.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from saga_cli.domain import SagaStatus
from saga_cli.engine.outage import Outage
from saga_cli.errors import LogUnavailableError
from saga_cli.stats import in_flight
from saga_cli.store import ExecutionRecord, SagaStore
from saga_cli.views import is_interrupted

log = logging.getLogger(__name__)
UNFINISHED = (SagaStatus.RUNNING, SagaStatus.COMPENSATING, SagaStatus.PENDING)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the log holds at one moment."""

    at: float
    window: float
    statuses: dict[SagaStatus, int]  # created in the window
    in_flight: dict[str, int]  # now, whole log
    stuck_now: int
    rows: list[tuple[ExecutionRecord, bool]] = field(default_factory=list)
    started: list[int] = field(default_factory=list)


def snapshot(
    store: SagaStore,
    *,
    window: float = 300.0,
    limit: int = 15,
    saga: str | None = None,
    now: float | None = None,
) -> Snapshot:
    """Read one snapshot: the window's counters and the newest executions in flight."""
    now = time.time() if now is None else now
    newest: list[ExecutionRecord] = []
    for status in UNFINISHED:
        newest += store.list_executions(status=status, saga=saga, limit=limit)
    newest.sort(key=lambda r: (r.created_at, r.id), reverse=True)
    stuck = store.count_statuses(statuses=(SagaStatus.STUCK,), saga=saga)
    return Snapshot(
        at=now,
        window=window,
        statuses=store.count_statuses(saga=saga, since=now - window, until=now),
        in_flight=in_flight(store, now, saga=saga),
        stuck_now=stuck[SagaStatus.STUCK],
        rows=[(r, is_interrupted(r, now)) for r in newest[:limit]],
        started=store.created_histogram(now - window, now, 30, saga=saga),
    )


def run(
    take: Callable[[], Snapshot],
    show: Callable[[Snapshot], None],
    *,
    interval: float,
    count: int | None = None,
    sleep: Callable[[float], None] = time.sleep,
    outage: Outage | None = None,
) -> int:
    """Take and show snapshots every `interval` seconds until `count` or Ctrl-C.

    While the log is unreachable the last snapshot stays on screen and the
    next is taken once it answers (`outage` logs when it went and came back).

    Returns:
        How many snapshots were shown. Ctrl-C ends the loop normally: it is
        how a watch is meant to stop, not an error.
    """
    outage = outage or Outage()
    shown = 0
    try:
        while count is None or shown < count:
            began = time.perf_counter()
            try:
                snap = take()
            except LogUnavailableError as exc:
                outage.failed(exc)
                outage.check()
                sleep(min(interval, outage.delay()))
                continue
            outage.succeeded()
            show(snap)
            shown += 1
            log.debug("refresh %d took %.3f s", shown, time.perf_counter() - began)
            if count is None or shown < count:
                sleep(interval)
    except KeyboardInterrupt:
        log.info("interrupted after %d refreshes", shown)
    return shown
