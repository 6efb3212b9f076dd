"""Test helper process: resume one execution while its hotel service hangs.

Usage: python hold_lease.py DB EXECUTION_ID RELEASE_FILE

The process claims the execution's lease (as `saga resume` does), then its
hotel reservation blocks until RELEASE_FILE exists, so a test can try a second
`saga resume` while this one provably holds the lease. Prints the final status.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

from saga_cli.booking import TravelBooking
from saga_cli.store import open_store


def main(db: str, execution_id: str, release: Path) -> None:
    store = open_store(db)
    booking = TravelBooking(store)
    hotel = booking.services.hotel
    reserve = hotel.reserve_async  # the saga's steps are async: they await this

    async def reserve_when_released(*args: Any, **kwargs: Any) -> Any:
        deadline = time.monotonic() + 120
        while not release.exists():
            if time.monotonic() > deadline:
                raise SystemExit("the test never released the hotel service")
            await asyncio.sleep(0.01)
        return await reserve(*args, **kwargs)

    setattr(hotel, "reserve_async", reserve_when_released)  # noqa: B010 (mypy: no method assignment)
    try:
        outcome = booking.resume(execution_id)
    finally:
        booking.close()
        store.close()
    print(outcome.status.value, flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], Path(sys.argv[3]))
