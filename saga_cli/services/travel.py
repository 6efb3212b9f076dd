"""The demo travel services (flight, hotel, car) and the booking saga built on them.

Each service behaves as a separate microservice: it owns its tables
(``<service>_resource`` and ``<service>_reservation``), opens its own
connection and commits its own transactions; it never shares one with the
saga log. Reservations are keyed by the idempotency key the orchestrator
passes, which makes every call safe to repeat:

* reserving twice with a key returns the first reservation;
* cancelling twice releases the capacity once;
* cancelling a key that was never reserved leaves a tombstone, so a reserve
  that arrives late is refused instead of leaking capacity.

Capacity is taken with a conditional ``UPDATE … WHERE available > 0`` (and a
CHECK constraint), never read-then-write, so concurrent sagas cannot overbook.
Failure injection lives here, not in the engine.

The services reach the log's database only through the store's extension
point (services/database.py): connections that take ``?`` placeholders and
serialize write transactions on SQLite and PostgreSQL alike, and the demo's
own migration branch, which creates their tables on first use.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

from saga_cli.breaker import CircuitBreaker
from saga_cli.domain import (
    DEFAULT_RETRIABLE_RETRY,
    RetryPolicy,
    SagaDefinition,
    SagaStatus,
    Step,
    StepContext,
    StepKind,
)
from saga_cli.errors import BusinessError, InvalidInputError, TransientError
from saga_cli.faults import (
    TRAVEL_STEPS,
    CrashPoint,
    InjectedFailureError,
    crashing,
    failing_first,
    parse_flaky,
    parse_slow,
    slowed,
)
from saga_cli.redact import strip_credentials
from saga_cli.services.database import DemoDatabase
from saga_cli.services.participants import ReservationParticipant
from saga_cli.store import Participant, ParticipantCursor, SagaStore

T = TypeVar("T")

SERVICES = ("flight", "hotel", "car")
SAGA_NAME = "travel-booking"
BASIC_SAGA_NAME = "travel-booking-basic"
STEPS = TRAVEL_STEPS
# What each reservation costs the customer, charged at the pivot.
FARES = {"flight": 300, "hotel": 200, "car": 80}


class NoAvailabilityError(BusinessError):
    """Raised when a resource has no capacity left."""


class ReservationRefusedError(BusinessError):
    """Raised when a reserve arrives for a key that was already cancelled (a tombstone)."""


@dataclass(frozen=True, slots=True)
class InventoryRow:
    """One resource of one service, with where its capacity went."""

    service: str
    resource: str
    name: str
    capacity: int
    available: int
    pending: int
    confirmed: int


class _Service:
    """A microservice's plumbing: its own connection per thread and its own transactions.

    Every write is one transaction (``body(cursor)``), run two ways: plainly
    (:meth:`_write`), or from a step on the event loop (:meth:`_write_async`,
    see Participant.run_async): on SQLite right there when the file is free
    (a local write takes microseconds), else once the writer holding it lets
    go, never blocking the loop meanwhile.
    """

    def __init__(self, database: DemoDatabase) -> None:
        self._database = database
        self._local = threading.local()

    def _db(self) -> Participant:
        db: Participant | None = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = self._database.connect()
        return db

    def _write(self, body: Callable[[ParticipantCursor], T]) -> T:
        return self._db().run(body)

    async def _write_async(self, body: Callable[[ParticipantCursor], T]) -> T:
        return await self._db().run_async(body)

    def close(self) -> None:
        """Close this thread's connection."""
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None


