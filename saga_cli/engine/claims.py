"""Who drives which execution: claims, the in-process guard, and the heartbeat.

A process drives an execution only while it holds its lease: taken by
compare-and-set on the row's version (a claim bumps it, so a previous owner's
late write is refused: fencing), renewed by every write and, while calls
run long, by a heartbeat thread that renews every held lease in one write
without bumping the version. Within one process, :meth:`Leases.enter` keeps
two tasks from driving the same execution, since they share the owner id.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from saga_cli import lease
from saga_cli.domain import (
    Event,
    EventType,
    SagaDefinition,
    SagaState,
    apply,
    definition_changes,
    is_terminal,
    replay,
    shape_of,
)
from saga_cli.engine.execution import DefinitionLookup, Execution, Outcome, RecoveryReport
from saga_cli.engine.outage import Outage
from saga_cli.errors import (
    DefinitionChangedError,
    ExecutionBusyError,
    LogUnavailableError,
    SagaError,
)
from saga_cli.store import Claim, ExecutionRecord, SagaStore

log = logging.getLogger(__name__)


class Leases:
    """Claims executions for this process and keeps their leases alive.

    Args:
        store: the saga log.
        definitions: finds a definition by saga name.
        owner: this process's owner id (see saga_cli.lease.current_owner).
        lease_seconds: how long a claim lasts without a write or a beat.
        clock: the time.
        notify: called with an execution's id and events once they are durable.
        outage: where the heartbeat reports that the log does not answer.
    """

    def __init__(
        self,
        store: SagaStore,
        definitions: DefinitionLookup,
        owner: str,
        lease_seconds: float,
        clock: Callable[[], float],
        notify: Callable[[str, list[Event]], None],
        outage: Outage | None = None,
    ) -> None:
        self.store = store
        self.definitions = definitions
        self.owner = owner
        self.lease_seconds = lease_seconds
        self.clock = clock
        self.notify = notify
        # Versions of the executions this process holds, for the heartbeat.
        self.held: dict[str, int] = {}
        # Until when the log holds each of them for us, as far as we know: the
        # lease of its last committed write or renewal. During an outage an
        # execution is kept in memory only until then (see CommitThread).
        self.valid_until: dict[str, float] = {}
        # The lease each execution's write being committed gives it, once it commits.
        self.writing: dict[str, float] = {}
        self.outage = outage or Outage()
        self._active: set[str] = set()
        self._active_lock = threading.Lock()
        self._heartbeat: threading.Thread | None = None

    # -- the in-process guard ----------------------------------------------------

    def enter(self, execution_id: str) -> None:
        """Mark an execution as driven here; refuse a second driver in this process.

        Raises:
            ExecutionBusyError: this process drives it already.
        """
        with self._active_lock:
            if execution_id in self._active:
                raise ExecutionBusyError(
                    f"execution {execution_id} is already being run by this process"
                )
            self._active.add(execution_id)

    def leave(self, execution_id: str) -> None:
        """Forget an execution this process no longer drives."""
        with self._active_lock:
            self._active.discard(execution_id)
        self.held.pop(execution_id, None)
        self.valid_until.pop(execution_id, None)
        self.writing.pop(execution_id, None)

    def expired(self, execution_id: str) -> bool:
        """Whether the lease this process last wrote for `execution_id` has run out."""
        until = self.valid_until.get(execution_id)
        return until is not None and until < self.clock()

    def driving(self, execution_id: str) -> bool:
        """Whether this process drives `execution_id` right now."""
        return execution_id in self._active

    # -- claiming ------------------------------------------------------------------

    def check_definition(
        self, record: ExecutionRecord, definition: SagaDefinition, force: bool
    ) -> None:
        """Refuse to drive `record` here: its steps changed, or its precondition refuses.

        Raises:
            DefinitionChangedError: the steps changed, and `force` is off.
            SagaError: the definition's precondition refused the execution.
        """
        if definition.precondition is not None:
            definition.precondition(json.loads(record.payload))
        started = record.definition_version
        if force or started is None or started == definition.version:
            return
        versions = {v.version: v for v in self.store.definition_versions(record.saga)}
        old = versions.get(started)
        if old is None:
            return  # the log lost that version's shape: nothing to compare with
        changes = definition_changes(old.steps, shape_of(definition.steps))
        if changes:
            raise DefinitionChangedError(
                f"saga {record.saga!r} changed since execution {record.id} started under "
                f"version {started} (now {definition.version}): {'; '.join(changes)}. "
                "Restore the old steps, or resume with --force to run it under the new ones"
            )

    def refusal(self, record: ExecutionRecord) -> SagaError | None:
        """Why this process cannot drive `record` (None: it can); only reads.

        A worker asks before it claims, so an execution it cannot run keeps
        its version and gets no lease from it (see SagaStore.claim_ready).
        """
        try:
            self.check_definition(record, self.definitions(record.saga), False)
        except SagaError as exc:
            return exc
        return None

    def claim(
        self,
        record: ExecutionRecord,
        definition: SagaDefinition,
        kind: EventType,
        detail: Mapping[str, Any] | None,
        state: SagaState | None = None,
        *,
        force: bool = False,
    ) -> Execution:
        """Take the lease of `record` and record why; `force` takes it from a live owner.

        Raises:
            ExecutionBusyError: a live process holds it (and `force` is off),
                or it changed since it was read.
        """
        now = self.clock()
        if not force and record.owner not in (None, self.owner) and lease.holds_lease(record, now):
            raise ExecutionBusyError(
                f"execution {record.id} is being run by {record.owner} (lease held for another "
                f"{record.lease_expires_at - now if record.lease_expires_at else 0:.0f}s); "
                "try again when it finishes"
            )
        self.enter(record.id)
        try:
            if state is None:
                state = replay(definition, self.store.events(record.id))
            event = Event(seq=state.next_seq, type=kind, detail=detail, at=now)
            version = self.store.claim(
                record.id, record.version, self.owner, now + self.lease_seconds, event, now
            )
        except BaseException:
            self.leave(record.id)
            raise
        return self._claimed(record, definition, state, event, version)

    def claim_many(
        self, records: list[ExecutionRecord], report: RecoveryReport, force: bool = False
    ) -> list[Execution | Outcome]:
        """Claim `records` in one commit; return what to drive (or what needs no driving)."""
        now = self.clock()
        histories = self.store.events_of([r.id for r in records])
        ready: list[tuple[ExecutionRecord, SagaDefinition, SagaState, Event]] = []
        done: list[Execution | Outcome] = []
        for record in records:
            if is_terminal(record.status):
                done.append(Outcome(record.id, record.saga, record.status))
                continue
            try:
                self.enter(record.id)
            except ExecutionBusyError:
                report.busy.append(record.id)
                continue
            try:
                definition = self.definitions(record.saga)
                self.check_definition(record, definition, force)
                state = replay(definition, histories[record.id])
            except SagaError as exc:
                self.leave(record.id)
                report.failed[record.id] = str(exc)
                continue
            event = Event(seq=state.next_seq, type=EventType.SAGA_RESUMED, at=now)
            ready.append((record, definition, state, event))
        try:
            versions = self.store.claim_many(
                [Claim(r.id, r.version, e) for r, _, _, e in ready],
                self.owner,
                now + self.lease_seconds,
                now,
            )
        except BaseException:
            for record, *_ in ready:
                self.leave(record.id)
            raise
        for (record, definition, state, event), version in zip(ready, versions, strict=True):
            if version is None:
                self.leave(record.id)
                report.busy.append(record.id)
                continue
            done.append(self._claimed(record, definition, state, event, version))
        return done

    def adopt(self, record: ExecutionRecord, events: list[Event]) -> Execution | SagaError:
        """The in-hand execution for a record taken with SagaStore.claim_ready."""
        try:
            definition = self.definitions(record.saga)
            self.check_definition(record, definition, False)
            state = replay(definition, events)
            self.enter(record.id)
        except SagaError as exc:
            return exc
        self.notify(record.id, events[-1:])
        run = Execution(
            definition, record.id, json.loads(record.payload), state, record.version, True
        )
        run.step_name = record.step
        run.key = record.concurrency_key
        self.held[record.id] = record.version
        if record.lease_expires_at is not None:
            self.valid_until[record.id] = record.lease_expires_at
        return run

    def _claimed(
        self,
        record: ExecutionRecord,
        definition: SagaDefinition,
        state: SagaState,
        event: Event,
        version: int,
    ) -> Execution:
        """The in-hand execution after its claim (with `event`) committed at `version`."""
        self.notify(record.id, [event])
        run = Execution(definition, record.id, json.loads(record.payload), state, version, True)
        run.state = apply(definition, state, event)
        run.step_name = record.step
        run.key = record.concurrency_key
        self.held[record.id] = version
        self.valid_until[record.id] = event.at + self.lease_seconds
        return run

    # -- the heartbeat ---------------------------------------------------------------

    def start_heartbeat(self) -> None:
        """Keep the leases of the executions in hand alive while calls run long.

        A daemon thread renews the held leases every third of the lease time,
        without bumping the version, so fencing is unchanged: a process that
        is stopped (SIGSTOP) or hung cannot beat, loses its leases, and its
        late writes are refused.
        """
        if self._heartbeat is not None and self._heartbeat.is_alive():
            return
        self._heartbeat = threading.Thread(target=self._beat, name="saga-heartbeat", daemon=True)
        self._heartbeat.start()

    def _beat(self) -> None:
        while True:
            time.sleep(max(0.05, self.lease_seconds / 3))
            held = dict(self.held)
            if not held:
                continue
            until = self.clock() + self.lease_seconds
            try:
                self.store.renew_leases(self.owner, held, until)
            except LogUnavailableError as exc:  # a missed beat only shortens the lease
                self.outage.failed(exc)
                continue
            except SagaError as exc:
                log.warning("could not renew %d lease(s): %s", len(held), exc)
                continue
            self.outage.succeeded()
            for execution_id in held:
                current = self.valid_until.get(execution_id)
                if current is not None:
                    self.valid_until[execution_id] = max(current, until)
