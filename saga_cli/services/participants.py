"""The participant interface: what the travel saga needs from a reservation service.

The saga's steps call a reservation service through this interface only, so
the same definition drives the in-process services (``travel.ReservationService``,
tables in the saga log's file) and remote ones reached over HTTP
(``http_client.HttpReservationService``, each in its own process with its own
database). Every call carries the orchestrator's idempotency key, so a repeat
after a lost reply, a retry or a crash has the effect of one call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from saga_cli.services.travel import InventoryRow


class ReservationParticipant(Protocol):
    """A flight, hotel or car service as the saga sees it.

    Implementations raise ``BusinessError`` subclasses for a refusal (no
    availability, a tombstoned key), ``TransientError`` for a failure worth
    retrying (a connection error, a 5xx) and ``StepTimeoutError`` when a
    reservation's reply did not come back in time (its effect is unknown).
    """

    name: str
    # Seconds the saga gives one reservation call (None: no timeout; the
    # in-process services answer in microseconds).
    timeout: float | None

    def reserve(self, key: str, saga_id: str, resource: str, customer: str) -> dict[str, Any]:
        """Hold one unit of `resource` as a pending reservation under `key` (once per key)."""
        ...

    async def reserve_async(
        self, key: str, saga_id: str, resource: str, customer: str
    ) -> dict[str, Any]:
        """:meth:`reserve` for a step on an event loop (it never blocks the loop)."""
        ...

    async def confirm_async(self, key: str) -> dict[str, Any]:
        """:meth:`confirm` for a step on an event loop."""
        ...

    async def cancel_async(self, key: str, saga_id: str) -> dict[str, Any]:
        """:meth:`cancel` for a step on an event loop."""
        ...

    def confirm(self, key: str) -> dict[str, Any]:
        """Turn the pending reservation under `key` into a confirmed one (once per key)."""
        ...

    def cancel(self, key: str, saga_id: str) -> dict[str, Any]:
        """Release the reservation under `key` once; leave a tombstone if it never arrived."""
        ...

    def resource_codes(self) -> list[str]:
        """Codes of the resources the service offers."""
        ...

    def inventory(self) -> list[InventoryRow]:
        """Capacity and where it went, per resource."""
        ...

    def reservations(self) -> list[tuple[str, str, str | None, str]]:
        """Every reservation as (key, saga_id, resource, status), tombstones included."""
        ...

    def restock(self, capacity: int) -> None:
        """Set every resource's capacity, keeping what is reserved."""
        ...

    def close(self) -> None:
        """Release the connections this process holds to the service."""
        ...