class ReservationService(_Service):
    """One travel microservice over its own two tables (a ReservationParticipant)."""

    # In-process calls answer in microseconds: no step timeout (see HANG_TIMEOUT).
    timeout: float | None = None

    def __init__(self, name: str, database: DemoDatabase) -> None:
        if name not in SERVICES:
            raise InvalidInputError(f"unknown service {name!r}; known: {', '.join(SERVICES)}")
        super().__init__(database)
        self.name = name
        self._resources = f"{name}_resource"
        self._reservations = f"{name}_reservation"

    def reserve(self, key: str, saga_id: str, resource: str, customer: str) -> dict[str, Any]:
        """Hold one unit of `resource` as a pending reservation under `key`.

        Raises:
            NoAvailabilityError: nothing left.
            ReservationRefusedError: `key` was cancelled before this arrived.
        """
        return self._write(partial(self._reserve, key, saga_id, resource, customer))

    async def reserve_async(
        self, key: str, saga_id: str, resource: str, customer: str
    ) -> dict[str, Any]:
        """:meth:`reserve` from a step on the event loop."""
        return await self._write_async(partial(self._reserve, key, saga_id, resource, customer))

    def cancel(self, key: str, saga_id: str) -> dict[str, Any]:
        """Release the reservation under `key`, once; tombstone it if it never arrived."""
        return self._write(partial(self._cancel, key, saga_id))

    async def cancel_async(self, key: str, saga_id: str) -> dict[str, Any]:
        """:meth:`cancel` from a step on the event loop."""
        return await self._write_async(partial(self._cancel, key, saga_id))

    def confirm(self, key: str) -> dict[str, Any]:
        """Turn a pending reservation into a confirmed one (releases the semantic lock).

        Raises:
            TransientError: the reservation is missing or cancelled; the saga
                cannot confirm what it does not hold (an operator must look).
        """
        return self._write(partial(self._confirm, key))

    async def confirm_async(self, key: str) -> dict[str, Any]:
        """:meth:`confirm` from a step on the event loop."""
        # One statement, its own (autocommit) transaction; the rare miss reads why.
        changed = await self._db().execute_async(self._CONFIRM, (time.time(), key))
        if changed:
            return {"confirmed": key}
        return await self._write_async(partial(self._confirm, key))

    @property
    def _CONFIRM(self) -> str:  # noqa: N802  # a statement, named like one
        return (
            f"UPDATE {self._reservations} SET status='confirmed', updated_at=?"
            " WHERE key=? AND status='pending'"
        )

    def _reserve(
        self, key: str, saga_id: str, resource: str, customer: str, cur: ParticipantCursor
    ) -> dict[str, Any]:
        now = time.time()
        # Insert first: a new key (the usual case) then costs one more
        # statement; a repeated key falls through to reading what is there.
        inserted = cur.execute(
            f"INSERT INTO {self._reservations}"
            " (key, saga_id, resource, customer, status, created_at, updated_at)"
            " VALUES (?,?,?,?,'pending',?,?) ON CONFLICT (key) DO NOTHING",
            (key, saga_id, resource, customer, now, now),
        ).rowcount
        if inserted:
            taken = cur.execute(
                f"UPDATE {self._resources} SET available = available - 1"
                " WHERE code=? AND available > 0",
                (resource,),
            ).rowcount
            if taken != 1:  # rolls the insert back too
                raise NoAvailabilityError(f"no {self.name} availability for {resource}")
            return {"reservation": key, "resource": resource}
        status, held = cur.execute(
            f"SELECT status, resource FROM {self._reservations} WHERE key=?", (key,)
        ).fetchone()
        if status == "canceled":  # nothing was written: the rollback changes nothing
            raise ReservationRefusedError(
                f"{self.name} reservation {key} was cancelled before the request arrived"
            )
        return {"reservation": key, "resource": held}

    def _cancel(self, key: str, saga_id: str, cur: ParticipantCursor) -> dict[str, Any]:
        row = cur.execute(
            f"SELECT status, resource FROM {self._reservations} WHERE key=?", (key,)
        ).fetchone()
        now = time.time()
        if row is None:
            cur.execute(
                f"INSERT INTO {self._reservations}"
                " (key, saga_id, resource, customer, status, created_at, updated_at)"
                " VALUES (?,?,NULL,NULL,'canceled',?,?)",
                (key, saga_id, now, now),
            )
            return {"canceled": key, "tombstone": True}
        if row[0] == "canceled":
            return {"canceled": key, "already": True}
        cur.execute(
            f"UPDATE {self._reservations} SET status='canceled', updated_at=? WHERE key=?",
            (now, key),
        )
        cur.execute(
            f"UPDATE {self._resources} SET available = available + 1 WHERE code=?", (row[1],)
        )
        return {"canceled": key}

    def _confirm(self, key: str, cur: ParticipantCursor) -> dict[str, Any]:
        changed = cur.execute(
            f"UPDATE {self._reservations} SET status='confirmed', updated_at=?"
            " WHERE key=? AND status='pending'",
            (time.time(), key),
        ).rowcount
        if changed:
            return {"confirmed": key}
        row = cur.execute(f"SELECT status FROM {self._reservations} WHERE key=?", (key,)).fetchone()
        if row is not None and row[0] == "confirmed":
            return {"confirmed": key, "already": True}
        raise TransientError(f"{self.name} reservation {key} is {row[0] if row else 'missing'}")

    def resource_codes(self) -> list[str]:
        """Codes of the resources this service offers."""
        rows = self._db().query(f"SELECT code FROM {self._resources} ORDER BY code")
        return [r[0] for r in rows]

    def inventory(self) -> list[InventoryRow]:
        """Capacity and where it went, per resource."""
        sql = (
            f"SELECT r.code, r.name, r.capacity, r.available,"
            f" (SELECT COUNT(*) FROM {self._reservations} v"
            f"   WHERE v.resource = r.code AND v.status = 'pending'),"
            f" (SELECT COUNT(*) FROM {self._reservations} v"
            f"   WHERE v.resource = r.code AND v.status = 'confirmed')"
            f" FROM {self._resources} r ORDER BY r.code"
        )
        return [InventoryRow(self.name, *row) for row in self._db().query(sql)]

    def reservations(self) -> list[tuple[str, str, str | None, str]]:
        """Every reservation as (key, saga_id, resource, status), tombstones included."""
        return self._db().query(f"SELECT key, saga_id, resource, status FROM {self._reservations}")

    def restock(self, capacity: int) -> None:
        """Set every resource's capacity, keeping what is reserved.

        Raises:
            InvalidInputError: `capacity` is below what is already reserved.
        """
        with self._db().transaction() as cur:
            held = cur.execute(
                f"SELECT MAX(capacity - available) FROM {self._resources}"
            ).fetchone()[0]
            if capacity < (held or 0):
                raise InvalidInputError(
                    f"capacity {capacity} is below the {held} {self.name} units already reserved"
                )
            cur.execute(
                f"UPDATE {self._resources}"
                " SET available = ? - (capacity - available), capacity = ?",
                (capacity, capacity),
            )


