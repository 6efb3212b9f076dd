"""saga_cli.http against a real `saga serve` process: replies, refusals, failures, timeouts."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from service_processes import ServiceProcess, free_port

from saga_cli import BusinessError, Orchestrator, Saga, SagaStatus, StepContext, StepTimeoutError
from saga_cli.errors import TransientError
from saga_cli.http import (
    HttpService,
    RemoteRefusalError,
    ServiceTimeoutError,
    ServiceUnavailableError,
)


def _hotel(tmp_path: Path, template: Path, delay: float = 0.0) -> ServiceProcess:
    db = tmp_path / f"hotel-{delay}.db"
    shutil.copyfile(template, db)
    service = ServiceProcess("hotel", free_port(), db, tmp_path / f"hotel-{delay}.log", delay)
    service.start()
    return service


@pytest.fixture
def hotel(tmp_path: Path, migrated_template: Path) -> Iterator[ServiceProcess]:
    service = _hotel(tmp_path, migrated_template)
    yield service
    service.stop()


def _reserve(key: str) -> dict[str, str]:
    return {"saga_id": key.split(":")[0], "resource": "GRAND", "customer": "ada"}


def test_a_repeated_key_gets_the_first_result_and_takes_capacity_once(
    hotel: ServiceProcess,
) -> None:
    client = HttpService("hotel", hotel.url, timeout=5)
    before = hotel.capacity()["GRAND"]
    first = client.post("s1:hotel", "/reserve", json=_reserve("s1:hotel"))
    again = client.post("s1:hotel", "/reserve", json=_reserve("s1:hotel"))
    later = asyncio.run(client.post_async("s1:hotel", "/reserve", json=_reserve("s1:hotel")))
    assert first == again == later
    assert hotel.capacity()["GRAND"] == (before[0], before[1] - 1)
    assert hotel.reservations("s1") == [("s1:hotel", "GRAND", "pending")]
    client.close()


def test_a_409_is_a_business_refusal_with_the_services_kind(hotel: ServiceProcess) -> None:
    client = HttpService("hotel", hotel.url, timeout=5)
    client.post("s2:hotel", "/cancel", json={"saga_id": "s2"})  # a tombstone first
    with pytest.raises(RemoteRefusalError) as refused:
        client.post("s2:hotel", "/reserve", json=_reserve("s2:hotel"))
    assert isinstance(refused.value, BusinessError)
    assert (refused.value.status, refused.value.kind) == (409, "ReservationRefusedError")

    async def refused_async() -> RemoteRefusalError:
        with pytest.raises(RemoteRefusalError) as caught:
            await client.post_async("s2:hotel", "/reserve", json=_reserve("s2:hotel"))
        return caught.value

    assert asyncio.run(refused_async()).status == 409
    client.close()


def test_a_5xx_is_transient(hotel: ServiceProcess) -> None:
    client = HttpService("hotel", hotel.url, timeout=5)
    hotel.rows("DROP TABLE hotel_reservation")  # the service's database fails: 503
    with pytest.raises(ServiceUnavailableError, match="503") as failed:
        client.post("s3:hotel", "/reserve", json=_reserve("s3:hotel"))
    assert isinstance(failed.value, TransientError)
    assert not isinstance(failed.value, StepTimeoutError)
    client.close()


def test_no_reply_in_time_is_a_timeout_with_the_effect_unknown(
    tmp_path: Path, migrated_template: Path
) -> None:
    slow = _hotel(tmp_path, migrated_template, delay=1.0)
    try:
        client = HttpService("hotel", slow.url, timeout=0.3)
        with pytest.raises(ServiceTimeoutError) as timed_out:
            client.post("s4:hotel", "/reserve", json=_reserve("s4:hotel"))
        assert isinstance(timed_out.value, StepTimeoutError)

        async def late() -> None:
            with pytest.raises(ServiceTimeoutError):
                await client.post_async("s5:hotel", "/reserve", json=_reserve("s5:hotel"))

        asyncio.run(late())
        client.close()
    finally:
        slow.stop()


def test_a_service_that_is_down_is_unavailable_not_timed_out() -> None:
    client = HttpService("hotel", f"http://127.0.0.1:{free_port()}", timeout=2)
    with pytest.raises(ServiceUnavailableError, match="unreachable"):
        client.get("/health")
    client.close()


def test_async_steps_book_through_the_helper_and_compensate_a_refusal(
    hotel: ServiceProcess, tmp_path: Path
) -> None:
    client = HttpService("hotel", hotel.url, timeout=5, max_concurrency=4)
    client.post(None, "/restock", json={"capacity": 100})  # the demo's catalogue is scarce
    trip: Saga[Any] = Saga("remote-trip")

    @trip.step()
    async def room(ctx: StepContext) -> Any:
        return await client.post_async(ctx, "/reserve", json=_reserve(ctx.key))

    @room.compensation
    async def release(ctx: StepContext) -> Any:
        return await client.post_async(
            ctx.action_key, "/cancel", json={"saga_id": ctx.execution_id}
        )

    @trip.step(kind="pivot")
    def pay(ctx: StepContext) -> None:
        if ctx.payload.get("decline"):
            raise BusinessError("card declined")

    payloads = [{"decline": n % 4 == 0} for n in range(16)]
    with Orchestrator(str(tmp_path / "trips.db"), [trip]) as orchestrator:
        outcomes = orchestrator.run_many(trip, payloads, concurrency=8)
    statuses = sorted(o.status for o in outcomes)
    assert statuses.count(SagaStatus.COMPENSATED) == 4
    assert statuses.count(SagaStatus.COMPLETED) == 12
    for outcome in outcomes:
        (row,) = hotel.reservations(outcome.execution_id)
        want = "canceled" if outcome.status is SagaStatus.COMPENSATED else "pending"
        assert row == (f"{outcome.execution_id}:room", "GRAND", want)
    client.close()
