"""What the engine tells an observer: each participant call and each commit, with its duration.

Metrics (``saga worker --http-port``) hang off this one interface instead of
counting calls sprinkled through the engine. The engine holds ``None`` when
nobody observes, so an unobserved engine pays one attribute check per call
and per commit, nothing more.
"""

from __future__ import annotations


class EngineObserver:
    """Receives the engine's timings; every method does nothing here (override what you need).

    Methods are called on the engine's threads (the event loop's, the commit
    thread's): they must be quick and must not raise.
    """

    def call_finished(
        self, saga: str, step: str, compensating: bool, failed: bool, seconds: float
    ) -> None:
        """A participant call (a step's action or compensation) returned or raised."""

    def commit_finished(self, writes: int, seconds: float, failed: bool) -> None:
        """A commit of `writes` executions' records went to the log (or failed)."""