class PaymentService(_Service):
    """Charges the customer: the saga's pivot, which nothing undoes."""

    def charge(self, key: str, saga_id: str, customer: str, amount: int) -> dict[str, Any]:
        """Charge `amount` under `key`, once; a repeated key returns the first charge."""
        return self._write(partial(self._charge, key, saga_id, customer, amount))

    async def charge_async(
        self, key: str, saga_id: str, customer: str, amount: int
    ) -> dict[str, Any]:
        """:meth:`charge` from a step on the event loop."""
        return await self._write_async(partial(self._charge, key, saga_id, customer, amount))

    @staticmethod
    def _charge(
        key: str, saga_id: str, customer: str, amount: int, cur: ParticipantCursor
    ) -> dict[str, Any]:
        cur.execute(
            "INSERT INTO payment_charge (key, saga_id, customer, amount, created_at)"
            " VALUES (?,?,?,?,?) ON CONFLICT (key) DO NOTHING",
            (key, saga_id, customer, amount, time.time()),
        )
        charged = cur.execute("SELECT amount FROM payment_charge WHERE key=?", (key,)).fetchone()
        return {"charge": key, "amount": charged[0]}

    def charges(self) -> list[tuple[str, str, int]]:
        """Every charge as (key, saga_id, amount)."""
        return self._db().query("SELECT key, saga_id, amount FROM payment_charge")


class NotificationService(_Service):
    """Sends the booking confirmation (an outbox row; sending twice is one message)."""

    def send(self, key: str, saga_id: str, customer: str, message: str) -> dict[str, Any]:
        """Queue `message` for `customer` under `key`, once."""
        return self._write(partial(self._send, key, saga_id, customer, message))

    async def send_async(
        self, key: str, saga_id: str, customer: str, message: str
    ) -> dict[str, Any]:
        """:meth:`send` from a step on the event loop."""
        return await self._write_async(partial(self._send, key, saga_id, customer, message))

    @staticmethod
    def _send(
        key: str, saga_id: str, customer: str, message: str, cur: ParticipantCursor
    ) -> dict[str, Any]:
        cur.execute(
            "INSERT INTO notification_outbox (key, saga_id, customer, message, created_at)"
            " VALUES (?,?,?,?,?) ON CONFLICT (key) DO NOTHING",
            (key, saga_id, customer, message, time.time()),
        )
        return {"notified": customer}

    def sent(self) -> list[tuple[str, str]]:
        """Every message as (key, saga_id)."""
        return self._db().query("SELECT key, saga_id FROM notification_outbox")


