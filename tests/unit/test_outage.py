"""The outage tracker: counts, durations, one log line at each end, back-off, giving up."""

from __future__ import annotations

import logging
import random

import pytest

from saga_cli.engine.outage import MAX_DELAY, Outage
from saga_cli.errors import LogUnavailableError, OutageTooLongError


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_an_outage_is_counted_timed_and_logged_once_as_it_begins_and_once_as_it_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    outage = Outage(clock=clock)
    caplog.set_level(logging.WARNING, logger="saga_cli.engine.outage")
    outage.succeeded()  # no outage: nothing to end
    assert (outage.count, outage.active, outage.seconds_total) == (0, False, 0.0)

    for _ in range(5):
        outage.failed(LogUnavailableError("connection refused"))
        clock.now += 1.0
    assert (outage.count, outage.active, outage.seconds_total) == (1, True, 5.0)
    outage.succeeded()
    outage.succeeded()
    clock.now += 10.0  # time between outages is not counted
    outage.failed(LogUnavailableError("server closed the connection"))
    clock.now += 2.5
    outage.succeeded()

    assert (outage.count, outage.active, outage.seconds_total) == (2, False, 7.5)
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 4, messages
    assert "unreachable since" in messages[0] and "connection refused" in messages[0]
    assert "answers again" in messages[1] and "lasted 5.0 s" in messages[1]
    assert "lasted 2.5 s" in messages[3]


def test_the_back_off_doubles_up_to_its_cap_with_jitter() -> None:
    outage = Outage(clock=Clock(), rng=random.Random(1))
    delays = []
    for _ in range(12):
        outage.failed(LogUnavailableError("locked"))
        delays.append(outage.delay())
    assert delays[0] < delays[3] < delays[6]
    assert all(MAX_DELAY / 2 <= d <= MAX_DELAY for d in delays[-3:])
    assert len(set(delays[-3:])) == 3  # jittered, so workers do not retry in step


def test_max_seconds_gives_up_for_good_once_an_outage_lasts_longer() -> None:
    clock = Clock()
    outage = Outage(max_seconds=3, clock=clock)
    outage.failed(LogUnavailableError("connection refused"))
    clock.now += 3.0
    outage.check()  # not longer yet
    clock.now += 0.5
    with pytest.raises(OutageTooLongError, match=r"--max-outage 3s.*connection refused"):
        outage.check()
    outage.succeeded()
    with pytest.raises(OutageTooLongError):  # it stays given up
        outage.check()


def test_call_retries_until_the_log_answers_and_stops_when_told() -> None:
    outage = Outage()
    answers: list[object] = [LogUnavailableError("a"), LogUnavailableError("b"), "rows"]

    def read() -> object:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert outage.call(read) == "rows"
    assert (outage.count, outage.active) == (1, False)

    def down() -> object:
        raise LogUnavailableError("still down")

    with pytest.raises(LogUnavailableError, match="still down"):
        outage.call(down, stop=lambda: True)
