"""A worker's own metrics, in Prometheus's format: what it claimed, finished and lost, and how fast.

Unlike ``saga stats --format prometheus`` (figures read from the log over a
window, :mod:`saga_cli.prometheus`), these are counted by the worker as it
goes, so they are true counters: a scraper takes rates of them. Each worker
has a registry of its own (never prometheus_client's global one), filled
through the :class:`~saga_cli.worker.WorkerObserver` interface; gauges (in
flight, log outage) are read when scraped. Only ``saga worker --http-port``
imports this module.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from saga_cli.engine import Outcome
from saga_cli.errors import SagaError
from saga_cli.store import ExecutionRecord
from saga_cli.worker import WorkerObserver

if TYPE_CHECKING:
    from saga_cli.worker import Worker

# Participant calls: from a local function (a millisecond) to a slow service (a minute).
STEP_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# Commits: an fsync (SQLite) or a round trip (PostgreSQL), a busy timeout at worst.
COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)


class _OutageCollector(Collector):
    """The worker's log outages, read from its outage tracker when scraped (absent: zeros)."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    def collect(self) -> Iterator[Metric]:
        outage = getattr(self.worker, "outage", None)
        count = float(getattr(outage, "count", 0) or 0)
        active = 1.0 if getattr(outage, "active", False) else 0.0
        seconds = float(getattr(outage, "seconds_total", 0.0) or 0.0)
        yield CounterMetricFamily(
            "saga_worker_log_outages", "Times the log stopped answering this worker.", value=count
        )
        yield GaugeMetricFamily(
            "saga_worker_log_outage_active", "1 while the log does not answer, else 0.", active
        )
        yield CounterMetricFamily(
            "saga_worker_log_outage_seconds",
            "Seconds this worker spent waiting for the log to answer again.",
            value=seconds,
        )


class WorkerMetrics(WorkerObserver):
    """Counts what one worker does into a registry of its own.

    Args:
        worker: the worker observed; its in-flight count and outage tracker
            are read at each scrape. Call :meth:`Worker.observe` with this
            object (``serve_health`` does) for the counts to flow.
    """

    def __init__(self, worker: Worker) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self._claimed = Counter(
            "saga_worker_executions_claimed", "Executions this worker took.", ["saga"], registry=r
        )
        self._finished = Counter(
            "saga_worker_executions_finished",
            "Executions this worker brought to rest, by final status.",
            ["saga", "status"],
            registry=r,
        )
        self._lost = Counter(
            "saga_worker_executions_lost",
            "Executions taken over by another worker after this one's lease ran out (fencing).",
            registry=r,
        )
        self._refused = Counter(
            "saga_worker_executions_refused",
            "Executions this worker could not run (saga unknown or changed incompatibly).",
            registry=r,
        )
        in_flight = Gauge(
            "saga_worker_executions_in_flight", "Executions this worker holds now.", registry=r
        )
        in_flight.set_function(lambda: float(worker.in_flight))
        self._calls = Histogram(
            "saga_worker_step_duration_seconds",
            "Duration of participant calls (steps' actions and compensations).",
            ["saga", "step", "phase", "result"],
            buckets=STEP_BUCKETS,
            registry=r,
        )
        self._call_children: dict[tuple[str, str, bool, bool], Histogram] = {}
        self._commits = Histogram(
            "saga_worker_commit_duration_seconds",
            "Duration of the log commits that make the executions' records durable.",
            buckets=COMMIT_BUCKETS,
            registry=r,
        )
        self._commit_failures = Counter(
            "saga_worker_commit_failures", "Log commits that failed.", registry=r
        )
        r.register(_OutageCollector(worker))
        ProcessCollector(registry=r)

    def exposition(self) -> bytes:
        """The registry in Prometheus's text format (what ``GET /metrics`` returns)."""
        return generate_latest(self.registry)

    # -- WorkerObserver ------------------------------------------------------------------

    def claimed(self, records: Sequence[ExecutionRecord]) -> None:
        """Count executions claimed, by saga."""
        for record in records:
            self._claimed.labels(record.saga).inc()

    def finished(self, outcome: Outcome) -> None:
        """Count an execution brought to rest, by saga and status."""
        self._finished.labels(outcome.saga, outcome.status.value).inc()

    def lost(self, execution_id: str) -> None:
        """Count an execution lost to fencing."""
        self._lost.inc()

    def refused(self, execution_id: str, error: SagaError) -> None:
        """Count an execution this worker could not run."""
        self._refused.inc()

    def call_finished(
        self, saga: str, step: str, compensating: bool, failed: bool, seconds: float
    ) -> None:
        """Observe a participant call's duration."""
        key = (saga, step, compensating, failed)
        child = self._call_children.get(key)
        if child is None:  # labels() takes a lock and builds a tuple: once per series
            phase = "compensation" if compensating else "action"
            child = self._calls.labels(saga, step, phase, "failed" if failed else "succeeded")
            self._call_children[key] = child
        child.observe(seconds)

    def commit_finished(self, writes: int, seconds: float, failed: bool) -> None:
        """Observe a commit's duration (and count it if it failed)."""
        self._commits.observe(seconds)
        if failed:
            self._commit_failures.inc()
