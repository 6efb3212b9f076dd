"""The `saga` command on a PostgreSQL log: book, list, show, resume, compensate, check, stats.

Each test gets a database of its own (cloned from a migrated template); the
assertions read the tables back through psycopg, not through saga.
"""

from __future__ import annotations

import re
from typing import Any

import psycopg
import pytest
from conftest import CliResult
from support import BOOKING, assert_one_line_error, run_saga

from saga_cli.store.postgres import libpq_url

SIGKILL = -9


def rows(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(libpq_url(url)) as db:
        return db.execute(sql, params).fetchall()


def saga(url: str, *args: str) -> CliResult:
    return run_saga(url, *args)


def newest(url: str) -> str:
    return str(rows(url, "SELECT id FROM saga_execution ORDER BY created_at DESC LIMIT 1")[0][0])


def test_book_list_show_check_and_stats(pg_url: str) -> None:
    booked = saga(pg_url, "book", *BOOKING, "--json")
    assert booked.code == 0, booked
    done = booked.json()["id"]
    failed = saga(pg_url, "book", *BOOKING, "--fail", "car", "--json")
    assert failed.code == 3, failed
    undone = failed.json()["id"]

    assert rows(pg_url, "SELECT id, status FROM saga_execution ORDER BY created_at") == [
        (done, "completed"),
        (undone, "compensated"),
    ]
    # the declined car was never reserved; the hotel and the flight were undone
    reservations = (
        "SELECT 'flight', status FROM flight_reservation WHERE saga_id=%s"
        " UNION ALL SELECT 'hotel', status FROM hotel_reservation WHERE saga_id=%s"
        " UNION ALL SELECT 'car', status FROM car_reservation WHERE saga_id=%s ORDER BY 1"
    )
    assert rows(pg_url, reservations, (undone,) * 3) == [
        ("flight", "canceled"),
        ("hotel", "canceled"),
    ]
    assert rows(pg_url, reservations, (done,) * 3) == [
        ("car", "confirmed"),
        ("flight", "confirmed"),
        ("hotel", "confirmed"),
    ]
    assert rows(pg_url, "SELECT COUNT(*) FROM payment_charge WHERE saga_id=%s", (done,)) == [(1,)]

    listed = saga(pg_url, "list", "--json")
    assert listed.code == 0, listed
    assert [(r["id"], r["status"]) for r in listed.json()] == [
        (undone, "compensated"),
        (done, "completed"),
    ]
    shown = saga(pg_url, "show", done[:8], "--json")
    assert shown.code == 0, shown
    assert [e["type"] for e in shown.json()["events"]][-1] == "saga_completed"
    compensations = [
        e["step"]
        for e in saga(pg_url, "show", undone, "--json").json()["events"]
        if e["type"] == "compensation_succeeded"
    ]
    assert compensations == ["hotel", "flight"]

    check = saga(pg_url, "check", "--json")
    assert check.code == 0, check
    assert check.json() == {"consistent": True, "violations": []}
    inventory = saga(pg_url, "inventory", "--json")
    assert inventory.code == 0, inventory
    stats = saga(pg_url, "stats", "--json")
    assert stats.code == 0, stats
    assert "completed" in stats.stdout and "compensated" in stats.stdout
    status = saga(pg_url, "db", "status")
    assert status.code == 0, status
    assert "pending: -" in status.stdout


def test_check_finds_a_tampered_reservation(pg_url: str) -> None:
    done = saga(pg_url, "book", *BOOKING, "--json").json()["id"]
    with psycopg.connect(libpq_url(pg_url)) as db:
        db.execute("UPDATE car_reservation SET status='pending' WHERE saga_id=%s", (done,))
    check = saga(pg_url, "check", "--json")
    assert check.code == 1, check
    assert check.json()["violations"] == [
        f"completed execution {done} has car reservation pending, expected confirmed"
    ]


@pytest.mark.slow
@pytest.mark.parametrize("point", ["hotel:after", "payment:before", "compensate-flight:before"])
def test_a_booking_killed_mid_saga_resumes_to_a_consistent_end(pg_url: str, point: str) -> None:
    extra = ("--fail", "hotel") if point.startswith("compensate") else ()
    crashed = saga(pg_url, "book", *BOOKING, "--crash-at", point, *extra)
    assert crashed.code == SIGKILL, crashed
    execution_id = newest(pg_url)
    (status,) = rows(pg_url, "SELECT status FROM saga_execution WHERE id=%s", (execution_id,))[0]
    assert status in ("running", "compensating")

    resumed = saga(pg_url, "resume", "--all", "--json")
    assert resumed.code == 0, resumed
    assert resumed.json()["resumed"] == 1

    final = rows(pg_url, "SELECT status FROM saga_execution WHERE id=%s", (execution_id,))[0][0]
    assert final == ("compensated" if extra else "completed")
    # every service acted once: one reservation row per service, one charge at most
    for service in ("flight", "hotel", "car"):
        held = rows(
            pg_url, f"SELECT status FROM {service}_reservation WHERE saga_id=%s", (execution_id,)
        )
        assert len(held) <= 1
        assert all(s == ("canceled" if extra else "confirmed") for (s,) in held)
    charges = rows(pg_url, "SELECT COUNT(*) FROM payment_charge WHERE saga_id=%s", (execution_id,))
    assert charges == [(0 if extra else 1,)]
    assert saga(pg_url, "check").code == 0
    again = saga(pg_url, "resume", "--all", "--json")
    assert again.json()["resumed"] == 0


def test_compensate_an_execution_interrupted_before_its_pivot(pg_url: str) -> None:
    crashed = saga(pg_url, "book", *BOOKING, "--crash-at", "car:after")
    assert crashed.code == SIGKILL, crashed
    execution_id = newest(pg_url)
    result = saga(pg_url, "compensate", execution_id[:10], "--json")
    assert result.code == 3, result  # exit 3: the saga ended compensated
    assert result.json()["status"] == "compensated"
    held = rows(
        pg_url,
        "SELECT status FROM flight_reservation WHERE saga_id=%s"
        " UNION ALL SELECT status FROM hotel_reservation WHERE saga_id=%s"
        " UNION ALL SELECT status FROM car_reservation WHERE saga_id=%s",
        (execution_id,) * 3,
    )
    assert held == [("canceled",)] * 3
    assert saga(pg_url, "check").code == 0


def test_an_unreachable_server_is_one_error_line_naming_the_url_without_password() -> None:
    result = saga("postgresql+psycopg://saga:hunter2@127.0.0.1:1/saga", "list")
    assert_one_line_error(result, 1, "saga:***@127.0.0.1:1/saga")
    assert "hunter2" not in result.stderr


def test_a_missing_database_is_one_error_line(pg_url: str) -> None:
    missing = re.sub(r"/[^/]+$", "/saga_no_such_database", pg_url)
    assert_one_line_error(saga(missing, "list"), 1, "saga_no_such_database")
