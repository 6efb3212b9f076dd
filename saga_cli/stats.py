"""The figures a saga log is monitored by, computed from the log in bounded time.

Completion rate, compensation frequency, step failure rates, step durations
and the pending count: what tells an operator whether sagas finish, how often
they are undone, and which step fails or is slow.

Counts (per status, in flight, stuck) come from index-only SQL aggregates
over the window, so they are exact whatever the window holds. Step failure
rates and every duration percentile come from the events of the newest
``sample`` executions of the window (500 by default, ``saga stats
--sample N``): reading every event of a large window would not fit the
command's 0.2 s budget, and the p99 of 500 sagas is their fifth slowest.
``sampled`` in the result says how many were read.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from saga_cli import lease
from saga_cli.domain import SagaStatus
from saga_cli.store import SagaStore
from saga_cli.timeline import FORWARD, pair_attempts

log = logging.getLogger(__name__)
DEFAULT_SAMPLE = 500
QUANTILES = (0.5, 0.95, 0.99)
SPARK_BUCKETS = 24
# Upper bounds (seconds) of the saga-duration histogram's buckets.
DURATION_BOUNDS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, math.inf)
FINISHED = (SagaStatus.COMPLETED, SagaStatus.COMPENSATED, SagaStatus.STUCK)


def quantile(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank `q`-quantile of sorted `values` (None when empty)."""
    if not values:
        return None
    rank = max(1, math.ceil(q * len(values)))
    return values[rank - 1]


@dataclass(frozen=True, slots=True)
class StepStats:
    """One step's forward attempts and compensations in the sample."""

    step: str
    attempts: int
    finished: int
    failures: int
    compensations: int
    compensation_failures: int
    durations: tuple[float, ...]  # seconds per finished forward attempt, sorted

    @property
    def failure_rate(self) -> float | None:
        """Failed attempts (retried ones included) per attempt that has an outcome."""
        return self.failures / self.finished if self.finished else None

    def as_json(self) -> dict[str, Any]:
        """The JSON shape of one entry of ``stats --json``'s ``steps``."""
        return {
            "step": self.step,
            "attempts": self.attempts,
            "failures": self.failures,
            "failure_rate": self.failure_rate,
            "compensations": self.compensations,
            "compensation_failures": self.compensation_failures,
            "duration": {f"p{round(q * 100)}": quantile(self.durations, q) for q in QUANTILES},
        }


@dataclass(frozen=True, slots=True)
class Stats:
    """Monitoring figures for the executions created in one window."""

    since: float
    until: float
    saga: str | None
    statuses: dict[SagaStatus, int]
    in_flight: dict[str, int]  # pending, running, compensating, interrupted: now, whole log
    stuck_now: int
    sampled: int
    steps: list[StepStats] = field(default_factory=list)
    saga_durations: tuple[float, ...] = ()  # finished executions in the sample, sorted
    started: list[int] = field(default_factory=list)  # creations per slice of the window

    @property
    def total(self) -> int:
        """Executions created in the window."""
        return sum(self.statuses.values())

    @property
    def finished(self) -> int:
        """Executions of the window that reached completed, compensated or stuck."""
        return sum(self.statuses[s] for s in FINISHED)

    def rate(self, status: SagaStatus) -> float | None:
        """Share of the window's finished executions that ended in `status`."""
        return self.statuses[status] / self.finished if self.finished else None

    @property
    def throughput(self) -> float:
        """Finished executions per second over the window."""
        return self.finished / max(self.until - self.since, 1e-9)

    def duration_histogram(self) -> list[tuple[float, int]]:
        """(upper bound in seconds, count) of saga durations, for the sample."""
        counts = [0] * len(DURATION_BOUNDS)
        for seconds in self.saga_durations:
            counts[next(i for i, b in enumerate(DURATION_BOUNDS) if seconds <= b)] += 1
        return list(zip(DURATION_BOUNDS, counts, strict=True))

    def as_json(self) -> dict[str, Any]:
        """The JSON shape of ``saga stats --json``."""
        return {
            "since": self.since,
            "until": self.until,
            "saga": self.saga,
            "executions": self.total,
            "statuses": {s.value: n for s, n in self.statuses.items()},
            "completion_rate": self.rate(SagaStatus.COMPLETED),
            "compensation_rate": self.rate(SagaStatus.COMPENSATED),
            "stuck_rate": self.rate(SagaStatus.STUCK),
            "stuck": self.stuck_now,
            "in_flight": dict(self.in_flight),
            "throughput_per_second": self.throughput,
            "sampled": self.sampled,
            "saga_duration": {
                f"p{round(q * 100)}": quantile(self.saga_durations, q) for q in QUANTILES
            },
            "saga_duration_histogram": [
                {"le": None if math.isinf(b) else b, "count": n}
                for b, n in self.duration_histogram()
            ],
            "started_per_slice": list(self.started),
            "steps": [s.as_json() for s in self.steps],
        }


