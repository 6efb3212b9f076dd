"""A travel service reached over HTTP: the participant interface on httpx.

:class:`HttpReservationService` speaks to a ``saga serve`` process (see
``http_app``) and maps what the network does onto the engine's errors:

* 409 and 422 are the service's answer: business failures (compensate);
* a connection error (refused, reset, dropped mid-reply) and a 5xx are
  transient: retried with backoff and counted by the service's breaker;
* a reserve whose reply does not come within the timeout raises
  :class:`ServiceTimeoutError`, a ``StepTimeoutError``: its effect is
  unknown, so the saga compensates it, and the cancel leaves a tombstone if
  the reserve has not landed yet. A confirm or cancel that times out is
  merely transient: both are safe to repeat.

Only this module imports httpx; the CLI imports it when ``--services`` is given.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from saga_cli.errors import BusinessError, InvalidInputError, StepTimeoutError, TransientError
from saga_cli.services.travel import (
    SERVICES,
    InventoryRow,
    NoAvailabilityError,
    ReservationRefusedError,
)

KEY_HEADER = "Idempotency-Key"
# Seconds a remote reservation call may take before the step counts as timed
# out (its effect unknown). Loopback calls answer in a few milliseconds.
DEFAULT_TIMEOUT = 2.0


class ServiceUnavailableError(TransientError):
    """Raised when a remote service cannot be reached or answers 5xx (retried)."""


class ServiceTimeoutError(StepTimeoutError):
    """Raised when a remote reserve gets no reply within its timeout (effect unknown)."""


class RemoteRefusalError(BusinessError):
    """Raised when a remote service refuses a request (a 409 or 422 with no known kind)."""


_REFUSALS: dict[str, type[BusinessError]] = {
    "NoAvailabilityError": NoAvailabilityError,
    "ReservationRefusedError": ReservationRefusedError,
}


class HttpReservationService:
    """A flight, hotel or car service in another process (a ReservationParticipant).

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
        # trust_env=False: no proxy from the environment may sit between the
        # orchestrator and its participants (the demo stays on loopback).
        self._client = httpx.Client(base_url=self.url, timeout=timeout, trust_env=False)

    def _send(
        self,
        method: str,
        path: str,
        *,
        key: str | None = None,
        body: Mapping[str, Any] | None = None,
        uncertain_on_timeout: bool = False,
    ) -> Any:
        headers = {KEY_HEADER: key} if key is not None else None
        where = f"{self.name} service at {self.url}"
        try:
            response = self._client.request(method, path, headers=headers, json=body)
        except httpx.TimeoutException as exc:
            if uncertain_on_timeout and not isinstance(exc, httpx.ConnectTimeout):
                raise ServiceTimeoutError(
                    f"{where} did not answer {path} within {self.timeout:g}s"
                ) from None
            raise ServiceUnavailableError(f"{where} timed out ({path})") from None
        except httpx.TransportError as exc:
            raise ServiceUnavailableError(
                f"{where} unreachable ({type(exc).__name__}: {exc})"
            ) from None
        if response.status_code >= 500:
            raise ServiceUnavailableError(f"{where} answered {response.status_code} to {path}")
        if response.status_code in (409, 422):
            detail, kind = _problem(response)
            if path == "/confirm":
                # As in-process: the saga cannot confirm what it does not
                # hold; retried, then stuck for an operator.
                raise ServiceUnavailableError(detail)
            raise _REFUSALS.get(kind, RemoteRefusalError)(detail)
        if response.status_code >= 400:
            raise ServiceUnavailableError(f"{where} answered {response.status_code} to {path}")
        return response.json()

    def reserve(self, key: str, saga_id: str, resource: str, customer: str) -> dict[str, Any]:
        """Hold one unit of `resource` under `key` (see the module docstring for the errors)."""
        body = {"saga_id": saga_id, "resource": resource, "customer": customer}
        result: dict[str, Any] = self._send(
            "POST", "/reserve", key=key, body=body, uncertain_on_timeout=True
        )
        return result

    def confirm(self, key: str) -> dict[str, Any]:
        """Confirm the pending reservation under `key`."""
        result: dict[str, Any] = self._send("POST", "/confirm", key=key)
        return result

    def cancel(self, key: str, saga_id: str) -> dict[str, Any]:
        """Cancel the reservation under `key` once (a tombstone if it never arrived)."""
        result: dict[str, Any] = self._send("POST", "/cancel", key=key, body={"saga_id": saga_id})
        return result

    def inventory(self) -> list[InventoryRow]:
        """The service's inventory, read through its endpoint."""
        return [InventoryRow(**row) for row in self._send("GET", "/inventory")]

    def resource_codes(self) -> list[str]:
        """Codes of the resources the service offers."""
        return [row.resource for row in self.inventory()]

    def reservations(self) -> list[tuple[str, str, str | None, str]]:
        """Every reservation as (key, saga_id, resource, status), tombstones included."""
        return [
            (r["key"], r["saga_id"], r["resource"], r["status"])
            for r in self._send("GET", "/reservations")
        ]

    def restock(self, capacity: int) -> None:
        """Set every resource's capacity, keeping what is reserved."""
        try:
            self._send("POST", "/restock", body={"capacity": capacity})
        except RemoteRefusalError as exc:
            raise InvalidInputError(str(exc)) from None

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()


def _problem(response: httpx.Response) -> tuple[str, str]:
    """(detail, kind) of an error response; FastAPI's validation errors have a list detail."""
    try:
        body = response.json()
    except ValueError:
        return response.text or f"HTTP {response.status_code}", ""
    detail = body.get("detail") if isinstance(body, dict) else body
    if not isinstance(detail, str):
        detail = f"invalid request: {detail}"
    kind = body.get("error", "") if isinstance(body, dict) else ""
    return detail, str(kind)


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
        try:
            lines = Path(spec).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidInputError(f"cannot read the services file {spec}: {exc}") from None
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
