"""The log writer: every execution's records, grouped into as few commits as possible.

The write-ahead rule lives here and in :mod:`saga_cli.engine.drive`: a caller
that is about to call a participant awaits :meth:`LogWriter.commit`, which
returns only once everything its execution recorded is durable. Commits are
shared: whatever any execution on this event loop has recorded by the time
a commit starts rides in that one transaction (one fsync), and while it is
on disk the next batch gathers. Records that nothing waits on (an
execution's terminal record) are *noted*: they ride along with the next
commit, or go on their own after a few milliseconds, or when the engine has
nothing else to do.

Two ways to commit, one behaviour: on a thread of its own (:class:`CommitThread`)
so the event loop keeps driving executions while the disk syncs, or inline
on the loop's thread when a single execution is in flight and nothing else
could use the loop meanwhile (the sequential case, where a hand-off between
threads would cost more than it saves).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import cast

from saga_cli.domain import Event
from saga_cli.engine.execution import Execution
from saga_cli.engine.observer import EngineObserver
from saga_cli.engine.outage import Outage
from saga_cli.errors import (
    LeaseLostError,
    LogUnavailableError,
    SagaError,
    StoreError,
    UnknownExecutionError,
)
from saga_cli.store import Creation, SagaStore, Transition

log = logging.getLogger(__name__)

Write = Creation | Transition
Results = list[int | SagaError] | BaseException
# How long a record nothing waits on may wait for company before it commits alone.
LAZY_DELAY = 0.005
# One execution's part of a batch: its events and who waits for them.
_Entry = tuple[Execution, list[Event], list["asyncio.Future[None]"]]


class CommitThread:
    """A thread that commits the batches handed to it, merging those queued together.

    Shared by every event loop of a runner: batches from several loops that
    arrive while a commit is in progress go to disk in the next one.

    When the log does not answer, a batch is tried again (see
    saga_cli.engine.outage) until it does; an execution whose lease runs
    out meanwhile is dropped from it (LeaseLostError: whoever claims it next
    resumes it from the log), and once the outage outlasts --max-outage the
    whole batch fails.

    Args:
        store: the log.
        outage: the process's outage tracker.
        expired: whether this process's lease of an execution has run out.
    """

    def __init__(
        self,
        store: SagaStore,
        outage: Outage | None = None,
        expired: Callable[[str], bool] = lambda _execution_id: False,
    ) -> None:
        self._store = store
        self.outage = outage or Outage()
        self._expired = expired
        self._jobs: queue.SimpleQueue[tuple[list[Write], Callable[[Results], None]]] = (
            queue.SimpleQueue()
        )
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        # Told each commit's duration, for metrics (None costs one check per commit).
        self.observer: EngineObserver | None = None

    def commit_now(self, writes: list[Write]) -> list[int | SagaError]:
        """Commit `writes` on the calling thread (SagaStore.commit_all), telling the observer."""
        observer = self.observer
        if observer is None:
            return self._store.commit_all(writes)
        started = time.perf_counter()
        try:
            results = self._store.commit_all(writes)
        except BaseException:
            observer.commit_finished(len(writes), time.perf_counter() - started, True)
            raise
        observer.commit_finished(len(writes), time.perf_counter() - started, False)
        return results

    def submit(self, writes: list[Write], done: Callable[[Results], None]) -> None:
        """Commit `writes` soon; `done` is called on this thread with the results."""
        if self._thread is None:
            with self._start_lock:
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._serve, name="saga-log-writer", daemon=True
                    )
                    self._thread.start()
        self._jobs.put((writes, done))

    def _serve(self) -> None:
        while True:
            jobs = [self._jobs.get()]
            while True:
                try:
                    jobs.append(self._jobs.get_nowait())
                except queue.Empty:
                    break
            writes = [write for batch, _done in jobs for write in batch]
            results = self.commit(writes)
            start = 0
            for batch, done in jobs:
                part = results if isinstance(results, BaseException) else results[start:]
                start += len(batch)
                try:
                    done(part if isinstance(part, BaseException) else part[: len(batch)])
                except Exception:  # a closed loop: its executions are gone anyway
                    log.debug("could not hand commit results back", exc_info=True)

    def commit(self, writes: list[Write]) -> Results:
        """Commit `writes`, waiting out an outage of the log: their results, or what failed all."""
        results: list[int | SagaError | None] = [None] * len(writes)
        todo = list(range(len(writes)))
        retried = False
        while True:
            try:
                if retried:  # the last try may have committed, its answer lost on the way
                    todo = [i for i in todo if not self._landed(writes[i], results, i)]
                done = self.commit_now([writes[i] for i in todo]) if todo else []
            except LogUnavailableError as exc:
                retried = True
                self.outage.failed(exc)
                try:
                    self.outage.check()
                except StoreError as gave_up:  # too long, or a one-shot that does not wait
                    return _fill(results, todo, gave_up)
                todo = [i for i in todo if not self._drop(writes[i], results, i)]
                if not todo:
                    return _fill(results, todo, exc)
                self.outage.wait()
                continue
            except BaseException as exc:  # handed to every waiter of the batch
                if len(todo) == len(writes) or not isinstance(exc, SagaError):
                    return exc
                return _fill(results, todo, exc)
            self.outage.succeeded()
            for index, result in zip(todo, done, strict=True):
                results[index] = result
            return _fill(results, [], None)

    def _landed(self, write: Write, results: list[int | SagaError | None], index: int) -> bool:
        """Whether `write` is in the log already (its commit's answer was lost); notes its version.

        The row then carries exactly what the write set: the version after
        the one it expected and its timestamp. Anything else means it did not
        land (or another owner wrote since, and the retry is refused).

        Raises:
            LogUnavailableError: the log does not answer (yet).
        """
        execution_id = write.record.id if isinstance(write, Creation) else write.execution_id
        try:
            row = self._store.get(execution_id)
        except UnknownExecutionError:
            return False
        if isinstance(write, Creation):
            version, at, owner = 1, write.record.updated_at, write.record.owner
        else:
            version, at, owner = write.expected_version + 1, write.now, write.owner
        if (row.version, row.updated_at, row.owner) != (version, at, owner):
            return False
        results[index] = version
        return True

    def _drop(self, write: Write, results: list[int | SagaError | None], index: int) -> bool:
        """Give up on `write` if its execution's lease ran out during the outage."""
        if isinstance(write, Creation) or not self._expired(write.execution_id):
            return False
        results[index] = LeaseLostError(
            f"the lease of execution {write.execution_id} ran out while the log was "
            "unreachable; whoever claims it next resumes it from the log"
        )
        return True


def _fill(
    results: list[int | SagaError | None], todo: list[int], error: SagaError | None
) -> list[int | SagaError]:
    """`results` with `error` in the places of `todo` (every place then holds a result)."""
    for index in todo:
        results[index] = error
    return cast(list[int | SagaError], results)


class LogWriter:
    """Groups the records of the executions driven on one event loop into shared commits.

    A commit starts at once, unless the executions advance in step (none is
    waiting on a participant): then once every one that could reach it in
    the same pass of the loop has (a callback queued behind them). It runs
    inline, on the loop's thread, when
    every execution in hand is waiting for it (nothing else could use the
    loop during the fsync: the sequential case, and a CPU-bound window whose
    executions advance in step); otherwise on the commit thread, so the loop
    keeps driving the executions that wait on their participants.

    Args:
        loop: the event loop whose executions this writer serves.
        commit_thread: where batches are committed when not inline.
        store: the log, for inline commits.
        build: the store write for an execution's events (its row's new projection).
        committed: called for each execution whose write committed, with its
            events and new version (on the loop's thread).
        own: whether the loop is the engine's own (a caller's loop is never
            blocked by an inline commit).
        driving: how many executions the windows on this loop have in hand.
        calling: how many of them are inside a participant call now.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        commit_thread: CommitThread,
        store: SagaStore,
        build: Callable[[Execution, list[Event]], Write],
        committed: Callable[[Execution, list[Event], int], None],
        own: bool,
        driving: Callable[[], int],
        calling: Callable[[], int],
    ) -> None:
        self._loop = loop
        self._thread = commit_thread
        self._store = store
        self._build = build
        self._committed = committed
        self._own = own
        self._driving = driving
        self._calling = calling
        self._dirty: dict[str, Execution] = {}
        self._eager: set[str] = set()  # executions blocked until their records are durable
        self._busy = False  # a batch is being committed
        self._flush_queued = False
        self._timer: asyncio.TimerHandle | None = None

    @property
    def outage(self) -> Outage:
        """The process's outage tracker (the commit thread's)."""
        return self._thread.outage

    async def commit(self, run: Execution) -> None:
        """Return once everything `run` recorded so far is durable (sharing a commit).

        Raises:
            LeaseLostError: another process took the execution over; nothing was written.
            StoreError: the commit failed; nothing was written.
        """
        if not (run.pending or run.writing or run.release):
            return
        waiter = self._wait_for(run)
        self._eager.add(run.id)
        if not self._busy:
            if self._driving() > 1 and not self._calling():
                # In step (no execution waits on a participant): the others
                # reach their commits in this pass of the loop; take them all.
                self._queue_flush()
            else:
                # Alone, or the others wait on their participants and come in
                # their own time: holding this commit back would only make the
                # executions fall into step behind one another.
                self._send()
        await waiter

    async def settle(self, run: Execution) -> None:
        """Like :meth:`commit`, but let the records wait a moment for others to share the fsync."""
        if not run.pending and not run.writing:
            return
        waiter = self._wait_for(run)
        self._soon()
        await waiter

    def flush(self) -> None:
        """Start a commit of whatever is recorded, if none is in progress."""
        if self._dirty and not self._busy:
            self._send()

    def _wait_for(self, run: Execution) -> asyncio.Future[None]:
        waiter: asyncio.Future[None] = self._loop.create_future()
        run.waiters.append(waiter)
        self._dirty[run.id] = run
        return waiter

    def _queue_flush(self) -> None:
        """Commit after the executions already runnable in this pass of the loop had their turn."""
        if not self._flush_queued:
            self._flush_queued = True
            self._loop.call_soon(self._flush_queued_now)

    def _flush_queued_now(self) -> None:
        self._flush_queued = False
        if self._eager and not self._busy:
            self._send()

    def _soon(self) -> None:
        if self._timer is None and not self._busy:
            self._timer = self._loop.call_later(LAZY_DELAY, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.flush()

    def _send(self) -> None:
        """Commit the recorded writes of every execution not already being written."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch: list[_Entry] = []
        blocked = 0
        for execution_id, run in list(self._dirty.items()):
            if run.writing:
                continue  # its next write must compare-and-set this one's result
            del self._dirty[execution_id]
            if execution_id in self._eager:
                self._eager.discard(execution_id)
                blocked += 1
            waiters, run.waiters = run.waiters, []
            if not (run.pending or run.release):
                _resolve(waiters, None)
                continue
            events, run.pending = run.pending, []
            run.writing = True
            batch.append((run, events, waiters))
        if not batch:
            return
        writes = [self._build(run, events) for run, events, _w in batch]
        self._busy = True
        if not (self._own and blocked >= self._driving()):
            self._thread.submit(writes, partial(self._hand_back, batch))
            return
        try:
            results: Results = self._thread.commit_now(writes)
        except LogUnavailableError:
            # An outage: the commit thread waits it out while this loop stays free
            # (to hear a stop request, and to let the heartbeat see it is alive).
            self._thread.submit(writes, partial(self._hand_back, batch))
            return
        except Exception as exc:  # handed to every waiter, as from the commit thread
            results = exc
        else:
            self._thread.outage.succeeded()
        self._settled(batch, results)

    def _hand_back(self, batch: list[_Entry], results: Results) -> None:
        """Called on the commit thread: settle the batch on the loop's thread."""
        self._loop.call_soon_threadsafe(self._settled, batch, results)

    def _settled(self, batch: list[_Entry], results: Results) -> None:
        self._busy = False
        for index, (run, events, waiters) in enumerate(batch):
            run.writing = False
            result = results if isinstance(results, BaseException) else results[index]
            if isinstance(result, BaseException):
                _resolve(waiters, result)
                continue
            self._committed(run, events, result)
            _resolve(waiters, None)
        if self._eager:
            # Executions this commit just released run first: what they record
            # on their way to their next call joins the next commit.
            self._queue_flush()
        elif self._dirty:
            self._soon()


def _resolve(waiters: Sequence[asyncio.Future[None]], error: BaseException | None) -> None:
    for waiter in waiters:
        if waiter.done():
            continue
        if error is None:
            waiter.set_result(None)
        else:
            waiter.set_exception(error)
