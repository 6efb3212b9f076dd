"""What people read: an 80-column `saga services`, and a resumed execution's closing line."""

from __future__ import annotations

from conftest import SagaCli
from support import newest_execution_id


def test_services_fits_80_columns_with_each_last_error_on_one_line(migrated: SagaCli) -> None:
    outage = migrated("book", "--flight", "FL100", "--hotel", "GRAND", "--outage", "hotel")
    assert outage.code == 4, outage

    shown = migrated("services", COLUMNS="80")

    assert shown.code == 0, shown
    assert max(len(line) for line in shown.stdout.splitlines()) <= 80, shown.stdout
    assert "hotel: last error: hotel service unreachable (--outage)" in shown.stdout.splitlines()


def test_a_stuck_execution_resumed_to_rest_ends_with_its_cause_not_the_old_error(
    migrated: SagaCli,
) -> None:
    stuck = migrated(
        "book", "--flight", "FL100", "--hotel", "GRAND", "--car", "SUV", "--fail", "car",
        "--fail-compensation", "hotel:always",
    )  # fmt: skip
    assert stuck.code == 4, stuck
    assert migrated("services", "--reset", "hotel").code == 0

    resumed = migrated("resume", newest_execution_id(migrated.db))

    assert resumed.code == 3, resumed
    closing = resumed.stdout.splitlines()[-1]
    assert closing.endswith("compensated  (car declined the booking (--fail))"), closing
    assert "gave up" not in resumed.stdout
