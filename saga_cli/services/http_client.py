"""A travel service reached over HTTP: the participant interface on saga_cli.http.

:class:`HttpReservationService` speaks to a ``saga serve`` process (see
``http_app``) through the helper any saga's steps use, and maps what the
network does onto the engine's errors:

* 409 and 422 are the service's answer: business failures (compensate);
* a connection error (refused, reset, dropped mid-reply) and a 5xx are
  transient: retried with backoff and counted by the service's breaker;
* a reserve whose reply does not come within the timeout raises
  :class:`ServiceTimeoutError`, a ``StepTimeoutError``: its effect is
  unknown, so the saga compensates it, and the cancel leaves a tombstone if
  the reserve has not landed yet. A confirm or cancel that times out is
  merely transient: both are safe to repeat.

The CLI imports this module (and so httpx) only when ``--services`` is given.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

from saga_cli.errors import BusinessError, InvalidInputError
from saga_cli.http import (
    HttpService,
    RemoteRefusalError,
    ServiceTimeoutError,
    ServiceUnavailableError,
)
from saga_cli.services.travel import (
    SERVICES,
    InventoryRow,
    NoAvailabilityError,
    ReservationRefusedError,
)

# Seconds a remote reservation call may take before the step counts as timed
# out (its effect unknown). Loopback calls answer in a few milliseconds.
DEFAULT_TIMEOUT = 2.0

_REFUSALS: dict[str, type[BusinessError]] = {
    "NoAvailabilityError": NoAvailabilityError,
    "ReservationRefusedError": ReservationRefusedError,
}


class HttpReservationService:
    """A flight, hotel or car service in another process (a ReservationParticipant).

    Built on :class:`saga_cli.http.HttpService`, the helper any saga's steps
    use: pooled connections, the key in ``Idempotency-Key``, the status
    mapping. What it adds is the demo's: the service's refusal kinds become
    the in-process services' exceptions, and a confirm that is refused or
    times out is transient (the saga, past its pivot, retries it).

    Args:
        name: flight, hotel or car.
        url: the service's base URL, e.g. ``http://127.0.0.1:8002``.
        timeout: seconds for each call (the reservation step's timeout too).
    """

    def __init__(self, name: str, url: str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        if name not in SERVICES:
            raise InvalidInputError(f"unknown service {name!r}; known: {', '.join(SERVICES)}")
        if not timeout > 0:
            raise InvalidInputError("a service timeout must be a positive number of seconds")
        self.name = name
        self.url = url.rstrip("/")
        self.timeout: float | None = timeout
        self._http = HttpService(f"{name} service", self.url, timeout=timeout)

    def reserve(self, key: str, saga_id: str, resource: str, customer: str) -> dict[str, Any]:
        """Hold one unit of `resource` under `key` (see the module docstring for the errors)."""
        body = {"saga_id": saga_id, "resource": resource, "customer": customer}
        with _refusals():
            result: dict[str, Any] = self._http.post(key, "/reserve", json=body)
        return result

    async def reserve_async(
        self, key: str, saga_id: str, resource: str, customer: str
    ) -> dict[str, Any]:
        """:meth:`reserve` without a thread."""
        body = {"saga_id": saga_id, "resource": resource, "customer": customer}
        with _refusals():
            result: dict[str, Any] = await self._http.post_async(key, "/reserve", json=body)
        return result

    def confirm(self, key: str) -> dict[str, Any]:
        """Confirm the pending reservation under `key`."""
        with _confirming():
            result: dict[str, Any] = self._http.post(key, "/confirm")
        return result

    async def confirm_async(self, key: str) -> dict[str, Any]:
        """:meth:`confirm` without a thread."""
        with _confirming():
            result: dict[str, Any] = await self._http.post_async(key, "/confirm")
        return result

    def cancel(self, key: str, saga_id: str) -> dict[str, Any]:
        """Cancel the reservation under `key` once (a tombstone if it never arrived)."""
        with _refusals():
            result: dict[str, Any] = self._http.post(key, "/cancel", json={"saga_id": saga_id})
        return result

    async def cancel_async(self, key: str, saga_id: str) -> dict[str, Any]:
        """:meth:`cancel` without a thread."""
        with _refusals():
            result: dict[str, Any] = await self._http.post_async(
                key, "/cancel", json={"saga_id": saga_id}
            )
        return result

    def inventory(self) -> list[InventoryRow]:
        """The service's inventory, read through its endpoint."""
        return [InventoryRow(**row) for row in self._http.get("/inventory")]

    def resource_codes(self) -> list[str]:
        """Codes of the resources the service offers."""
        return [row.resource for row in self.inventory()]

    def reservations(self) -> list[tuple[str, str, str | None, str]]:
        """Every reservation as (key, saga_id, resource, status), tombstones included."""
        return [
            (r["key"], r["saga_id"], r["resource"], r["status"])
            for r in self._http.get("/reservations")
        ]

    def restock(self, capacity: int) -> None:
        """Set every resource's capacity, keeping what is reserved."""
        try:
            self._http.post(None, "/restock", json={"capacity": capacity})
        except RemoteRefusalError as exc:
            raise InvalidInputError(str(exc)) from None

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()


@contextlib.contextmanager
def _refusals() -> Iterator[None]:
    """A service's refusal as the in-process services raise it (same kinds, same message)."""
    try:
        yield
    except RemoteRefusalError as exc:
        detail = exc.body.get("detail") if isinstance(exc.body, dict) else None
        kind = _REFUSALS.get(exc.kind)
        if kind is None:
            raise
        raise kind(detail if isinstance(detail, str) else str(exc)) from None


@contextlib.contextmanager
def _confirming() -> Iterator[None]:
    """A confirm the saga cannot complete now is retried: refused, or with no reply in time."""
    try:
        yield
    except RemoteRefusalError as exc:
        raise ServiceUnavailableError(str(exc)) from None
    except ServiceTimeoutError as exc:
        raise ServiceUnavailableError(str(exc)) from None


def parse_services(text: str) -> dict[str, str]:
    """The service URLs named by ``--services``, by service name.

    Accepts three comma-separated URLs (flight, hotel, car, in that order),
    ``NAME=URL`` pairs (services not named stay in-process), or the path of a
    file holding ``NAME=URL`` lines (``#`` starts a comment).

    Raises:
        InvalidInputError: an unknown service, a malformed URL or an unreadable file.
    """
    spec = text.strip()
    if spec and "://" not in spec and "=" not in spec:
        from saga_cli.limits import MAX_SETTINGS_BYTES, read_capped

        lines = read_capped(spec, MAX_SETTINGS_BYTES, f"the services file {spec}").splitlines()
        spec = ",".join(line.split("#", 1)[0].strip() for line in lines)
    parts = [part.strip() for part in spec.split(",") if part.strip()]
    if not parts:
        raise InvalidInputError("--services names no service")
    urls: dict[str, str] = {}
    if all("=" not in part for part in parts):
        if len(parts) != len(SERVICES):
            raise InvalidInputError(
                f"--services takes {len(SERVICES)} URLs ({', '.join(SERVICES)}) or NAME=URL "
                f"pairs; got {len(parts)} URL(s)"
            )
        urls = dict(zip(SERVICES, parts, strict=True))
    else:
        for part in parts:
            name, sep, url = part.partition("=")
            name = name.strip()
            if not sep or name not in SERVICES:
                raise InvalidInputError(
                    f"--services: {part!r} is not NAME=URL with NAME one of {', '.join(SERVICES)}"
                )
            if name in urls:
                raise InvalidInputError(f"--services names {name} twice")
            urls[name] = url.strip()
    for name, url in urls.items():
        parts_of = urlsplit(url)
        if parts_of.scheme not in ("http", "https") or not parts_of.hostname:
            raise InvalidInputError(f"--services: {name} URL {url!r} is not http://HOST:PORT")
        try:
            parts_of.port  # noqa: B018 - raises on a malformed port
        except ValueError:
            raise InvalidInputError(f"--services: {name} URL {url!r} has a bad port") from None
    return urls


def remote_services(
    urls: Mapping[str, str], *, timeout: float = DEFAULT_TIMEOUT
) -> dict[str, HttpReservationService]:
    """A client per named service."""
    return {name: HttpReservationService(name, url, timeout=timeout) for name, url in urls.items()}
