"""The travel booking, the saga pattern's classic example, written against the saga_cli library.

Five customers try to book the same trip. Only two compact cars exist, so
the first two bookings complete and the other three fail at the car step:
their hotel and flight reservations are compensated in reverse order and
the capacity they held is released.

Run:  python examples/travel_booking.py [--db PATH]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from saga_cli import SagaStatus, open_store
from saga_cli.booking import TravelBooking
from saga_cli.services.travel import BookingRequest


def main(db: str) -> list[SagaStatus]:
    """Make the five booking attempts on the log at `db`; return their statuses."""
    store = open_store(db)
    travel = TravelBooking(store)
    statuses = []
    try:
        for number in range(1, 6):
            request = BookingRequest(
                flight="FL100", hotel="GRAND", car="COMPACT", customer=f"customer-{number}"
            )
            outcome = travel.book(request)
            statuses.append(outcome.status)
            mark = "✓" if outcome.status is SagaStatus.COMPLETED else "✗"
            note = f" ({outcome.error})" if outcome.error else ""
            print(f"{mark} booking {number}: {outcome.status.value}{note}")
        print()
        for row in travel.inventory():
            if row.resource in ("FL100", "GRAND", "COMPACT"):
                print(
                    f"{row.service:<7}{row.resource:<9} capacity {row.capacity}, "
                    f"confirmed {row.confirmed}, available {row.available}"
                )
        report = travel.check()
        print(f"\nsaga check: {'consistent' if report.consistent else report.violations}")
    finally:
        travel.close()
        store.close()
    return statuses


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Five customers book the last two compact cars.")
    parser.add_argument("--db", help="saga log to use (default: a new temporary file)")
    args = parser.parse_args()
    if args.db:
        main(args.db)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(str(Path(tmp) / "travel.db"))
