"""One travel service as an HTTP microservice: FastAPI over its own SQLite file.

``saga serve hotel`` runs :func:`create_app` on uvicorn. The app wraps the
in-process :class:`~saga_cli.services.travel.ReservationService`, so the
semantics are the same in both worlds; only the transport differs:

* ``POST /reserve``, ``POST /confirm`` and ``POST /cancel`` carry the
  orchestrator's idempotency key in the ``Idempotency-Key`` header. A repeated
  reserve returns the first result; a cancel before its reserve leaves a
  tombstone that refuses the reserve when it arrives late.
* ``GET /inventory`` and ``GET /reservations`` let ``saga inventory`` and
  ``saga check`` read the service's state; ``POST /restock`` refills it.
* A refusal (no availability, a tombstone, a reservation that is not pending)
  is a 409, a malformed request a 422 and a database failure a 503; the JSON
  body says ``{"detail": message, "error": kind}``.

The service owns its database: a file of its own, not the saga log. Its
commits are fsynced (``synchronous=FULL``): no saga log commit covers them.
This module imports FastAPI; only ``saga serve`` and the tests import it.
"""

from __future__ import annotations

import inspect
import logging
import time
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, Field

from saga_cli.body_limit import BodyLimit
from saga_cli.errors import BusinessError, InvalidInputError, StoreError, TransientError
from saga_cli.limits import MAX_REQUEST_BYTES
from saga_cli.services.database import DemoDatabase
from saga_cli.services.travel import SERVICES, ReservationService
from saga_cli.store import open_store
from saga_cli.tracing import Tracing

KEY_HEADER = "Idempotency-Key"
log = logging.getLogger("saga_cli.http")
# Ports of `saga serve all` (and of each service alone): flight, hotel, car.
DEFAULT_PORT = 8001


def default_port(service: str) -> int:
    """The port `service` listens on unless told otherwise (8001, 8002, 8003)."""
    return DEFAULT_PORT + SERVICES.index(service)


