"""The travel demo wired together: log, services, runner, simulation and audit.

Everything ``saga book``, ``simulate``, ``resume``, ``compensate``,
``inventory`` and ``check`` do is a method here, so Python callers get the
same operations as the CLI.
"""

from __future__ import annotations

import dataclasses
import json
import random
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from saga_cli.audit import audit_log
from saga_cli.breaker import BreakerSnapshot
from saga_cli.domain import Event, EventType, SagaStatus
from saga_cli.engine import DEFAULT_STEP_TIMEOUT, EventListener, Outcome, RecoveryReport
from saga_cli.engine.alerting import DEFAULT_POLICY, AlertPolicy
from saga_cli.errors import InvalidInputError
from saga_cli.orchestrator import Orchestrator
from saga_cli.redact import strip_credentials
from saga_cli.services.database import BreakerBoard
from saga_cli.services.participants import ReservationParticipant
from saga_cli.services.travel import (
    BASIC_SAGA_NAME,
    BREAKERS,
    SAGA_NAME,
    SERVICES,
    AuditReport,
    BookingRequest,
    FaultPlan,
    InventoryRow,
    TravelServices,
    audit,
    open_services,
    travel_saga,
)
from saga_cli.store import SagaStore
from saga_cli.tracing import Tracing


@dataclass(slots=True)
class SimulationReport:
    """Counts from one ``saga simulate`` batch."""

    count: int = 0
    completed: int = 0
    compensated: int = 0
    stuck: int = 0
    interrupted: int = 0
    seconds: float = 0.0
    failures: Counter[str] = field(default_factory=Counter)
    released: Counter[str] = field(default_factory=Counter)
    outcomes: list[Outcome] = field(default_factory=list)

    def count_outcome(self, outcome: Outcome) -> None:
        """Add one finished booking to the counts."""
        if outcome.status is SagaStatus.COMPLETED:
            self.completed += 1
        elif outcome.status is SagaStatus.COMPENSATED:
            self.compensated += 1
        elif outcome.status is SagaStatus.STUCK:
            self.stuck += 1
        else:
            self.interrupted += 1

    def as_json(self) -> dict[str, Any]:
        """The JSON shape of ``saga simulate --json``."""
        return {
            "count": self.count,
            "completed": self.completed,
            "compensated": self.compensated,
            "stuck": self.stuck,
            "interrupted": self.interrupted,
            "seconds": round(self.seconds, 4),
            "sagas_per_second": round(self.count / self.seconds, 1) if self.seconds else None,
            "failures": dict(sorted(self.failures.items())),
            "capacity_released": dict(sorted(self.released.items())),
        }