class TravelServices:
    """The three reservation services, the payment and the notification.

    The reservation services this process books new trips with are
    ``by_name``; an execution already in the log is served by the ones its
    payload records (:meth:`of_execution`): the in-process tables when it
    recorded none, else a client of each recorded URL, made once and kept, so
    one process serves executions booked against different services.

    Args:
        database: the saga log's database, which hosts the in-process services.
        remote: reservation services reached elsewhere (over HTTP), by name;
            the ones named replace their in-process twins for new bookings.
            Payment and notification always stay in-process.
        connect: makes a client for a recorded service URL (name, url); the
            credentials the log never holds are put back first (see
            :func:`recorded_services`).
    """

    def __init__(
        self,
        database: DemoDatabase,
        remote: Mapping[str, ReservationParticipant] | None = None,
        *,
        connect: Callable[[str, str], ReservationParticipant] | None = None,
    ) -> None:
        remote = remote or {}
        self.database = database
        self.local: dict[str, ReservationParticipant] = {
            name: ReservationService(name, database) for name in SERVICES
        }
        self.by_name: dict[str, ReservationParticipant] = {
            name: remote[name] if name in remote else self.local[name] for name in SERVICES
        }
        self.flight = self.by_name["flight"]
        self.hotel = self.by_name["hotel"]
        self.car = self.by_name["car"]
        self.payment = PaymentService(database)
        self.notification = NotificationService(database)
        self._connect = connect
        # One client per recorded (service, URL): the process's own first.
        self._clients: dict[tuple[str, str], ReservationParticipant] = {
            (name, _stored(str(service.url))): service
            for name, service in remote.items()
            if hasattr(service, "url")
        }
        self._clients_lock = threading.Lock()

    def endpoints(self) -> dict[str, str]:
        """What a new booking records: the remote services' URLs, credentials stripped."""
        return {
            name: _stored(str(service.url))
            for name, service in self.by_name.items()
            if hasattr(service, "url")
        }

    def of_execution(self, name: str, payload: Mapping[str, Any]) -> ReservationParticipant:
        """The `name` service the execution with `payload` booked with.

        Raises:
            InvalidInputError: the payload records a malformed services entry,
                or a remote service and this process cannot reach any.
        """
        url = recorded_services(payload).get(name)
        if url is None:
            return self.local[name]
        return self.remote_at(name, url)

    def remote_at(self, name: str, url: str) -> ReservationParticipant:
        """The client of the `name` service at `url` (a stored URL), made once."""
        with self._clients_lock:
            client = self._clients.get((name, url))
            if client is None:
                if self._connect is None:
                    raise InvalidInputError(
                        f"this process cannot reach the {name} service at {url}"
                    )
                client = self._clients[(name, url)] = self._connect(name, url)
            return client

    def audited(
        self, payloads: Collection[Mapping[str, Any]]
    ) -> list[tuple[str, str | None, ReservationParticipant]]:
        """Every service that `payloads` booked with, and this process's own remote ones.

        Each as (name, stored URL or None for the in-process one, the service).

        The in-process services are in the list only when some payload
        recorded none (or this process uses them and their tables exist):
        an audit must not create the demo's tables in a log that never had them.
        """
        wanted: dict[tuple[str, str | None], None] = {}
        for payload in payloads:
            recorded = recorded_services(payload)
            for name in SERVICES:
                wanted[(name, recorded.get(name))] = None
        for name, url in self.endpoints().items():
            wanted[(name, url)] = None
        if self.database.exists():
            for name in SERVICES:
                if self.by_name[name] is self.local[name]:
                    wanted[(name, None)] = None
        return [
            (name, url, self.local[name] if url is None else self.remote_at(name, url))
            for name, url in wanted
        ]

    def inventory(self) -> list[InventoryRow]:
        """Inventory of every service."""
        return [row for service in self.by_name.values() for row in service.inventory()]

    def restock(self, capacity: int) -> None:
        """Set every resource of every service to `capacity`."""
        if capacity < 1:
            raise InvalidInputError("capacity must be at least 1")
        for service in self.by_name.values():
            service.restock(capacity)

    def validate(self, request: BookingRequest) -> None:
        """Refuse a request that names a resource no service offers.

        Raises:
            InvalidInputError: naming the unknown code and the known ones.
        """
        for service, code in request.resources().items():
            known = self.by_name[service].resource_codes()
            if code not in known:
                raise InvalidInputError(f"unknown {service} {code!r}; known: {', '.join(known)}")

    def close(self) -> None:
        """Close the services' connections and clients."""
        for service in {*self.local.values(), *self._clients.values()}:
            service.close()
        self.payment.close()
        self.notification.close()


def _stored(url: str) -> str:
    """`url` as the log may keep it: no credentials, no trailing slash."""
    return strip_credentials(url).rstrip("/")


def recorded_services(payload: Mapping[str, Any]) -> dict[str, str]:
    """The remote services a booking's payload names (empty: all in-process).

    Raises:
        InvalidInputError: ``services`` is not a mapping of flight, hotel or
            car to an http(s) URL.
    """
    recorded = payload.get("services") or {}
    if not isinstance(recorded, Mapping):
        raise InvalidInputError("malformed booking payload: services is not an object")
    for name, url in recorded.items():
        if name not in SERVICES or not isinstance(url, str) or "://" not in url:
            raise InvalidInputError(
                f"malformed booking payload: services names {name!r}, not one of "
                f"{', '.join(SERVICES)} with an http URL"
            )
    return dict(recorded)


