"""Workers: long-running processes that take executions from a shared saga log and run them.

``saga book --submit`` (or :meth:`Orchestrator.submit`) writes a pending
execution and returns; any number of worker processes, on any machines that
reach the log, claim ready executions (pending ones, and unfinished ones whose
owner's lease expired) with :meth:`SagaStore.claim_ready`, drive them, each on its own
task of the engine, and heartbeat their leases. No broker: the log's
transactions do the coordination (on SQLite the write lock and a
compare-and-set on each row's version; on PostgreSQL ``FOR UPDATE SKIP
LOCKED``).

Fencing: every write compare-and-sets the version, a renewal does not bump
it and a claim does. A worker that is paused past its lease (SIGSTOP, a long
GC, a frozen VM) has its executions claimed by another; when it wakes, its
next write is refused and it lets those executions go.

Outages of the log (a restart, a failover, a lock held too long) are waited
out (saga_cli.engine.outage): nothing new is claimed, the executions in hand
are kept while their leases last, and their records commit once the log
answers again; ``max_outage`` bounds the wait.

Each worker keeps a row in the registry (``saga_worker``), upserted on every
heartbeat and deleted on a clean exit, so ``saga workers`` can list the live
ones and mark the stale ones. A worker that died leaves its row behind: the
next live worker removes rows dead or stale for longer than `prune_after`.

A worker whose owner on this host died (SIGKILL, OOM) left its executions
leased; ``saga list`` calls them interrupted at once, and so does a worker's
claim (see saga_cli.lease.end_dead_leases), rather than wait out the lease.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from saga_cli import lease
from saga_cli.domain import SagaStatus
from saga_cli.engine import Outcome
from saga_cli.engine.observer import EngineObserver
from saga_cli.errors import (
    InvalidInputError,
    LeaseLostError,
    LogUnavailableError,
    OutageTooLongError,
    SagaError,
)
from saga_cli.limits import MAX_DURATION_SECONDS
from saga_cli.orchestrator import Orchestrator
from saga_cli.store import ExecutionRecord, SagaStore, WorkerRecord

log = logging.getLogger(__name__)

DEFAULT_POLL_SECONDS = 1.0
# Registry rows dead or stale this long are removed by the next live worker.
DEFAULT_PRUNE_AFTER = 3600.0
# How often a running worker looks for such rows.
PRUNE_EVERY = 60.0


class WorkerObserver(EngineObserver):
    """Told what a worker does, on top of the engine's timings; does nothing here.

    Called on the worker's threads: methods must be quick and must not raise.
    """

    def claimed(self, records: Sequence[ExecutionRecord]) -> None:
        """The worker took these executions' leases."""

    def finished(self, outcome: Outcome) -> None:
        """An execution came to rest: completed, compensated or stuck."""

    def lost(self, execution_id: str) -> None:
        """Another worker claimed an execution after this one's lease ran out (fencing)."""

    def refused(self, execution_id: str, error: SagaError) -> None:
        """An execution could not be run here (its saga unknown or changed)."""


@dataclass(frozen=True, slots=True)
class WorkerHealth:
    """Whether a worker is alive and ready, as its health endpoints answer.

    Attributes:
        alive: the worker has not exited (run() has not returned).
        ready: running (registered), not stopping, and the log answered its last write
            and claim (and no outage is under way).
        reason: why not ready ("" when ready).
    """

    alive: bool
    ready: bool
    reason: str = ""


@dataclass(slots=True)
class WorkerReport:
    """What one worker did before it exited."""

    completed: int = 0
    compensated: int = 0
    stuck: int = 0
    released: int = 0
    lost: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    def count(self, outcome: Outcome) -> None:
        """Add one execution the worker brought to rest."""
        if outcome.status is SagaStatus.COMPLETED:
            self.completed += 1
        elif outcome.status is SagaStatus.COMPENSATED:
            self.compensated += 1
        else:
            self.stuck += 1

    def as_json(self) -> dict[str, Any]:
        """The JSON shape of ``saga worker --json``."""
        return {
            "completed": self.completed,
            "compensated": self.compensated,
            "stuck": self.stuck,
            "released": self.released,
            "lost": self.lost,
            "failed": self.failed,
        }