def _encodable(text: str) -> str:
    """`text` if it can be stored (UTF-8): a lone surrogate is refused with a 422, not a 500."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("holds a lone surrogate, which is not text") from None
    return text


Text = Annotated[str, AfterValidator(_encodable)]


class ReserveBody(BaseModel):
    """The body of ``POST /reserve``."""

    saga_id: Text = Field(min_length=1, max_length=32)
    resource: Text = Field(min_length=1, max_length=40)
    customer: Text = Field(max_length=200)


class CancelBody(BaseModel):
    """The body of ``POST /cancel``."""

    saga_id: Text = Field(min_length=1, max_length=32)


class RestockBody(BaseModel):
    """The body of ``POST /restock``."""

    capacity: int = Field(ge=1, le=1_000_000_000)


Key = Annotated[str, Header(alias=KEY_HEADER, min_length=1, max_length=200)]


def _malformed(request: Request, exc: Exception) -> JSONResponse:
    """A malformed request is a 422 that names the fields, never echoing what was sent.

    FastAPI's own answer repeats the input, and an input holding NaN or a
    lone surrogate cannot be encoded as JSON: the service answered 500, which
    the orchestrator retries as a transient failure.
    """
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    problems = "; ".join(
        f"{'.'.join(str(part) for part in error.get('loc', ()))}: {error.get('msg', 'invalid')}"
        for error in errors
    )
    detail = problems.encode("utf-8", "replace").decode("utf-8")[:1000] or "malformed request"
    return JSONResponse(status_code=422, content={"detail": detail, "error": "InvalidInputError"})


def open_service(service: str, db: str | Path) -> ReservationService:
    """The reservation service `service` over its own database file (created on first use).

    Raises:
        InvalidInputError: an unknown service.
        StoreError: the file cannot be opened or migrated.
    """
    if service not in SERVICES:
        raise InvalidInputError(f"unknown service {service!r}; known: {', '.join(SERVICES)}")
    path = Path(db).resolve()
    # The service's file gets the project's schema: its tables and seeded
    # catalogue come from the demo's migration branch, as the in-process
    # services' do, made here at once rather than on the first request.
    store = open_store(f"sqlite:///{path}?participant_synchronous=FULL")
    try:
        database = DemoDatabase(store)
        database.prepare()
    finally:
        store.close()  # the service's connections are participants' of their own
    return ReservationService(service, database)


def create_app(
    service: str, db: str | Path, *, delay: float = 0.0, tracing: Tracing | None = None
) -> FastAPI:
    """The HTTP app of one travel service.

    Args:
        service: flight, hotel or car.
        db: the service's own SQLite file (created and migrated if missing).
        delay: seconds each reserve waits before it runs: a slow network or
            an overloaded service, so the orchestrator's timeout fires first
            and its compensation overtakes the reserve (a demo of tombstones).
        tracing: makes a server span of each request, continuing the trace of
            the step that sent it (its ``traceparent`` header).

    Raises:
        InvalidInputError: an unknown service or a negative delay.
        StoreError: the database cannot be opened.
    """
    if not 0 <= delay <= 3600:  # NaN too: every reserve would answer 500
        raise InvalidInputError("--delay must be a number of seconds from 0 to 3600")
    participant = open_service(service, db)
    options: dict[str, Any] = {}
    if tracing is not None and "telemetry" in inspect.signature(FastAPI).parameters:
        # FastAPI's own request spans (newer versions) would duplicate ours below.
        options["telemetry"] = {"tracing": False}
    app = FastAPI(
        title=f"saga {service} service",
        version="1",
        description=f"The {service} reservations of the saga demo, over HTTP.",
        **options,
    )

    def refused(status: int) -> Any:
        def handler(request: Request, exc: Exception) -> JSONResponse:
            # Logged here, not only in the access log: a request whose caller
            # gave up (a timeout) gets no access-log line, yet it took effect.
            log.info(
                "%s %s key=%s refused (%d): %s",
                request.method,
                request.url.path,
                request.headers.get(KEY_HEADER, "-"),
                status,
                exc,
            )
            return JSONResponse(
                status_code=status, content={"detail": str(exc), "error": type(exc).__name__}
            )

        return handler

    if tracing is not None:

        @app.middleware("http")
        async def traced(request: Request, call_next: Any) -> Any:
            span = tracing.start_request(request.method, request.url.path, request.headers)
            token = tracing.attach(span)
            try:
                response = await call_next(request)
            except BaseException as exc:
                tracing.end_request(span, None, exc)
                raise
            finally:
                tracing.detach(token)
            tracing.end_request(span, response.status_code, None)
            return response

    # Business refusals are the caller's to act on (compensate); a failing
    # database is this service's problem, worth retrying later.
    app.add_exception_handler(BusinessError, refused(409))
    app.add_exception_handler(TransientError, refused(409))
    app.add_exception_handler(InvalidInputError, refused(422))
    app.add_exception_handler(StoreError, refused(503))
    app.add_exception_handler(RequestValidationError, _malformed)
    app.add_middleware(BodyLimit, limit=MAX_REQUEST_BYTES)

    # Plain `def` endpoints run on FastAPI's thread pool: a delayed reserve
    # does not hold up the cancel that overtakes it.
    @app.get("/health")
    def health() -> dict[str, Any]:
        """The service's name: it is up."""
        return {"service": service, "status": "ok"}

    @app.post("/reserve", status_code=201)
    def reserve(body: ReserveBody, key: Key) -> dict[str, Any]:
        """Hold one unit of a resource under the idempotency key (409: none left, or tombstoned)."""
        if delay:
            time.sleep(delay)
        return participant.reserve(key, body.saga_id, body.resource, body.customer)

    @app.post("/confirm")
    def confirm(key: Key) -> dict[str, Any]:
        """Confirm the pending reservation under the key (409: missing or cancelled)."""
        return participant.confirm(key)

    @app.post("/cancel")
    def cancel(body: CancelBody, key: Key) -> dict[str, Any]:
        """Cancel the reservation under the key, once; a tombstone if it never arrived."""
        return participant.cancel(key, body.saga_id)

    @app.get("/inventory")
    def inventory() -> list[dict[str, Any]]:
        """Capacity, availability and reservations per resource."""
        return [
            {
                "service": row.service,
                "resource": row.resource,
                "name": row.name,
                "capacity": row.capacity,
                "available": row.available,
                "pending": row.pending,
                "confirmed": row.confirmed,
            }
            for row in participant.inventory()
        ]

    @app.get("/reservations")
    def reservations() -> list[dict[str, Any]]:
        """Every reservation, tombstones included."""
        return [
            {"key": key, "saga_id": saga_id, "resource": resource, "status": status}
            for key, saga_id, resource, status in participant.reservations()
        ]

    @app.post("/restock")
    def restock(body: RestockBody) -> dict[str, Any]:
        """Set every resource's capacity, keeping what is reserved (422: below it)."""
        participant.restock(body.capacity)
        return {"capacity": body.capacity}

    return app