# -- the booking request -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BookingRequest:
    """A trip to book: the payload of a travel-booking execution.

    ``fail`` names steps whose service declines (failure injection); it is
    part of the payload so a resumed execution keeps failing the same way.
    """

    flight: str
    hotel: str
    car: str | None = None
    customer: str = "guest"
    fail: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for step in self.fail:
            if step not in STEPS:
                raise InvalidInputError(
                    f"unknown step {step!r} in --fail; steps: {', '.join(STEPS)}"
                )
        if not self.flight or not self.hotel:
            raise InvalidInputError("a booking needs a flight and a hotel")
        for name in ("flight", "hotel", "car", "customer"):
            value = getattr(self, name)
            try:
                (value or "").encode("utf-8")
            except UnicodeEncodeError:
                raise InvalidInputError(f"--{name} is not valid text (it is not UTF-8)") from None

    def resources(self) -> dict[str, str]:
        """The resource code requested from each service."""
        wanted = {"flight": self.flight, "hotel": self.hotel}
        if self.car:
            wanted["car"] = self.car
        return wanted

    def to_payload(self) -> dict[str, Any]:
        """The JSON payload stored in the log."""
        return {
            "flight": self.flight,
            "hotel": self.hotel,
            "car": self.car,
            "customer": self.customer,
            "fail": list(self.fail),
        }

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> BookingRequest:
        """Parse a stored payload.

        Raises:
            InvalidInputError: a field is missing or of the wrong type.
        """
        try:
            car = payload.get("car")
            return cls(
                flight=str(payload["flight"]),
                hotel=str(payload["hotel"]),
                car=None if car is None else str(car),
                customer=str(payload.get("customer", "guest")),
                fail=tuple(str(s) for s in payload.get("fail", ())),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise InvalidInputError(f"malformed booking payload: {exc}") from None

    @classmethod
    def of(cls, ctx: StepContext) -> BookingRequest:
        """The request of the execution `ctx` belongs to, parsed once for all its steps."""
        request = _PARSED.get(ctx.execution_id)
        if request is None:
            request = _PARSED[ctx.execution_id] = cls.from_payload(ctx.payload)
            if len(_PARSED) > 4096:  # executions in flight are far fewer: drop the oldest
                with contextlib.suppress(RuntimeError, StopIteration, KeyError):
                    del _PARSED[next(iter(_PARSED))]
        return request


# An execution's payload never changes: its request is parsed at its first step.
_PARSED: dict[str, BookingRequest] = {}


# -- crash points and the saga definition ------------------------------------------


def all_crash_points() -> list[CrashPoint]:
    """Every crash point of the travel saga, in execution order."""
    points = [CrashPoint(s, False, w) for s in STEPS for w in ("before", "after")]
    points += [CrashPoint(s, True, w) for s in reversed(SERVICES) for w in ("before", "after")]
    return points


class ServiceOutageError(TransientError):
    """Raised by ``--outage SERVICE``: the service does not answer at all."""


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """Failures injected into this process's calls to the services.

    Unlike ``--fail`` (a service's decision, stored with the booking), these
    describe the environment of one run: a resumed execution meets whatever
    faults the resuming process was given, which is how an operator retries
    a saga that got stuck during an outage.

    Attributes:
        crash_at: kill the process at this point.
        flaky: step -> its first N attempts fail with a transient error.
        fail_compensation: step -> the first N attempts of its compensation
            fail (None: every attempt).
        slow: step -> seconds each call to it takes longer.
        outage: services whose every call fails (transient), compensations too.
        hang: steps that hang past their timeout, then complete late; the
            definition gives these steps a timeout of HANG_TIMEOUT.
    """

    crash_at: CrashPoint | None = None
    flaky: Mapping[str, int] = field(default_factory=dict)
    fail_compensation: Mapping[str, int | None] = field(default_factory=dict)
    slow: Mapping[str, float] = field(default_factory=dict)
    outage: frozenset[str] = frozenset()
    hang: frozenset[str] = frozenset()

    @classmethod
    def parse(
        cls,
        *,
        crash_at: str | None = None,
        flaky: Sequence[str] = (),
        fail_compensation: Sequence[str] = (),
        slow: Sequence[str] = (),
        outage: Sequence[str] = (),
        hang: Sequence[str] = (),
    ) -> FaultPlan:
        """Build a plan from the CLI's option values.

        Raises:
            InvalidInputError: an unknown step or service, or a malformed count.
        """
        flaky_steps, failing = parse_flaky(flaky, fail_compensation, STEPS, SERVICES)
        delays = dict(parse_slow(text, STEPS) for text in slow)
        for service in outage:
            if service not in SERVICES:
                raise InvalidInputError(
                    f"unknown service {service!r} in --outage; choose from {', '.join(SERVICES)}"
                )
        for step in hang:
            if step not in STEPS:
                raise InvalidInputError(
                    f"unknown step {step!r} in --timeout; choose from {', '.join(STEPS)}"
                )
        return cls(
            CrashPoint.parse(crash_at, STEPS, SERVICES) if crash_at is not None else None,
            flaky_steps,
            failing,
            delays,
            frozenset(outage),
            frozenset(hang),
        )

    def wrap(
        self, step: str, compensation: bool, call: Callable[[StepContext], Any]
    ) -> Callable[[StepContext], Any]:
        """`call` with this plan's faults for `step` around it (none: `call` itself)."""
        wrapped = call
        if compensation and step in self.fail_compensation:
            wrapped = failing_first(wrapped, self.fail_compensation[step], "compensation")
        if not compensation and step in self.flaky:
            wrapped = failing_first(wrapped, self.flaky[step], "call")
        # A reservation step needs its own service; confirm needs all three.
        needs = {step} if step in SERVICES else set(SERVICES) if step == "confirm" else set()
        down = self.outage & needs
        if down:
            wrapped = _unreachable(sorted(down))
        if step in self.slow:
            wrapped = slowed(wrapped, self.slow[step])
        if not compensation and step in self.hang:
            wrapped = slowed(wrapped, HANG_SECONDS)  # answers, but only after the timeout
        point = self.crash_at
        if point is not None and point.step == step and point.compensation == compensation:
            wrapped = crashing(wrapped, point.when, point.attempt)
        return wrapped


def _unreachable(services: list[str]) -> Callable[[StepContext], Any]:
    async def down(ctx: StepContext) -> Any:
        raise ServiceOutageError(f"{', '.join(services)} service unreachable (--outage)")

    return down


# `--timeout STEP`: the step gets this timeout and answers only after HANG_SECONDS.
# The travel steps have no timeout otherwise: a timed call costs a thread
# hand-off (about 0.1 ms) and these in-process services answer in microseconds.
HANG_TIMEOUT = 0.25
HANG_SECONDS = 1.0

# Reservations are retried on transient errors (a flaky network, a busy
# database) a few times, quickly: the booking should not wait long.
RESERVATION_RETRY = RetryPolicy(
    max_attempts=4, initial_delay=0.02, multiplier=2.0, max_delay=0.5, jitter=0.2
)


PAYMENT_RETRY = RetryPolicy(max_attempts=3, initial_delay=0.05, max_delay=0.5, jitter=0.2)


BREAKERS = (*SERVICES, "payment", "notification")


def travel_saga(
    services: TravelServices,
    faults: FaultPlan | None = None,
    *,
    payment: bool = True,
    breakers: Mapping[str, CircuitBreaker] | None = None,
) -> SagaDefinition:
    """The travel booking, the saga pattern's classic example, with a pivot.

    Reserve flight, hotel and car (compensatable; held ``pending``, a
    semantic lock), charge the payment (the pivot: once it succeeds the saga
    only moves forward), confirm the reservations (retriable: ``pending`` ->
    ``confirmed``, the lock released) and send the confirmation (retriable).

    Args:
        services: the services the steps call.
        faults: failures to inject into this process's calls.
        payment: False gives the basic saga (the three reservations and the
            confirmation, no payment or notification): the shape of the
            3-step booking saga that ``bench/throughput.py`` compares with peers.
        breakers: a circuit breaker per service (see BREAKERS); every call to
            a service goes through its breaker.
    """
    faults = faults or FaultPlan()

    # Each breaker is looked up at its first use, not here: a BreakerBoard
    # reads the breakers' states from the log's database only then.
    found: dict[str, CircuitBreaker] = {}

    def breaker_of(service: str) -> CircuitBreaker:
        assert breakers is not None
        breaker = found.get(service)
        if breaker is None:
            breaker = found[service] = breakers[service]
        return breaker

    def guarded(service: str, call: Callable[[StepContext], Any]) -> Callable[[StepContext], Any]:
        if breakers is None:
            return call
        breaker: CircuitBreaker | None = None

        async def through_breaker(ctx: StepContext) -> Any:
            nonlocal breaker
            if breaker is None:
                breaker = breaker_of(service)
            return await breaker.call_async(call, ctx)

        return through_breaker

    def declined(ctx: StepContext, request: BookingRequest) -> None:
        if ctx.step in request.fail:
            if ctx.step in ("confirm", "notify"):
                raise TransientError(f"{ctx.step} failed (--fail {ctx.step})")
            raise InjectedFailureError(f"{ctx.step} declined the booking (--fail)")

    # The steps are ``async def``: in-process services write right on the
    # event loop when the database is free (else on a thread), remote ones are
    # awaited over HTTP, so many bookings wait on their services at once.
    # Each call goes to the service the execution recorded (see
    # TravelServices.of_execution), whichever services this process books with.
    def reserver(name: str) -> Callable[[StepContext], Any]:
        async def reserve(ctx: StepContext) -> Any:
            request = BookingRequest.of(ctx)
            code = request.resources().get(name)
            if code is None:
                return {"skipped": True}
            declined(ctx, request)
            service = services.of_execution(name, ctx.payload)
            return await service.reserve_async(ctx.key, ctx.execution_id, code, request.customer)

        return reserve

    def canceller(name: str) -> Callable[[StepContext], Any]:
        async def cancel(ctx: StepContext) -> Any:
            if name not in BookingRequest.of(ctx).resources():
                return {"skipped": True}
            service = services.of_execution(name, ctx.payload)
            return await service.cancel_async(ctx.action_key, ctx.execution_id)

        return cancel

    async def charge(ctx: StepContext) -> Any:
        request = BookingRequest.of(ctx)
        declined(ctx, request)
        amount = sum(FARES[name] for name in request.resources())
        return await services.payment.charge_async(
            ctx.key, ctx.execution_id, request.customer, amount
        )

    async def confirm(ctx: StepContext) -> Any:
        request = BookingRequest.of(ctx)
        declined(ctx, request)
        for name in request.resources():
            key = f"{ctx.execution_id}:{name}"
            service = services.of_execution(name, ctx.payload)
            if breakers is None:
                await service.confirm_async(key)
            else:
                await (found.get(name) or breaker_of(name)).call_async(service.confirm_async, key)
        return {"confirmed": sorted(request.resources())}

    async def notify(ctx: StepContext) -> Any:
        request = BookingRequest.of(ctx)
        declined(ctx, request)
        booked = ", ".join(f"{k} {v}" for k, v in request.resources().items())
        message = f"Your trip is booked: {booked}."
        return await services.notification.send_async(
            ctx.key, ctx.execution_id, request.customer, message
        )

    steps = [
        Step(
            name,
            # the breaker sees what the (faulty) service does, so it wraps the faults
            guarded(name, faults.wrap(name, False, reserver(name))),
            guarded(name, faults.wrap(name, True, canceller(name))),
            retry=RESERVATION_RETRY,
            # a remote service's reply may never come: the step then fails
            # with its effect unknown and is compensated (a tombstone)
            timeout=HANG_TIMEOUT if name in faults.hang else services.by_name[name].timeout,
        )
        for name in SERVICES
    ]

    def forward(
        name: str,
        call: Callable[[StepContext], Any],
        kind: StepKind,
        retry: RetryPolicy,
        service: str | None = None,
    ) -> Step:
        timeout = HANG_TIMEOUT if name in faults.hang else None
        action = faults.wrap(name, False, call)
        if service is not None:
            action = guarded(service, action)  # the breaker sees the (faulty) service
        return Step(name, action, kind=kind, retry=retry, timeout=timeout)

    if payment:
        steps.append(forward("payment", charge, StepKind.PIVOT, PAYMENT_RETRY, "payment"))
    # confirm calls the three reservation services, each through its own breaker
    steps.append(forward("confirm", confirm, StepKind.RETRIABLE, DEFAULT_RETRIABLE_RETRY))
    if payment:
        steps.append(
            forward("notify", notify, StepKind.RETRIABLE, DEFAULT_RETRIABLE_RETRY, "notification")
        )

    def known_services(payload: Mapping[str, Any]) -> None:
        # Refused before anything is written: a payload whose services this
        # process cannot make sense of (the calls would go nowhere).
        recorded_services(payload)

    return SagaDefinition(
        SAGA_NAME if payment else BASIC_SAGA_NAME, tuple(steps), precondition=known_services
    )


# -- the audit ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuditReport:
    """Result of ``saga check``."""

    violations: list[str]
    executions: int
    reservations: int

    @property
    def consistent(self) -> bool:
        """True when no violation was found."""
        return not self.violations


def audit(
    executions: Mapping[str, tuple[SagaStatus, Mapping[str, Any]]],
    services: TravelServices,
    *,
    paid: Collection[str] = (),
) -> AuditReport:
    """Check the log against the services.

    Args:
        executions: travel-booking executions by id: (status, payload).
        services: the services to inspect.
        paid: ids of executions whose saga has the payment pivot and the
            notification (a completed one must have both).

    Checks that each completed execution holds a confirmed reservation at
    every service it booked, each compensated one holds none and was never
    charged, every completed paid one was charged once and notified, nothing
    belongs to no execution, and every resource's capacity is conserved.
    """
    violations: list[str] = []
    held: dict[str, dict[str, str]] = {}
    total = 0
    booked_at: dict[str, dict[str, str | None]] = {}
    for execution_id, (_status, payload) in executions.items():
        try:
            recorded = recorded_services(payload)
        except InvalidInputError:
            violations.append(f"execution {execution_id} has a malformed payload")
            recorded = {}
        booked_at[execution_id] = {name: recorded.get(name) for name in SERVICES}
    where = [payload for _status, payload in executions.values()]
    audited = services.audited([p for p in where if _well_formed(p)])
    for name, url, service in audited:
        at = name if url is None else f"{name} at {url}"
        for key, saga_id, resource, status in service.reservations():
            total += 1
            if booked_at.get(saga_id, {}).get(name, "") != url:
                violations.append(f"{at} reservation {key} belongs to no execution")
                continue
            held.setdefault(saga_id, {})[name] = status
            if resource is None and status != "canceled":
                violations.append(f"{at} reservation {key} holds no resource")
    for execution_id, (status, payload) in executions.items():
        holding = held.get(execution_id, {})
        if status is SagaStatus.COMPLETED:
            try:
                wanted = BookingRequest.from_payload(payload).resources()
            except InvalidInputError:
                violations.append(f"execution {execution_id} has a malformed payload")
                continue
            for name in wanted:
                if holding.get(name) != "confirmed":
                    violations.append(
                        f"completed execution {execution_id} has {name} reservation "
                        f"{holding.get(name, 'missing')}, expected confirmed"
                    )
        elif status is SagaStatus.COMPENSATED:
            for name, state in holding.items():
                if state == "canceled":
                    continue
                violations.append(
                    f"compensated execution {execution_id} still holds a {state} {name} reservation"
                )
    charged: set[str] = set()
    notified: set[str] = set()
    if services.database.exists():  # never made here: a log of the user's sagas has none
        charged = {saga_id for _key, saga_id, _amount in services.payment.charges()}
        notified = {saga_id for _key, saga_id in services.notification.sent()}
    for kind, owners in (("charge", charged), ("notification", notified)):
        for saga_id in sorted(owners - executions.keys()):
            violations.append(f"a {kind} of {saga_id} belongs to no execution")
    for execution_id, (status, _payload) in executions.items():
        if status is SagaStatus.COMPENSATED and execution_id in charged:
            violations.append(f"compensated execution {execution_id} was charged")
        if status is SagaStatus.COMPLETED and execution_id in paid:
            if execution_id not in charged:
                violations.append(f"completed execution {execution_id} was never charged")
            if execution_id not in notified:
                violations.append(f"completed execution {execution_id} was never notified")
    total += len(charged) + len(notified)
    rows = [row for _name, _url, service in audited for row in service.inventory()]
    for row in rows:
        if row.available + row.pending + row.confirmed != row.capacity or row.available < 0:
            violations.append(
                f"{row.service} {row.resource}: capacity {row.capacity} != available "
                f"{row.available} + pending {row.pending} + confirmed {row.confirmed}"
            )
    return AuditReport(violations, len(executions), total)


def _well_formed(payload: Mapping[str, Any]) -> bool:
    try:
        recorded_services(payload)
    except InvalidInputError:
        return False
    return True


def open_services(
    store: SagaStore,
    remote: Mapping[str, ReservationParticipant] | None = None,
    *,
    connect: Callable[[str, str], ReservationParticipant] | None = None,
) -> TravelServices:
    """The travel services on the same database as `store` (separate connections).

    Nothing is read or created until a service is first called: then the
    demo's migration branch makes its tables, if the log has none yet.

    Args:
        store: the saga log, whose database hosts the in-process services.
        remote: reservation services reached elsewhere, replacing their
            in-process twins (see TravelServices).
        connect: makes a client for a service URL an execution recorded.
    """
    return TravelServices(DemoDatabase(store), remote, connect=connect)