class Worker:
    """Claims ready executions of the loaded sagas and runs them until stopped (or idle).

    Args:
        orchestrator: the log and the sagas this worker can run.
        concurrency: executions in flight at once (their writes share commits).
        sagas: only executions of these sagas (each loaded, or loadable from
            the source the log recorded); by default every saga the
            orchestrator has registered.
        lease_seconds: how long a claim lasts without a write or a heartbeat;
            a worker that dies loses its executions this long after its last beat.
        poll: seconds between looks at the log while nothing is ready.
        exit_when_idle: return once nothing is ready and nothing is in hand
            (for batch jobs, tests and benchmarks) instead of polling for good.
        progress: called with each execution the worker brings to rest.
        grace: after stop(), seconds the calls in flight may take to finish
            before their executions are handed back regardless (None: wait).
        prune_after: registry rows of workers dead or stale for this many
            seconds are removed while this worker runs (None: never).
        observer: told each claim, outcome and lost execution, and the
            engine's call and commit timings (for metrics).
        max_outage: seconds the log may stay unreachable before run() gives
            up with OutageTooLongError (None: wait for it forever).

    Raises:
        InvalidInputError: a bad number, or no saga to take.
        UnknownSagaError: a saga in `sagas` is neither loaded nor loadable.
    """

    def __init__(
        self,
        orchestrator: Orchestrator,
        *,
        concurrency: int = 1,
        sagas: Sequence[str] | None = None,
        lease_seconds: float = lease.DEFAULT_LEASE_SECONDS,
        poll: float = DEFAULT_POLL_SECONDS,
        exit_when_idle: bool = False,
        progress: Callable[[Outcome], None] | None = None,
        grace: float | None = None,
        prune_after: float | None = DEFAULT_PRUNE_AFTER,
        observer: WorkerObserver | None = None,
        max_outage: float | None = None,
    ) -> None:
        if concurrency < 1:
            raise InvalidInputError(f"--concurrency must be at least 1 (got {concurrency})")
        # Finite too: an infinite lease would never expire, and its heartbeat
        # thread would overflow computing the next renewal.
        if not 0 < lease_seconds <= MAX_DURATION_SECONDS:
            raise InvalidInputError(
                f"--lease must be a positive number of seconds (got {lease_seconds})"
            )
        if max_outage is not None and not 0 <= max_outage <= MAX_DURATION_SECONDS:
            raise InvalidInputError(
                f"--max-outage must be a duration of at least 0 (got {max_outage})"
            )
        if not 0 < poll <= MAX_DURATION_SECONDS:
            raise InvalidInputError(f"--poll must be a positive number of seconds (got {poll})")
        if prune_after is not None and not prune_after > 0:
            raise InvalidInputError(
                f"--prune-after must be a positive duration (got {prune_after})"
            )
        if sagas:
            names = [orchestrator.definition(name).name for name in dict.fromkeys(sagas)]
        else:
            names = [definition.name for definition in orchestrator.definitions()]
        if not names:
            raise InvalidInputError("this worker has no saga to run; load some with --load")
        self.orchestrator = orchestrator
        self.store: SagaStore = orchestrator.store
        self.runner = orchestrator.runner
        self.runner.lease_seconds = lease_seconds
        self.concurrency = concurrency
        self.sagas = names
        self.only = tuple(dict.fromkeys(sagas)) if sagas else None
        self.lease_seconds = lease_seconds
        self.poll = poll
        self.exit_when_idle = exit_when_idle
        self.progress = progress
        self.grace = grace
        self.prune_after = prune_after
        self.observer: WorkerObserver | None = None
        if observer is not None:
            self.observe(observer)
        self.id = self.runner.owner
        # The log's outages: `count`, `active`, `seconds_total` (for health checks and metrics).
        self.outage = self.runner.outage
        self.outage.max_seconds = max_outage
        self.report = WorkerReport()
        self._stopping = False
        self._stop_now = False
        self._beating = threading.Event()
        self._phase = "starting"  # then "running", then "exited"
        # Why the log did not answer the last write or claim (None: it did).
        self._log_error: str | None = None
        self._next_rescue = 0.0  # monotonic time of the next look for dead owners
        self._refused: set[str] = set()

    def stop(self, *, now: bool = False) -> None:
        """Ask the worker to finish the calls in flight, release its leases and return.

        With `now`, the calls in flight are not waited for: their executions
        are handed back at once (their steps run again, under the same keys,
        wherever they are claimed next). Only sets flags (safe from a signal
        handler); the engine looks at them every 50 ms.
        """
        self._stopping = True
        self._stop_now = self._stop_now or now

    @property
    def stopping(self) -> bool:
        """Whether :meth:`stop` was called."""
        return self._stopping

    def observe(self, observer: WorkerObserver) -> None:
        """Tell `observer` what this worker and its engine do from now on (before :meth:`run`)."""
        self.observer = observer
        self.runner.observer = observer

    @property
    def in_flight(self) -> int:
        """How many executions this worker holds right now."""
        return len(self.runner.leases.held)

    def health(self) -> WorkerHealth:
        """Whether this worker is alive and ready to take work (reads no log; safe from any thread).

        Ready means: running, not stopping, no log outage under way (an
        outage tracker at ``self.outage`` with an ``active`` flag, when
        present), and the log answered the worker's last registry write and claim.
        """
        if self._phase == "exited":
            return WorkerHealth(False, False, "the worker has exited")
        if self._phase == "starting":
            return WorkerHealth(True, False, "the worker is starting")
        if self._stopping:
            return WorkerHealth(True, False, "the worker is stopping")
        outage = getattr(self, "outage", None)
        if outage is not None and getattr(outage, "active", False):
            return WorkerHealth(True, False, "the log is unreachable (an outage is under way)")
        if self._log_error is not None:
            return WorkerHealth(True, False, f"the log did not answer: {self._log_error}")
        return WorkerHealth(True, True)

    def run(self) -> WorkerReport:
        """Take and run executions until stopped (or, with exit_when_idle, until idle).

        Returns:
            What the worker did; executions still in hand when it stopped
            were released (counted in `released`) for another worker to take.
        """
        with self.outage.waiting():  # for as long as the worker runs
            return self._run()

    def _run(self) -> WorkerReport:
        started = time.time()
        self.outage.call(lambda: self._register(started, started), lambda: self._stopping)
        self._phase = "running"
        self._prune(started)
        beat = threading.Thread(
            target=self._beat, args=(started,), name="saga-worker-registry", daemon=True
        )
        beat.start()
        try:
            self.report.released = self.runner.run_claimed(
                self._claim,
                concurrency=self.concurrency,
                finished=self._finished,
                failed=self._failed,
                stop=lambda: self._stopping,
                stop_now=lambda: self._stop_now,
                poll=self.poll,
                exit_when_idle=self.exit_when_idle,
                grace=self.grace,
            )
        finally:
            self._phase = "exited"
            self._beating.set()
            beat.join()
            try:
                self.store.remove_worker(self.id)
            except Exception as exc:  # the row goes stale and `saga workers` says so
                log.warning("could not remove worker %s from the registry: %s", self.id, exc)
        return self.report

    # -- the queue ---------------------------------------------------------------

    def _claim(self, limit: int) -> Sequence[ExecutionRecord]:
        """Claim up to `limit` ready executions (runs on a thread of the engine).

        Raises:
            LogUnavailableError: the log did not answer (the engine waits and tries again).
        """
        try:
            self._rescue_dead_owners()
            now = time.time()
            claimed = self.store.claim_ready(
                self.id,
                now + self.lease_seconds,
                now,
                sagas=self.sagas,
                limit=limit,
                exclude=self._refused,
                admit=self._admit,
            )
        except SagaError as exc:
            self._log_error = str(exc)
            raise
        self._log_error = None
        if claimed and self.observer is not None:
            self.observer.claimed(claimed)
        return claimed

    def _rescue_dead_owners(self) -> None:
        """End the leases of dead owners of this host, at most once per poll interval."""
        clock = time.monotonic()
        if clock < self._next_rescue:
            return
        self._next_rescue = clock + self.poll
        rescued = lease.end_dead_leases(self.store, time.time())
        if rescued:
            log.info("%d execution(s) of dead processes are ready to claim", rescued)

    def _admit(self, record: ExecutionRecord) -> bool:
        """Whether to claim `record`; one this worker cannot run is left untouched.

        Its refusal is reported once and the worker never looks at it again,
        so it neither blocks the queue nor holds a lease another worker (with
        the right code or environment) would need.
        """
        refusal = self.runner.leases.refusal(record)
        if refusal is None:
            return True
        self._refused.add(record.id)
        self._failed(record.id, refusal)
        return False

    def _finished(self, outcome: Outcome) -> None:
        self.report.count(outcome)
        if self.observer is not None:
            self.observer.finished(outcome)
        if self.progress is not None:
            self.progress(outcome)

    def _failed(self, execution_id: str, error: SagaError) -> None:
        if isinstance(error, LeaseLostError):
            # Fenced (another worker claimed it after our lease expired), or
            # the lease ran out during an outage of the log.
            log.warning("lost execution %s: %s", execution_id, error)
            self.report.lost.append(execution_id)
            if self.observer is not None:
                self.observer.lost(execution_id)
        elif isinstance(error, OutageTooLongError):
            self.report.failed[execution_id] = str(error)  # run() raises it, once
        else:
            log.warning("cannot run execution %s here: %s", execution_id, error)
            self.report.failed[execution_id] = str(error)
            if self.observer is not None:
                self.observer.refused(execution_id, error)

    # -- the registry ------------------------------------------------------------

    def _register(self, started: float, now: float) -> None:
        self.store.save_worker(
            WorkerRecord(
                id=self.id,
                host=socket.gethostname(),
                pid=os.getpid(),
                started_at=started,
                heartbeat_at=now,
                concurrency=self.concurrency,
                lease_seconds=self.lease_seconds,
                sagas=self.only,
            )
        )

    def _beat(self, started: float) -> None:
        """Upsert the registry row every third of the lease (at most every 5 s); prune at times."""
        interval = max(0.05, min(self.lease_seconds / 3, 5.0))
        next_prune = time.monotonic() + PRUNE_EVERY
        while not self._beating.wait(interval):
            try:
                self._register(started, time.time())
            except LogUnavailableError as exc:  # a missed beat only makes the row look stale
                self._log_error = str(exc) or type(exc).__name__
                self.outage.failed(exc)
                continue
            except Exception as exc:
                self._log_error = str(exc) or type(exc).__name__
                log.warning("could not update the worker registry: %s", exc)
                continue
            self._log_error = None
            self.outage.succeeded()
            if time.monotonic() >= next_prune:
                next_prune = time.monotonic() + PRUNE_EVERY
                self._prune(time.time())

    def _prune(self, now: float) -> None:
        """Remove the registry rows of workers dead or stale for longer than `prune_after`."""
        if self.prune_after is None:
            return
        try:
            removed = prune_workers(self.store, self.prune_after, now)
        except SagaError as exc:  # the rows stay for the next look
            log.warning("could not prune the worker registry: %s", exc)
            return
        if removed:
            log.info("removed %d dead or stale worker(s) from the registry", removed)


