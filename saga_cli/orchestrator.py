"""The library's front door: one object that runs, resumes and inspects sagas on a log.

Every CLI command that touches executions is a call on :class:`Orchestrator`;
a Python program gets the same operations::

    with Orchestrator("saga.db", sagas=[transfer]) as orchestrator:
        outcome = orchestrator.run(transfer, {"source": "alice", "target": "bob", "amount": 5})
        print(orchestrator.inspect(outcome.execution_id).record.status)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Any

from saga_cli import lease
from saga_cli.domain import EventType, SagaDefinition, SagaStatus
from saga_cli.engine import EventListener, Outcome, RecoveryReport, SagaRunner
from saga_cli.engine.alerting import DEFAULT_POLICY, AlertPolicy
from saga_cli.engine.runner import DEFAULT_STEP_TIMEOUT, DEFAULT_THREADS
from saga_cli.errors import InvalidInputError, SagaError, UnknownSagaError
from saga_cli.saga import SagaLike, as_definition
from saga_cli.store import AlertRecord, ExecutionRecord, SagaStore, open_store
from saga_cli.tracing import Tracing
from saga_cli.views import ExecutionView, describe

if TYPE_CHECKING:
    from saga_cli.alerts import AlertSettings, Deliverer, DeliveryReport

# Events that may come with an alert: a background deliverer looks at once.
_ALERT_CAUSES = frozenset(
    {EventType.SAGA_STUCK, EventType.COMPENSATION_REQUESTED, EventType.COMPENSATION_FAILED}
)


class Orchestrator:
    """Runs sagas on one saga log and answers questions about their executions.

    Args:
        db: the saga log: a path, a ``sqlite:///`` URL or an open store.
        sagas: definitions (or Saga objects) this process can run and resume.
        on_event: called with (execution id, event) once each event is durable.
        lease_seconds: how long this process's claim on an execution lasts
            without a write or a heartbeat.
        step_timeout: seconds a step's call may take when neither the step nor
            its saga gives a timeout (None: no limit).
        threads: how many plain ``def`` steps may run at once (``async def``
            steps need no thread).
        autoload: when an execution names a saga that is not registered, import
            it from the source recorded in the log (the file or module it was
            first run from). Turn off to run only the sagas given here.
        alerts: when the engine writes an alert into the log's outbox, in the
            commit of the event behind it (None: never); see :meth:`delivering`.
        tracing: makes OpenTelemetry spans of executions and calls (see
            saga_cli.tracing); None makes none.
    """

    def __init__(
        self,
        db: str | SagaStore = "saga.db",
        sagas: Iterable[SagaLike] = (),
        *,
        on_event: EventListener | None = None,
        lease_seconds: float = lease.DEFAULT_LEASE_SECONDS,
        step_timeout: float | None = DEFAULT_STEP_TIMEOUT,
        threads: int = DEFAULT_THREADS,
        autoload: bool = True,
        alerts: AlertPolicy | None = DEFAULT_POLICY,
        tracing: Tracing | None = None,
    ) -> None:
        self._owns_store = not isinstance(db, SagaStore)
        self.store: SagaStore = open_store(db) if isinstance(db, str) else db
        self._sagas: dict[str, SagaDefinition] = {}
        self._listeners: list[EventListener] = [] if on_event is None else [on_event]
        self.autoload = autoload
        for saga in sagas:
            self.register(saga)
        self.runner = SagaRunner(
            self.store,
            self.definition,
            lease_seconds=lease_seconds,
            on_event=self._dispatch,
            step_timeout=step_timeout,
            threads=threads,
            alerts=alerts,
            tracing=tracing,
        )

    # -- definitions -----------------------------------------------------------

    def register(self, saga: SagaLike) -> SagaDefinition:
        """Make `saga` runnable and resumable here (the latest registration of a name wins)."""
        definition = as_definition(saga)
        self._sagas[definition.name] = definition
        return definition

    def load(self, reference: str) -> list[SagaDefinition]:
        """Import ``MODULE_OR_FILE[:NAME]`` and register the saga(s) it names.

        Raises:
            InvalidInputError: nothing to import there, or no such saga.
        """
        from saga_cli.loader import load

        return [self.register(definition) for definition in load(reference)]

    def definition(self, name: str) -> SagaDefinition:
        """The registered definition of saga `name`, imported from the log's record if need be.

        Raises:
            UnknownSagaError: not registered and (with autoload) not loadable.
        """
        known = self._sagas.get(name)
        if known is not None:
            return known
        if self.autoload:
            for version in self.store.definition_versions(name):
                if version.source:
                    from saga_cli.loader import load

                    for definition in load(version.source):
                        if definition.name == name:
                            return self.register(definition)
        raise UnknownSagaError(
            f"saga {name!r} is not loaded here and the log records no source to import it "
            f"from; pass its module with --load MODULE_OR_FILE (loaded: "
            f"{', '.join(sorted(self._sagas)) or 'none'})"
        )

    def definitions(self) -> list[SagaDefinition]:
        """Every registered definition, by name."""
        return [self._sagas[name] for name in sorted(self._sagas)]

    # -- running ---------------------------------------------------------------

    def run(
        self,
        saga: SagaLike | str,
        payload: Any,
        *,
        deadline: float | None = None,
        key_wait: float = 0.0,
    ) -> Outcome:
        """Start an execution and drive it until it completes, compensates or gets stuck.

        Args:
            saga: the saga, or the name of a registered one.
            payload: its input: a JSON object or an instance of its payload model.
            deadline: seconds from now; past them, an execution that has not
                reached its point of no return is compensated.
            key_wait: seconds to wait while another execution holds the same
                concurrency key (0 refuses at once; math.inf waits for good).

        Raises:
            InvalidInputError: the payload does not fit the saga.
            ConcurrencyKeyBusyError: the key stayed held past `key_wait`.
        """
        definition = self._resolve(saga)
        return self.runner.run(
            definition, payload, deadline=self._deadline_at(deadline), key_wait=key_wait
        )

    async def run_async(
        self,
        saga: SagaLike | str,
        payload: Any,
        *,
        deadline: float | None = None,
        key_wait: float = 0.0,
    ) -> Outcome:
        """:meth:`run` for asyncio programs: awaits the execution without blocking the loop.

        Steps run as they would under :meth:`run` (``async def`` ones on this
        loop, plain ones on the runner's threads), and the log is written from
        a thread of its own, so a web handler can ``await`` a whole saga::

            @app.post("/transfers")
            async def create(transfer: Transfer) -> dict[str, str]:
                outcome = await orchestrator.run_async(saga, transfer)
                return {"id": outcome.execution_id, "status": outcome.status}
        """
        definition = self._resolve(saga)
        return await self.runner.run_async(
            definition, payload, deadline=self._deadline_at(deadline), key_wait=key_wait
        )

    def submit(self, saga: SagaLike | str, payload: Any, *, deadline: float | None = None) -> str:
        """Write an execution as pending and return its id at once; a worker runs it.

        Args:
            saga: the saga, or the name of a registered one.
            payload: its input, as for :meth:`run`.
            deadline: seconds from now, as for :meth:`run` (the clock starts now,
                not when a worker picks it up).

        Raises:
            InvalidInputError: the payload does not fit the saga.
            ConcurrencyKeyBusyError: an unfinished execution holds its key.
        """
        definition = self._resolve(saga)
        return self.runner.submit(definition, payload, deadline=self._deadline_at(deadline))

    def submit_many(
        self, saga: SagaLike | str, payloads: Iterable[Any], *, deadline: float | None = None
    ) -> list[str | SagaError]:
        """Submit one pending execution per payload in one commit (ids, or per-item errors)."""
        definition = self._resolve(saga)
        return self.runner.submit_many(definition, payloads, deadline=self._deadline_at(deadline))

    @staticmethod
    def _deadline_at(deadline: float | None) -> float | None:
        if deadline is not None and not (0 < deadline < math.inf):
            raise InvalidInputError("a deadline must be a positive number of seconds")
        return None if deadline is None else time.time() + deadline

    def run_many(
        self,
        saga: SagaLike | str,
        payloads: Iterable[Any],
        *,
        concurrency: int = 1,
        progress: Callable[[Outcome], None] | None = None,
    ) -> list[Outcome]:
        """Run one execution per payload, `concurrency` at a time, sharing commits."""
        return self.runner.run_many(
            self._resolve(saga), payloads, concurrency=concurrency, progress=progress
        )

    async def run_many_async(
        self,
        saga: SagaLike | str,
        payloads: Iterable[Any],
        *,
        concurrency: int = 1,
        progress: Callable[[Outcome], None] | None = None,
    ) -> list[Outcome]:
        """:meth:`run_many` on the caller's event loop."""
        return await self.runner.run_many_async(
            self._resolve(saga), payloads, concurrency=concurrency, progress=progress
        )

    def resume(self, execution_id: str, *, force: bool = False) -> Outcome:
        """Continue one interrupted or stuck execution (id or unique prefix) from the log.

        Raises:
            DefinitionChangedError: its saga's steps changed incompatibly and
                `force` is off.
            ExecutionBusyError: a live process is running it.
        """
        return self.runner.resume(self.store.resolve_id(execution_id), force=force)

    async def resume_async(self, execution_id: str, *, force: bool = False) -> Outcome:
        """:meth:`resume` on the caller's event loop."""
        return await self.runner.resume_async(self.store.resolve_id(execution_id), force=force)

    def resume_all(
        self,
        *,
        concurrency: int = 8,
        force: bool = False,
        progress: Callable[[Outcome], None] | None = None,
    ) -> RecoveryReport:
        """Resume every interrupted execution, `concurrency` at a time."""
        return self.runner.resume_all(concurrency=concurrency, progress=progress, force=force)

    def compensate(self, execution_id: str, *, force: bool = False) -> Outcome:
        """Abort an unfinished execution by compensating what it did, in reverse."""
        return self.runner.compensate(self.store.resolve_id(execution_id), force=force)

    async def compensate_async(self, execution_id: str, *, force: bool = False) -> Outcome:
        """:meth:`compensate` on the caller's event loop."""
        return await self.runner.compensate_async(self.store.resolve_id(execution_id), force=force)

    def cancel(self, execution_id: str, *, force: bool = False) -> Outcome:
        """Compensate an execution even while another process runs it (it loses its lease)."""
        return self.runner.cancel(self.store.resolve_id(execution_id), force=force)

    async def cancel_async(self, execution_id: str, *, force: bool = False) -> Outcome:
        """:meth:`cancel` on the caller's event loop."""
        return await self.runner.cancel_async(self.store.resolve_id(execution_id), force=force)

    def resolve(self, execution_id: str, note: str) -> Outcome:
        """Close a stuck execution by hand, with `note` saying what was done."""
        return self.runner.resolve(self.store.resolve_id(execution_id), note)

    # -- looking -----------------------------------------------------------------

    def inspect(self, execution_id: str) -> ExecutionView:
        """One execution (id or unique prefix): its row, its steps and its events."""
        return describe(self.store, execution_id)

    def executions(
        self, *, status: SagaStatus | None = None, limit: int = 20
    ) -> list[ExecutionRecord]:
        """The newest executions, optionally of one status."""
        return self.store.list_executions(status=status, limit=limit)

    # -- alerts --------------------------------------------------------------------

    def alerts(self, *, pending: bool = False, limit: int = 100) -> list[AlertRecord]:
        """Alerts in the log's outbox, newest first (`pending`: not yet delivered everywhere)."""
        return self.store.alerts(pending=pending, limit=limit)

    def deliver_alerts(self, settings: AlertSettings) -> DeliveryReport:
        """Send the due alerts to `settings`' sinks once (what ``saga alerts deliver`` does)."""
        from saga_cli.alerts import deliver_due

        return deliver_due(self.store, settings)

    @contextmanager
    def delivering(self, settings: AlertSettings) -> Iterator[Deliverer]:
        """Deliver alerts in the background while the block runs (long-running processes).

        A daemon thread sends due alerts to the sinks, looking every second
        and at once when this orchestrator records an event that may carry
        an alert; the engine never waits for it. On the way out it makes a
        last pass (for at most 5 s); what is left waits for the next process
        or ``saga alerts deliver``.
        """
        from saga_cli.alerts import Deliverer

        deliverer = Deliverer(self.store, settings)

        def notice(_execution_id: str, event: Any) -> None:
            if event.type in _ALERT_CAUSES:
                deliverer.wake()

        unsubscribe = self.subscribe(notice)
        deliverer.start()
        try:
            yield deliverer
        finally:
            unsubscribe()
            deliverer.stop()

    def _resolve(self, saga: SagaLike | str) -> SagaDefinition:
        if isinstance(saga, str):
            return self.definition(saga)
        definition = as_definition(saga)
        self._sagas.setdefault(definition.name, definition)
        return definition

    # -- events and lifetime -------------------------------------------------------

    def subscribe(self, listener: EventListener) -> Callable[[], None]:
        """Call `listener` with each durable event; returns a function that unsubscribes."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def _dispatch(self, execution_id: str, event: Any) -> None:
        for listener in list(self._listeners):
            listener(execution_id, event)

    def close(self) -> None:
        """Close the log if this orchestrator opened it.

        Calls abandoned by a timeout are not waited for: they run on daemon
        threads, and their effects are the participants' business (a late
        arrival meets the compensation's tombstone).
        """
        if self._owns_store:
            self.store.close()

    def __enter__(self) -> Orchestrator:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
