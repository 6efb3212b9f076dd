"""How many executions are in flight, and feeding new and claimed ones in.

A :class:`Window` takes executions from a feed (new ones for ``run_many``,
claimed ones for ``resume --all`` and workers) and drives each as its own
task, at most `size` at a time. An execution frees its slot as soon as it
comes to rest, before its last records are on disk: the next one starts at
once, and its first commit carries the previous one's final records (one
fsync fewer per saga when running one at a time).

Stopping: once asked to stop, the window takes nothing more, each execution
hands itself back after the call it is making, and after `grace` seconds
the executions still in a call are cancelled and handed back too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from saga_cli.engine.drive import Driver
from saga_cli.engine.execution import Execution, Outcome
from saga_cli.errors import SagaError

log = logging.getLogger(__name__)


class _NothingYet:
    """The type of NOTHING_YET."""

    __slots__ = ()


# What a feed yields when nothing is ready now but more may come (a worker's
# queue): the window goes on with what it has.
NOTHING_YET = _NothingYet()

Feed = AsyncIterator[Execution | Outcome | _NothingYet]


class Window:
    """Drives executions from a feed, `size` at a time, each independently of the others.

    Args:
        driver: the loop's driver.
        size: executions in flight at once.
        finished: called with each outcome once its records are durable.
        failed: called with an execution that could not be driven here and
            why (a lost lease, a log failure); if it raises, the window stops
            and the error propagates from :meth:`run`.
        leave: called with each execution's id once the window is done with it.
        grace: seconds executions may take to finish their calls after a stop
            request before they are cancelled (None: as long as they need).
    """

    def __init__(
        self,
        driver: Driver,
        size: int,
        finished: Callable[[Outcome], None],
        failed: Callable[[str, SagaError], None],
        leave: Callable[[str], None],
        grace: float | None = None,
    ) -> None:
        self.driver = driver
        self.size = size
        self.finished = finished
        self.failed = failed
        self.leave = leave
        self.grace = grace
        self.stopping = asyncio.Event()
        self.released = 0  # executions handed back on a stop
        self._busy = 0
        self._freed = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._error: BaseException | None = None
        self._cancelled = False
        self._stop_flag: Callable[[], bool] | None = None
        self._stop_now_flag: Callable[[], bool] | None = None

    @property
    def in_flight(self) -> int:
        """Executions taken and not yet at rest or handed back."""
        return self._busy

    def free_slots(self) -> int:
        """How many more executions the window would take now."""
        return max(0, self.size - self._busy)

    def requested(self) -> bool:
        """Whether a stop was asked for, here or through the `stop` flag given to run()."""
        if not self.stopping.is_set() and self._stop_flag is not None and self._stop_flag():
            self.stop()
        return self.stopping.is_set()

    def stop(self, *, now: bool = False) -> None:
        """Take nothing more; hand back what is in hand (at once with `now`)."""
        if not self.stopping.is_set() and not now and self._busy:
            log.warning(
                "stopping: %d execution(s) in hand finish their calls%s, then are handed back%s",
                self._busy,
                "" if self.grace is None else f" (for at most {self.grace:g}s)",
                "" if self._stop_now_flag is None else "; signal again to hand them back at once",
            )
        self.stopping.set()
        self._freed.set()
        if now:
            self._cancel_all()

    async def run(
        self,
        feed: Feed,
        stop: Callable[[], bool] | None = None,
        stop_now: Callable[[], bool] | None = None,
    ) -> None:
        """Drive everything `feed` yields until it ends (or a stop), then wait for the rest.

        Args:
            feed: executions to drive, outcomes of ones that needed no driving,
                or NOTHING_YET.
            stop: polled about every 50 ms; once true, the window stops (a
                signal handler sets such a flag, it cannot touch the loop).
            stop_now: polled likewise; once true, the executions in hand are
                handed back without waiting for their calls.

        Raises:
            Whatever `failed` raised, or what the feed raised (after the
            executions in hand came to rest).
        """
        self._stop_flag = stop
        self._stop_now_flag = stop_now
        watcher = None
        if stop is not None or stop_now is not None:
            watcher = asyncio.ensure_future(self._watch(stop, stop_now))
        try:
            try:
                await self._feed(feed)
            except BaseException as exc:
                self._error = self._error or exc
                if not isinstance(exc, Exception):  # Ctrl-C, cancellation: hand back at once
                    self.stop(now=True)
            finally:
                aclose = getattr(feed, "aclose", None)
                if aclose is not None:
                    await aclose()
            self.driver.writer.flush()  # nothing more to start: no reason to wait for company
            await self._drain()
        finally:
            if watcher is not None:
                watcher.cancel()
        if self._error is not None:
            raise self._error

    async def _feed(self, feed: Feed) -> None:
        while True:
            while self._busy >= self.size and not self.stopping.is_set():
                self._freed.clear()
                await self._freed.wait()
            if self.stopping.is_set():
                return
            self._busy += 1  # the slot is taken before the feed is asked (claims count on it)
            try:
                item = await anext(feed)
            except StopAsyncIteration:
                self._busy -= 1
                return
            except BaseException:
                self._busy -= 1
                raise
            if isinstance(item, Execution):
                # Counted now, not when its task first runs: the writer commits
                # inline only while one execution is in hand (see Driver.driving).
                self.driver.driving += 1
                task = asyncio.ensure_future(self._drive(item))
                self._tasks.add(task)
                task.add_done_callback(self._forget)
                continue
            self._busy -= 1
            if isinstance(item, Outcome):
                self._report(self.finished, item)

    async def _drive(self, run: Execution) -> None:
        driver = self.driver
        freed = False

        def free() -> None:
            nonlocal freed
            if not freed:
                freed = True
                driver.driving -= 1
                self._busy -= 1
                self._freed.set()

        try:
            outcome = await driver.drive(run, self)
            free()
            if outcome is None:
                self.released += 1
                return
            await driver.writer.settle(run)
            self._report(self.finished, outcome)
        except SagaError as exc:
            free()
            self._report(self.failed, run.id, exc)
        except asyncio.CancelledError:
            self.released += 1
            raise
        except BaseException as exc:  # a bug: stop the window and raise it from run()
            self._error = self._error or exc
            self.stop(now=not isinstance(exc, Exception))
            raise
        finally:
            free()
            self.leave(run.id)

    def _report(self, callback: Callable[..., None], *args: Any) -> None:
        try:
            callback(*args)
        except BaseException as exc:
            self._error = self._error or exc
            self.stop()

    async def _drain(self) -> None:
        """Wait for the executions in hand; cancel them once a stop's grace runs out."""
        while self._tasks:
            timeout = None
            if self.stopping.is_set() and self.grace is not None and not self._cancelled:
                timeout = self.grace
            elif not self.stopping.is_set():
                # A stop may come while we wait: look again when it does.
                stop_wait = asyncio.ensure_future(self.stopping.wait())
                await asyncio.wait({*self._tasks, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
                stop_wait.cancel()
                continue
            await asyncio.wait(set(self._tasks), timeout=timeout)
            if timeout is not None and self._tasks:
                log.warning(
                    "%d execution(s) still in a call after the %gs grace period: handing "
                    "them back now",
                    len(self._tasks),
                    timeout,
                )
                self._cancel_all()

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            task.exception()  # kept in self._error by _drive; retrieved here to keep asyncio quiet

    def _cancel_all(self) -> None:
        self._cancelled = True
        for task in list(self._tasks):
            task.cancel()

    async def _watch(
        self, stop: Callable[[], bool] | None, stop_now: Callable[[], bool] | None
    ) -> None:
        # Watches on after the grace ran out: handing back may wait for the log
        # (an outage), and a second signal must still cut that short.
        while True:
            if stop_now is not None and stop_now():
                self.stop(now=True)
                return
            if stop is not None and not self.stopping.is_set() and stop():
                self.stop()
                if stop_now is None:
                    return
            await asyncio.sleep(0.05)
