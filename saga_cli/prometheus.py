"""``saga stats --format prometheus``: the figures in Prometheus's text exposition format.

The text is produced by ``prometheus_client`` (metric families collected into
a registry of our own, then ``generate_latest``), never written by hand.
Every figure is a gauge or a summary over the window: the log is read, not
instrumented, so a value may go down when the window moves, which counters
must never do. Only ``saga stats`` imports this module.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from saga_cli.domain import SagaStatus
from saga_cli.stats import QUANTILES, Stats, quantile


def _add_summary(metric: Metric, labels: dict[str, str], values: Sequence[float]) -> None:
    """Add a summary of sorted `values` to `metric`: its quantiles, count and sum."""
    for q in QUANTILES:
        value = quantile(values, q)
        if value is not None:
            metric.add_sample(metric.name, {**labels, "quantile": str(q)}, value)
    metric.add_sample(f"{metric.name}_count", labels, float(len(values)))
    metric.add_sample(f"{metric.name}_sum", labels, math.fsum(values))


class StatsCollector(Collector):
    """Yields one :class:`~saga_cli.stats.Stats` as metric families."""

    def __init__(self, stats: Stats) -> None:
        self.stats = stats

    def _gauge(self, name: str, documentation: str, *extra: str) -> GaugeMetricFamily:
        labels = (["saga"] if self.stats.saga else []) + list(extra)
        return GaugeMetricFamily(name, documentation, labels=labels)

    def _labels(self, *values: str) -> list[str]:
        return ([self.stats.saga] if self.stats.saga else []) + list(values)

    def collect(self) -> Iterator[Metric]:
        """The window's figures, labelled with the saga when ``--saga`` was given."""
        s = self.stats
        window = self._gauge("saga_window_seconds", "Length of the window the figures cover.")
        window.add_metric(self._labels(), s.until - s.since)
        yield window
        executions = self._gauge(
            "saga_executions", "Executions created in the window, by status.", "status"
        )
        for status, count in s.statuses.items():
            executions.add_metric(self._labels(status.value), count)
        yield executions
        for status, name in (
            (SagaStatus.COMPLETED, "saga_completion_ratio"),
            (SagaStatus.COMPENSATED, "saga_compensation_ratio"),
        ):
            rate = s.rate(status)
            if rate is not None:
                gauge = self._gauge(
                    name, f"Share of the window's finished executions that ended {status.value}."
                )
                gauge.add_metric(self._labels(), rate)
                yield gauge
        stuck = self._gauge("saga_stuck", "Executions stuck now, waiting for an operator.")
        stuck.add_metric(self._labels(), s.stuck_now)
        yield stuck
        flight = self._gauge(
            "saga_in_flight", "Unfinished executions now (interrupted: no live owner).", "state"
        )
        for state, count in s.in_flight.items():
            flight.add_metric(self._labels(state), count)
        yield flight
        throughput = self._gauge(
            "saga_throughput_per_second", "Finished executions per second over the window."
        )
        throughput.add_metric(self._labels(), s.throughput)
        yield throughput
        sampled = self._gauge(
            "saga_sampled_executions", "Executions whose events the step figures come from."
        )
        sampled.add_metric(self._labels(), s.sampled)
        yield sampled
        yield from self._steps()
        durations = Metric(
            "saga_duration_seconds", "Duration of finished executions in the sample.", "summary"
        )
        _add_summary(durations, {"saga": s.saga} if s.saga else {}, s.saga_durations)
        yield durations

    def _steps(self) -> Iterator[Metric]:
        s = self.stats
        families = {
            "attempts": self._gauge(
                "saga_step_attempts", "Forward attempts of each step in the sample.", "step"
            ),
            "failures": self._gauge(
                "saga_step_failures", "Failed forward attempts (retried ones too).", "step"
            ),
            "failure_ratio": self._gauge(
                "saga_step_failure_ratio", "Failed forward attempts per finished one.", "step"
            ),
            "compensations": self._gauge(
                "saga_step_compensations", "Compensation attempts of each step.", "step"
            ),
        }
        for step in s.steps:
            families["attempts"].add_metric(self._labels(step.step), step.attempts)
            families["failures"].add_metric(self._labels(step.step), step.failures)
            if step.failure_rate is not None:
                families["failure_ratio"].add_metric(self._labels(step.step), step.failure_rate)
            families["compensations"].add_metric(self._labels(step.step), step.compensations)
        yield from families.values()
        durations = Metric(
            "saga_step_duration_seconds",
            "Duration of each step's forward attempts in the sample.",
            "summary",
        )
        base = {"saga": s.saga} if s.saga else {}
        for step in s.steps:
            _add_summary(durations, {**base, "step": step.step}, step.durations)
        yield durations


def exposition(stats: Stats) -> bytes:
    """The Prometheus text exposition of `stats` (a fresh registry, not the global one)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatsCollector(stats))
    return generate_latest(registry)