def in_flight(store: SagaStore, now: float, *, saga: str | None = None) -> dict[str, int]:
    """Pending, running and compensating executions now, and how many are interrupted.

    Interrupted is decided once per owner (a dead owner's executions are all
    interrupted), so the cost does not grow with the number of executions.
    """
    counts = {"pending": 0, "running": 0, "compensating": 0, "interrupted": 0}
    alive: dict[str, bool] = {}
    for group in store.lease_groups(now, saga=saga):
        counts[group.status.value] += group.count
        owner = group.owner
        if owner is not None and group.lease_live and owner not in alive:
            alive[owner] = not lease.owner_is_dead(owner)
        if owner is None or not group.lease_live or not alive[owner]:
            counts["interrupted"] += group.count
    return counts


def _step_stats(store: SagaStore, execution_ids: Sequence[str]) -> list[StepStats]:
    tallies: dict[str, dict[str, Any]] = {}
    for records in store.step_records(execution_ids).values():
        for attempt in pair_attempts(records):
            tally = tallies.setdefault(
                attempt.step,
                {"attempts": 0, "finished": 0, "failures": 0, "comp": 0, "comp_failures": 0},
            )
            failed = attempt.outcome in ("failed", "retrying")
            if attempt.phase == FORWARD:
                tally["attempts"] += 1
                tally["finished"] += attempt.outcome != "running"
                tally["failures"] += failed
                if attempt.duration is not None:
                    tally.setdefault("durations", []).append(attempt.duration)
            else:
                tally["comp"] += 1
                tally["comp_failures"] += failed
    return [
        StepStats(
            step,
            t["attempts"],
            t["finished"],
            t["failures"],
            t["comp"],
            t["comp_failures"],
            tuple(sorted(t.get("durations", ()))),
        )
        for step, t in tallies.items()
    ]


def compute(
    store: SagaStore,
    *,
    window: float,
    saga: str | None = None,
    now: float | None = None,
    sample: int = DEFAULT_SAMPLE,
) -> Stats:
    """Gather the monitoring figures of the executions created in the last `window` seconds.

    Args:
        store: the saga log.
        window: how far back to look, in seconds.
        saga: only executions of this saga.
        now: the end of the window (default: the current time).
        sample: how many of the window's newest executions to read events of.
    """
    began = time.perf_counter()
    until = time.time() if now is None else now
    since = until - window
    statuses = store.count_statuses(saga=saga, since=since, until=until)
    records = store.list_executions(saga=saga, since=since, until=until, limit=sample)
    durations = sorted(r.updated_at - r.created_at for r in records if r.status in FINISHED)
    stuck_now = store.count_statuses(statuses=(SagaStatus.STUCK,), saga=saga)[SagaStatus.STUCK]
    result = Stats(
        since=since,
        until=until,
        saga=saga,
        statuses=statuses,
        in_flight=in_flight(store, until, saga=saga),
        stuck_now=stuck_now,
        sampled=len(records),
        steps=_step_stats(store, [r.id for r in records]),
        saga_durations=tuple(durations),
        started=store.created_histogram(since, until, SPARK_BUCKETS, saga=saga),
    )
    log.info(
        "stats over %d executions, events of %d read, in %.3f s",
        result.total,
        result.sampled,
        time.perf_counter() - began,
    )
    return result