@dataclass(frozen=True, slots=True)
class WorkerView:
    """A registered worker as ``saga workers`` shows it."""

    record: WorkerRecord
    executions: list[str]
    age: float
    state: str

    def as_json(self) -> dict[str, Any]:
        """The JSON shape of one row of ``saga workers --json``."""
        r = self.record
        return {
            "id": r.id,
            "host": r.host,
            "pid": r.pid,
            "state": self.state,
            "started_at": r.started_at,
            "heartbeat_at": r.heartbeat_at,
            "heartbeat_age": round(self.age, 3),
            "last_seen": _utc(r.heartbeat_at),
            "concurrency": r.concurrency,
            "lease_seconds": r.lease_seconds,
            "sagas": None if r.sagas is None else list(r.sagas),
            "executions": self.executions,
        }


def list_workers(store: SagaStore, now: float | None = None) -> list[WorkerView]:
    """Every registered worker with the executions it holds and whether it is alive.

    A worker is ``live`` while its last heartbeat is younger than its lease,
    ``stale`` after that (it died without cleaning up, or is paused or cut
    off: its executions go to others as their leases expire), and ``dead``
    when it ran on this host and its process is gone. Reads only.
    """
    now = time.time() if now is None else now
    records = store.workers()
    held = store.held_executions([r.id for r in records], now)
    views = []
    for record in records:
        age = max(0.0, now - record.heartbeat_at)
        views.append(WorkerView(record, held[record.id], age, _state(record, now)))
    return views


def prune_workers(store: SagaStore, older_than: float = 0.0, now: float | None = None) -> int:
    """Remove the registry rows of workers dead or stale whose last heartbeat is `older_than` ago.

    A live worker's row is never removed, nor one that beats again between
    the look and the delete (it was paused, not dead). Their executions are
    not touched: leases decide who may take those.

    Returns:
        How many rows were removed.
    """
    now = time.time() if now is None else now
    gone = {
        record.id: record.heartbeat_at
        for record in store.workers()
        if now - record.heartbeat_at >= older_than and _state(record, now) != "live"
    }
    return store.remove_workers(gone) if gone else 0


def _state(record: WorkerRecord, now: float) -> str:
    """``dead`` (a process of this host that is gone), ``stale`` (no beat for a lease), ``live``."""
    if lease.owner_is_dead(record.id):
        return "dead"
    if now - record.heartbeat_at > record.lease_seconds:
        return "stale"
    return "live"


def _utc(at: float) -> str:
    """`at` as an ISO 8601 UTC time to the millisecond, as scripts read it."""
    import datetime as dt

    return dt.datetime.fromtimestamp(at, dt.UTC).isoformat(timespec="milliseconds")