class TravelBooking:
    """The travel booking, the saga pattern's classic example, on a saga log.

    Args:
        store: the saga log; the services use separate connections to it.
        on_event: called with each durable event (for progress displays).
        faults: failures to inject into this process's calls (see FaultPlan).
        payment: False runs the basic saga, without the payment pivot and the
            notification (see travel_saga).
        services: URLs of flight, hotel and car services running elsewhere
            (``saga serve``), by name: new bookings call them over HTTP and
            record them (without credentials). An execution already in the
            log is always served by the services it recorded; these URLs only
            lend it their credentials. Payment and notification stay in-process.
        service_timeout: seconds a remote call may take (the reservation
            steps' timeout).
        step_timeout: seconds any other call may take (None: no limit).
        alerts, tracing: as for :class:`~saga_cli.orchestrator.Orchestrator`.
    """

    def __init__(
        self,
        store: SagaStore,
        *,
        on_event: EventListener | None = None,
        faults: FaultPlan | None = None,
        payment: bool = True,
        services: Mapping[str, str] | None = None,
        service_timeout: float | None = None,
        step_timeout: float | None = DEFAULT_STEP_TIMEOUT,
        alerts: AlertPolicy | None = DEFAULT_POLICY,
        tracing: Tracing | None = None,
    ) -> None:
        self.store = store
        remote = None
        timeout = service_timeout
        if services:
            # httpx is imported only when remote services are in use
            from saga_cli.services.http_client import DEFAULT_TIMEOUT, remote_services

            timeout = timeout or DEFAULT_TIMEOUT
            remote = remote_services(services, timeout=timeout)
        # The log keeps service URLs without credentials: a URL given to this
        # process with them lends them to the executions that recorded it.
        credentials = {strip_credentials(url).rstrip("/"): url for url in (services or {}).values()}

        def connect(name: str, url: str) -> ReservationParticipant:
            from saga_cli.services.http_client import DEFAULT_TIMEOUT, HttpReservationService

            full = credentials.get(url, url)
            return HttpReservationService(name, full, timeout=timeout or DEFAULT_TIMEOUT)

        self.services: TravelServices = open_services(store, remote, connect=connect)
        # Each service's breaker, starting where the log last saw it.
        self.breakers = BreakerBoard(self.services.database, BREAKERS)
        self.definition = travel_saga(
            self.services, faults, payment=payment, breakers=self.breakers
        )
        other = travel_saga(self.services, faults, payment=not payment, breakers=self.breakers)
        # The demo is a client of the public API like any user's saga.
        self.orchestrator = Orchestrator(
            store,
            [self.definition, other],
            on_event=on_event,
            step_timeout=step_timeout,
            alerts=alerts,
            tracing=tracing,
        )
        self.runner = self.orchestrator.runner

    def close(self) -> None:
        """Let late calls land (up to 5 s), then close the services' connections."""
        self.orchestrator.close()
        self.services.close()
        self.breakers.close()

    def book(self, request: BookingRequest, *, deadline: float | None = None) -> Outcome:
        """Book one trip and drive the saga to rest.

        Args:
            request: the trip.
            deadline: seconds from now; past them, a booking that has not been
                paid for (the pivot) is compensated.

        Raises:
            InvalidInputError: the request names an unknown flight, hotel or car.
        """
        self.services.validate(request)
        return self.orchestrator.run(self.definition, self.payload_of(request), deadline=deadline)

    def submit(self, request: BookingRequest, *, deadline: float | None = None) -> str:
        """Submit one trip as a pending execution for a worker and return its id (see book).

        Raises:
            InvalidInputError: the request names an unknown flight, hotel or car.
        """
        self.services.validate(request)
        return self.orchestrator.submit(
            self.definition, self.payload_of(request), deadline=deadline
        )

    def payload_of(self, request: BookingRequest) -> dict[str, Any]:
        """What the log stores for `request`: the trip, and the remote services it uses."""
        payload = request.to_payload()
        endpoints = self.services.endpoints()
        if endpoints:
            payload["services"] = endpoints
        return payload

    def resume(self, execution_id: str) -> Outcome:
        """Resume one execution (id or unique prefix)."""
        return self.orchestrator.resume(execution_id)

    def resume_all(
        self, *, concurrency: int = 1, progress: Callable[[Outcome], None] | None = None
    ) -> RecoveryReport:
        """Resume every interrupted execution, `concurrency` at a time."""
        return self.orchestrator.resume_all(concurrency=concurrency, progress=progress)

    def compensate(self, execution_id: str) -> Outcome:
        """Abort one execution by backward recovery."""
        return self.orchestrator.compensate(execution_id)

    def cancel(self, execution_id: str) -> Outcome:
        """Cancel one execution, taking it over from a live owner if need be."""
        return self.orchestrator.cancel(execution_id)

    def resolve(self, execution_id: str, note: str) -> Outcome:
        """Record a manual resolution of a stuck execution (id or unique prefix)."""
        return self.orchestrator.resolve(execution_id, note)

    def reset_breaker(self, service: str) -> None:
        """Close `service`'s breaker by hand (an operator knows it is back).

        Raises:
            InvalidInputError: no such service.
        """
        if service not in self.breakers:
            known = ", ".join(BREAKERS)
            raise InvalidInputError(f"unknown service {service!r}; known: {known}")
        self.breakers[service].reset()

    def breaker_states(self) -> list[BreakerSnapshot]:
        """Every service's circuit breaker, as this process sees it now."""
        return [self.breakers[name].snapshot for name in BREAKERS]

    def inventory(self) -> list[InventoryRow]:
        """Capacity, availability and reservations per service and resource."""
        return self.services.inventory()

    def restock(self, capacity: int) -> None:
        """Set every resource's capacity (for load tests)."""
        self.services.restock(capacity)

    def check(self) -> AuditReport:
        """Audit every execution in the log, and the bookings against the services.

        Every finished execution's history must agree with its status,
        whatever its saga (see audit_log); the travel bookings must also
        agree with the services' reservations, charges and stock. The report
        counts every execution the log holds.
        """
        executions = {}
        paid = set()
        for saga in (SAGA_NAME, BASIC_SAGA_NAME):
            for record_id, status, payload in self.store.executions_of(saga):
                executions[record_id] = (status, json.loads(payload))
                if saga == SAGA_NAME:
                    paid.add(record_id)
        services = audit(executions, self.services, paid=paid)
        log = audit_log(self.store)
        return dataclasses.replace(
            services, violations=log.violations + services.violations, executions=log.executions
        )

    def simulate(
        self,
        count: int,
        *,
        fail: Sequence[str] = (),
        fail_rate: float = 0.0,
        seed: int | None = None,
        concurrency: int = 1,
        deadline: float | None = None,
        progress: Callable[[Outcome], None] | None = None,
    ) -> SimulationReport:
        """Book `count` random trips with failure injection.

        Args:
            count: bookings to make (>= 1).
            fail: steps that always decline.
            fail_rate: probability that a booking fails at a step drawn at random.
            seed: makes the trips and the drawn failures reproducible.
            concurrency: executions in flight at once; their log writes
                share commits (see SagaRunner.run_many).
            deadline: seconds from the start of the batch for every booking.
            progress: called after each booking.

        Raises:
            InvalidInputError: count or concurrency below 1, or a rate outside [0, 1].
        """
        if count < 1:
            raise InvalidInputError(f"--count must be at least 1 (got {count})")
        if concurrency < 1:
            raise InvalidInputError(f"--concurrency must be at least 1 (got {concurrency})")
        if not 0.0 <= fail_rate <= 1.0:
            raise InvalidInputError(f"--fail-rate must be within [0, 1] (got {fail_rate})")
        requests = self.random_requests(count, fail=fail, fail_rate=fail_rate, seed=seed)
        report = SimulationReport(count=count)

        def tally(_execution_id: str, event: Event) -> None:
            if event.step is None:
                return
            if event.type is EventType.STEP_FAILED:
                report.failures[event.step] += 1
            elif event.type is EventType.COMPENSATION_SUCCEEDED:
                report.released[event.step] += 1

        def done(outcome: Outcome) -> None:
            report.count_outcome(outcome)
            if progress is not None:
                progress(outcome)

        unsubscribe = self.orchestrator.subscribe(tally)
        started = time.perf_counter()
        try:
            report.outcomes = self.runner.run_many(
                self.definition,
                (self.payload_of(request) for request in requests),
                concurrency=concurrency,
                deadline=None if deadline is None else time.time() + deadline,
                progress=done,
            )
        finally:
            unsubscribe()
            report.seconds = time.perf_counter() - started
        return report

    def random_requests(
        self,
        count: int,
        *,
        fail: Sequence[str] = (),
        fail_rate: float = 0.0,
        seed: int | None = None,
    ) -> list[BookingRequest]:
        """`count` random trips over the catalogue, reproducible with `seed`.

        Raises:
            InvalidInputError: `fail` names an unknown step.
        """
        BookingRequest("x", "x", fail=tuple(fail))  # validates the step names
        rng = random.Random(seed)
        codes = {name: self.services.by_name[name].resource_codes() for name in SERVICES}
        requests = []
        for number in range(count):
            failing = set(fail)
            if fail_rate and rng.random() < fail_rate:
                failing.add(rng.choice(SERVICES))
            requests.append(
                BookingRequest(
                    flight=rng.choice(codes["flight"]),
                    hotel=rng.choice(codes["hotel"]),
                    car=rng.choice(codes["car"]),
                    customer=f"customer-{number + 1}",
                    fail=tuple(sorted(failing)),
                )
            )
        return requests
