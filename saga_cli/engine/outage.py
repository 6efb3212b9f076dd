"""Riding out an outage of the saga log: one tracker per process, shared by all who write.

A database restart, a failover, a dropped connection or a lock held past the
busy timeout make every call to the log fail for a while. A long-running
command (a worker, ``resume --all``, ``simulate``, ``watch``, ``serve``)
waits such an outage out instead of dying with work in hand: whoever meets
the failure (the claims, the commit thread, the heartbeat, the registry)
reports it here, waits :meth:`Outage.delay` and tries again. The tracker
logs one line when an outage begins and one when it ends, and gives up
once an outage outlasts `max_seconds` (``--max-outage``). A one-shot
operation (``saga book``) does not wait: the runner's tracker waits only
inside :meth:`Outage.waiting` blocks, which its batch operations open, and
otherwise hands the first failure back at once.

Its attributes `count`, `active` and `seconds_total` are what a health
check or a metrics endpoint reads (``Worker.outage`` is this object).
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import TypeVar

from saga_cli.errors import LogUnavailableError, OutageTooLongError

T = TypeVar("T")
log = logging.getLogger(__name__)

# The first wait after a failure, and the longest (the back-off doubles up to it).
FIRST_DELAY = 0.05
MAX_DELAY = 2.0
# How often a wait looks at its stop flag.
STOP_CHECK = 0.05


class Outage:
    """Whether the log is unreachable now, since when, and how long to wait before trying again.

    Thread-safe: the engine's threads share one.

    Args:
        max_seconds: give up (OutageTooLongError) once an outage lasts
            longer (None: wait forever).
        waits: whether to wait outages out at all; False makes :meth:`check`
            raise the failure at once, except inside :meth:`waiting`.
        clock: monotonic time, for durations.
        rng: jitter of the back-off.

    Attributes:
        count: outages so far (one per stretch of failures).
        active: whether the log is unreachable now.
    """

    def __init__(
        self,
        max_seconds: float | None = None,
        *,
        waits: bool = True,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.max_seconds = max_seconds
        self._waits = waits
        self._waiting = 0  # open waiting() blocks
        self.count = 0
        self.active = False
        self._clock = clock
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._began = 0.0
        self._began_at = 0.0  # wall clock, for the log line
        self._ended_total = 0.0
        self._failures = 0  # in a row, for the back-off
        self._error = ""
        self._last: LogUnavailableError | None = None
        self._gave_up: OutageTooLongError | None = None

    @property
    def seconds_total(self) -> float:
        """Seconds spent in outages so far, the one in progress included."""
        with self._lock:
            current = self._clock() - self._began if self.active else 0.0
            return self._ended_total + current

    @property
    def waits(self) -> bool:
        """Whether failures are waited out now (see the `waits` argument and :meth:`waiting`)."""
        return self._waits or self._waiting > 0

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        """Wait outages out inside this block (a batch operation's), whatever `waits` says."""
        with self._lock:
            self._waiting += 1
        try:
            yield
        finally:
            with self._lock:
                self._waiting -= 1

    def failed(self, error: LogUnavailableError) -> None:
        """Note that the log did not answer; the first failure of a stretch logs its beginning."""
        with self._lock:
            self._failures += 1
            self._error = str(error)
            self._last = error
            if self.active or not self.waits:  # a one-shot's error speaks for itself
                return
            self.active = True
            self.count += 1
            self._began = self._clock()
            self._began_at = time.time()
        log.warning(
            "the saga log is unreachable since %s; waiting for it (nothing new is taken "
            "meanwhile): %s",
            _stamp(self._began_at),
            error,
        )

    def succeeded(self) -> None:
        """Note that the log answered; ends the outage in progress (and logs how long it lasted)."""
        self._last = None
        if not self.active:  # the common case, without the lock
            return
        with self._lock:
            if not self.active:
                return
            lasted = self._clock() - self._began
            self._ended_total += lasted
            self.active = False
            self._failures = 0
        log.warning(
            "the saga log answers again: the outage began at %s, ended at %s, lasted %.1f s",
            _stamp(self._began_at),
            _stamp(time.time()),
            lasted,
        )

    def check(self) -> None:
        """Raise once the outage in progress has lasted longer than `max_seconds`.

        Raises:
            OutageTooLongError: it has (and every later check raises it too).
            LogUnavailableError: the last failure, when failures are not waited out.
        """
        if not self.waits and self._last is not None:
            raise self._last
        with self._lock:
            if self._gave_up is None and self.active and self.max_seconds is not None:
                lasted = self._clock() - self._began
                if lasted > self.max_seconds:
                    self._gave_up = OutageTooLongError(
                        f"the saga log was unreachable for {lasted:.1f} s, longer than "
                        f"--max-outage {self.max_seconds:g}s allows (last: {self._error}); "
                        "unfinished executions continue with `saga resume --all` or a worker"
                    )
            if self._gave_up is not None:
                raise self._gave_up

    def delay(self) -> float:
        """Seconds to wait before the next try: exponential, capped, with jitter."""
        with self._lock:
            failures = self._failures
        ceiling = min(MAX_DELAY, FIRST_DELAY * 2 ** max(0, failures - 1))
        return self._rng.uniform(ceiling / 2, ceiling)

    def wait(self, stop: Callable[[], bool] | None = None) -> bool:
        """Sleep :meth:`delay` seconds (less if `stop` turns true); return whether it did."""
        until = time.monotonic() + self.delay()
        while True:
            if stop is not None and stop():
                return True
            left = until - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(left, STOP_CHECK))

    def call(
        self,
        function: Callable[[], T],
        stop: Callable[[], bool] | None = None,
        *,
        read: bool = False,
    ) -> T:
        """Call `function` until the log answers it, waiting between tries.

        A `read` that succeeds does not end an outage: SQLite serves reads
        while another process holds the write lock, and the log is back only
        once it takes writes again.

        Raises:
            OutageTooLongError: the outage outlasted `max_seconds`.
            LogUnavailableError: `stop` turned true during the outage.
        """
        while True:
            try:
                result = function()
            except LogUnavailableError as exc:
                self.failed(exc)
                self.check()
                if self.wait(stop):
                    raise
                continue
            if not read:
                self.succeeded()
            return result


def _stamp(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
