"""The travel services as real HTTP microservices: `saga serve` processes on loopback."""

from __future__ import annotations

import json
import socket
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import httpx
import pytest
from conftest import SagaCli
from service_processes import Services, free_port, running_services
from support import BOOKING, dump, hold_sqlite_lock, newest_execution_id, wait_for


@pytest.fixture
def services(tmp_path: Path, migrated_template: Path) -> Iterator[Services]:
    with running_services(tmp_path / "services", migrated_template) as started:
        yield started


def log_rows(db: Path, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    with closing(sqlite3.connect(db, timeout=30)) as connection:
        return list(connection.execute(sql, params))


def test_a_booking_over_http_completes_with_reservations_in_each_services_own_database(
    saga: SagaCli, services: Services
) -> None:
    before = {name: services[name].capacity() for name in ("flight", "hotel", "car")}

    result = saga("book", *BOOKING, "--services", services.spec, "--json")

    assert result.code == 0, result
    execution_id = result.json()["id"]
    for name, code in (("flight", "FL100"), ("hotel", "GRAND"), ("car", "ECONOMY")):
        key = f"{execution_id}:{name}"
        assert services[name].reservations(execution_id) == [(key, code, "confirmed")]
        total, available = before[name][code]
        assert services[name].capacity()[code] == (total, available - 1)
    # the saga log's own copies of the services were never touched
    assert log_rows(saga.db, "SELECT COUNT(*) FROM hotel_reservation") == [(0,)]
    checked = saga("check", "--services", services.spec, "--json")
    assert checked.code == 0, checked
    assert checked.json() == {"consistent": True, "violations": []}
    inventory = saga("inventory", "--services", services.spec, "--json").json()
    grand = next(r for r in inventory if r["service"] == "hotel" and r["resource"] == "GRAND")
    assert grand["confirmed"] == 1
    # without --services, check audits the booking against the services it recorded
    assert saga("check", "--json").json() == {"consistent": True, "violations": []}


def test_the_idempotency_key_header_repeats_the_first_result_and_tombstones_refuse(
    services: Services,
) -> None:
    hotel = services["hotel"].url
    body = {"saga_id": "s1", "resource": "GRAND", "customer": "ada"}
    with httpx.Client(base_url=hotel, trust_env=False) as client:
        first = client.post("/reserve", json=body, headers={"Idempotency-Key": "k1"})
        again = client.post("/reserve", json=body, headers={"Idempotency-Key": "k1"})
        tomb = client.post("/cancel", json={"saga_id": "s2"}, headers={"Idempotency-Key": "k2"})
        late = client.post("/reserve", json=body, headers={"Idempotency-Key": "k2"})
        missing = client.post("/reserve", json=body)
        schema = client.get("/openapi.json").json()

    assert first.status_code == again.status_code == 201
    assert first.json() == again.json() == {"reservation": "k1", "resource": "GRAND"}
    assert tomb.json() == {"canceled": "k2", "tombstone": True}
    assert late.status_code == 409
    assert late.json()["error"] == "ReservationRefusedError"
    assert missing.status_code == 422
    assert {"/reserve", "/confirm", "/cancel", "/inventory"} <= set(schema["paths"])
    assert services["hotel"].rows("SELECT key, status FROM hotel_reservation ORDER BY key") == [
        ("k1", "pending"),
        ("k2", "canceled"),
    ]


def test_a_reply_lost_to_the_step_timeout_is_compensated_and_the_late_reserve_refused(
    saga: SagaCli, tmp_path: Path, migrated_template: Path
) -> None:
    with running_services(tmp_path / "slow", migrated_template, hotel=1.5) as services:
        hotel = services["hotel"]
        before = hotel.capacity()

        result = saga(
            "book", *BOOKING, "--services", services.spec, "--service-timeout", "0.4", "--json"
        )

        assert result.code == 3, result
        execution_id = result.json()["id"]
        failed = log_rows(
            saga.db,
            "SELECT detail FROM saga_event WHERE saga_id=? AND step='hotel' AND type='step_failed'",
            (execution_id,),
        )
        # one attempt, its effect unknown: the runner's timeout or httpx's fired
        (detail,) = [json.loads(str(d)) for (d,) in failed]
        assert detail["kind"] in ("StepTimeoutError", "ServiceTimeoutError"), detail
        assert detail["uncertain"] is True
        # the cancel overtook the reserve: a tombstone, then the late reserve is refused
        late = f"POST /reserve key={execution_id}:hotel refused (409)"
        wait_for(lambda: late in hotel.log.read_text(), what="the late reserve")
        assert hotel.reservations(execution_id) == [(f"{execution_id}:hotel", None, "canceled")]
        assert hotel.capacity() == before
        assert services["car"].reservations(execution_id) == []
        flight = services["flight"].reservations(execution_id)
        assert [status for _key, _resource, status in flight] == ["canceled"]
        checked = saga("check", "--services", services.spec, "--json")
        assert checked.json() == {"consistent": True, "violations": []}, checked


@pytest.mark.slow
def test_a_killed_hotel_service_makes_bookings_retry_then_compensate_and_check_holds(
    saga: SagaCli, services: Services
) -> None:
    assert saga("inventory", "--restock", "1000", "--services", services.spec).code == 0
    hotel = services["hotel"]
    simulation = saga.popen("simulate", "--count", "40", "--services", services.spec, "--json")
    try:
        count = "SELECT COUNT(*) FROM saga_execution"
        wait_for(lambda: int(str(log_rows(saga.db, count)[0][0])) >= 5, what="five bookings")
        hotel.kill()
        failures = "SELECT COUNT(*) FROM saga_event WHERE step='hotel' AND type LIKE '%failed'"
        wait_for(lambda: int(str(log_rows(saga.db, failures)[0][0])) >= 5, what="failures")
        hotel.start()  # the same port and database
        out, err = simulation.communicate(timeout=120)
    finally:
        if simulation.poll() is None:
            simulation.kill()
    assert simulation.returncode == 0, err
    report = json.loads(out)
    assert report["compensated"] >= 1, report
    # retried while the hotel refused connections, then failed fast once its breaker opened
    kinds = {
        json.loads(str(d))["kind"]
        for (d,) in log_rows(saga.db, "SELECT detail FROM saga_event WHERE type LIKE '%failed'")
    }
    assert {"ServiceUnavailableError", "CircuitOpenError"} <= kinds, kinds
    retried = "SELECT COUNT(*) FROM saga_event WHERE type='step_started' AND attempt > 1"
    assert int(str(log_rows(saga.db, retried)[0][0])) >= 1
    # a booking past its pivot (confirm) when the hotel died, or whose cancel at
    # the hotel gave up, waits, stuck, for the service to come back; the operator
    # who knows it is back closes its breaker (the log keeps it open for 5 s)
    assert saga("services", "--reset", "hotel", "--services", services.spec).code == 0
    assert saga("resume", "--all", "--services", services.spec).code == 0
    for (stuck,) in log_rows(saga.db, "SELECT id FROM saga_execution WHERE status='stuck'"):
        resumed = saga("resume", str(stuck), "--services", services.spec)
        assert resumed.code in (0, 3), resumed
    statuses = {s for (s,) in log_rows(saga.db, "SELECT DISTINCT status FROM saga_execution")}
    assert statuses <= {"completed", "compensated"}, statuses
    checked = saga("check", "--services", services.spec, "--json")
    assert checked.json() == {"consistent": True, "violations": []}, checked


def consecutive_free_ports(count: int) -> int:
    """The first of `count` consecutive free loopback ports."""
    while True:
        first = free_port()
        try:
            for offset in range(1, count):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", first + offset))
        except OSError:
            continue
        return first


def test_serve_all_starts_three_services_and_stops_them_on_sigterm(
    saga: SagaCli, tmp_path: Path
) -> None:
    first = consecutive_free_ports(3)
    pattern = str(tmp_path / "{service}.db")
    process = saga.popen("serve", "all", "--port", str(first), "--db", pattern)
    try:

        def all_up() -> bool:
            try:
                names = [
                    httpx.get(f"http://127.0.0.1:{first + i}/health", trust_env=False).json()
                    for i in range(3)
                ]
            except httpx.TransportError:
                return False
            return [n["service"] for n in names] == ["flight", "hotel", "car"]

        wait_for(all_up, what="three services")
        process.terminate()
        _out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    assert "saga simulate --services http://127.0.0.1:" in err
    assert {p.name for p in tmp_path.glob("*.db")} >= {"flight.db", "hotel.db", "car.db"}
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{first + 1}/health", trust_env=False)


def test_bad_services_and_serve_arguments_are_one_line_errors(saga: SagaCli) -> None:
    for args, fragment in (
        (("book", *BOOKING, "--services", "http://127.0.0.1:1"), "3 URLs"),
        (("book", *BOOKING, "--services", "ftp://a,ftp://b,ftp://c"), "not http://"),
        (("book", *BOOKING, "--services", "plane=http://127.0.0.1:1"), "NAME=URL"),
        (("serve", "boat"), "unknown service"),
        (("serve", "all", "--db", "one.db"), "{service}"),
    ):
        result = saga(*args)
        assert result.code == 2, (args, result)
        assert result.stderr.startswith("Error: ") and fragment in result.stderr, result.stderr
        assert "Traceback" not in result.stderr


def test_an_unreachable_service_is_a_runtime_error_not_a_traceback(saga: SagaCli) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    result = saga("book", *BOOKING, "--services", f"{dead},{dead},{dead}")
    assert result.code == 1, result
    assert result.stderr.startswith("Error: flight service at ") and "unreachable" in result.stderr


def test_a_remote_booking_resumes_against_the_services_it_recorded(
    saga: SagaCli, services: Services
) -> None:
    crashed = saga("book", *BOOKING, "--services", services.spec, "--crash-at", "hotel:after")
    assert crashed.code == -9, crashed
    execution_id = newest_execution_id(saga.db)
    payload = json.loads(str(log_rows(saga.db, "SELECT payload FROM saga_execution")[0][0]))
    assert payload["services"] == {name: services[name].url for name in ("flight", "hotel", "car")}

    # no --services, no SAGA_SERVICES: the log says where its confirms go
    resumed = saga("resume", execution_id, "--json")

    assert resumed.code == 0, resumed
    assert services["hotel"].reservations(execution_id) == [
        (f"{execution_id}:hotel", "GRAND", "confirmed")
    ]
    assert log_rows(saga.db, "SELECT COUNT(*) FROM hotel_reservation") == [(0,)]
    assert saga("check", "--json").json() == {"consistent": True, "violations": []}


def test_one_worker_runs_bookings_submitted_with_different_services(
    saga: SagaCli, services: Services
) -> None:
    remote = saga("book", *BOOKING, "--services", services.spec, "--submit", "--json")
    hotel_only = saga(
        "book", *BOOKING, "--services", f"hotel={services['hotel'].url}", "--submit", "--json"
    )
    local = saga("book", *BOOKING, "--submit", "--json")
    ids = [result.json()["id"] for result in (remote, hotel_only, local)]
    stored = {
        str(row[0]): json.loads(str(row[1]))
        for row in log_rows(saga.db, "SELECT id, payload FROM saga_execution")
    }
    assert stored[ids[0]]["services"] == {n: services[n].url for n in ("flight", "hotel", "car")}
    assert stored[ids[1]]["services"] == {"hotel": services["hotel"].url}
    assert "services" not in stored[ids[2]]

    worked = saga("worker", "--exit-when-idle", "--json", SAGA_SERVICES="")

    assert worked.code == 0, worked
    assert worked.json()["completed"] == 3, worked
    assert services["car"].reservations(ids[0]) == [(f"{ids[0]}:car", "ECONOMY", "confirmed")]
    assert services["hotel"].reservations(ids[1]) == [(f"{ids[1]}:hotel", "GRAND", "confirmed")]
    assert services["flight"].reservations(ids[1]) == []  # booked in-process, as recorded
    in_log = log_rows(saga.db, "SELECT saga_id, status FROM hotel_reservation")
    assert in_log == [(ids[2], "confirmed")]
    assert saga("check", "--json").json() == {"consistent": True, "violations": []}
    assert saga("check", "--services", services.spec).stdout.startswith("consistent: 3 executions")


def test_service_credentials_are_used_but_never_stored_or_shown(
    saga: SagaCli, services: Services
) -> None:
    secret = "s3cr3t-pw"
    urls = {n: services[n].url.replace("://", f"://ops:{secret}@") for n in services.by_name}
    spec = ",".join(urls[n] for n in ("flight", "hotel", "car"))
    crashed = saga("book", *BOOKING, "--services", spec, "--crash-at", "car:after")
    assert crashed.code == -9, crashed
    execution_id = newest_execution_id(saga.db)

    resumed = saga("resume", execution_id, "--services", spec)
    shown = saga("show", execution_id, "--json")

    assert resumed.code == 0, resumed
    assert secret not in resumed.stdout + resumed.stderr
    assert secret not in shown.stdout
    assert shown.json()["payload"]["services"]["car"] == services["car"].url
    assert not any(secret in line for line in dump(saga.db))


def test_a_service_answers_503_while_its_database_is_locked_and_carries_on_after(
    services: Services,
) -> None:
    hotel = services["hotel"]
    body = {"saga_id": "s1", "resource": "GRAND", "customer": "ada"}
    holder = hold_sqlite_lock(hotel.db, 600)  # past the service's 5 s busy timeout
    try:
        with httpx.Client(base_url=hotel.url, trust_env=False, timeout=60) as client:
            locked = client.post("/reserve", json=body, headers={"Idempotency-Key": "k1"})
    finally:
        holder.kill()
        holder.communicate()
    with httpx.Client(base_url=hotel.url, trust_env=False, timeout=60) as client:
        after = client.post("/reserve", json=body, headers={"Idempotency-Key": "k1"})

    assert locked.status_code == 503, locked.text  # worth retrying: the engine does
    assert after.status_code == 201, after.text
    assert hotel.process is not None and hotel.process.poll() is None
    assert "Traceback" not in hotel.log.read_text()
