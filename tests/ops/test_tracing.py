"""OpenTelemetry traces: a span per execution and per call, one trace across processes."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import SagaCli, cli_env, saga_executable
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from support import BOOKING, newest_execution_id, show_json, wait_for

from saga_cli import RetryPolicy, Saga, StepContext
from saga_cli.domain import SagaStatus
from saga_cli.errors import TransientError
from saga_cli.http import HttpService
from saga_cli.orchestrator import Orchestrator
from saga_cli.store import SagaStore
from saga_cli.tracing import Tracing

from .webhook import free_port


@pytest.fixture
def exporter() -> Iterator[tuple[InMemorySpanExporter, Tracing]]:
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    yield spans, Tracing(provider)
    provider.shutdown()


def flaky_saga(calls: list[dict[str, str]]) -> Saga:
    saga = Saga("flaky")
    seen: list[int] = []

    def answer(request: httpx.Request) -> httpx.Response:
        calls.append(dict(request.headers))
        return httpx.Response(200, json={})

    service = HttpService("audit", "http://audit.test", transport=httpx.MockTransport(answer))

    @saga.step()
    def book(ctx: StepContext[Any]) -> Any:  # plain def: runs on a thread
        return service.post(ctx, "/book")

    @book.compensation
    async def unbook(ctx: StepContext[Any]) -> None:
        return None

    @saga.step(retry=RetryPolicy(max_attempts=2))
    async def pay(ctx: StepContext[Any]) -> None:
        seen.append(ctx.attempt)
        if len(seen) == 1:
            raise TransientError("card network hiccup")
        raise KeyError("card")

    @pay.compensation
    async def refund(ctx: StepContext[Any]) -> None:
        return None

    return saga


def by_name(spans: Any) -> dict[str, list[ReadableSpan]]:
    found: dict[str, list[ReadableSpan]] = {}
    for span in spans:
        found.setdefault(span.name, []).append(span)
    return found


def test_an_execution_and_each_call_attempt_are_spans_of_one_trace(
    store: SagaStore, exporter: tuple[InMemorySpanExporter, Tracing]
) -> None:
    spans, tracing = exporter
    calls: list[dict[str, str]] = []
    with Orchestrator(store, tracing=tracing) as orchestrator:
        outcome = orchestrator.run(flaky_saga(calls), {})
    assert outcome.status is SagaStatus.COMPENSATED

    named = by_name(spans.get_finished_spans())

    (execution,) = named["saga flaky"]
    # pay's last failure may have taken effect (not a business refusal): it is undone too
    assert set(named) == {
        "saga flaky",
        "step book",
        "step pay",
        "compensate pay",
        "compensate book",
    }
    trace_id = execution.context.trace_id
    for span in spans.get_finished_spans():
        assert span.context.trace_id == trace_id
        if span is not execution:
            assert span.parent is not None and span.parent.span_id == execution.context.span_id
    assert execution.attributes is not None
    assert execution.attributes["saga.execution_id"] == outcome.execution_id
    assert execution.attributes["saga.outcome"] == "compensated"
    first, second = named["step pay"]
    assert first.attributes == {
        "saga.name": "flaky",
        "saga.execution_id": outcome.execution_id,
        "saga.step": "pay",
        "saga.step_kind": "compensatable",
        "saga.phase": "forward",
        "saga.attempt": 1,
        "saga.idempotency_key": f"{outcome.execution_id}:pay",
        "saga.outcome": "failed",
        "saga.error_type": "TransientError",
    }
    assert second.attributes is not None and second.attributes["saga.attempt"] == 2
    assert second.status.status_code is StatusCode.ERROR
    (raised,) = [e for e in second.events if e.name == "exception"]
    assert raised.attributes is not None and raised.attributes["exception.type"] == "KeyError"
    (undo,) = named["compensate book"]
    assert undo.attributes is not None and undo.attributes["saga.phase"] == "compensation"
    assert undo.attributes["saga.idempotency_key"] == f"{outcome.execution_id}:book:compensate"
    # the plain step's HTTP call (on a thread, through httpx) carried its span
    (booked,) = named["step book"]
    (headers,) = calls
    assert headers["traceparent"].startswith(f"00-{trace_id:032x}-{booked.context.span_id:016x}-")
    # the log keeps the trace's context for whoever resumes the execution
    started = store.events(outcome.execution_id)[0]
    assert started.detail is not None
    assert started.detail["traceparent"].startswith(
        f"00-{trace_id:032x}-{execution.context.span_id:016x}-"
    )


def test_a_resumed_execution_continues_the_trace(
    store: SagaStore, exporter: tuple[InMemorySpanExporter, Tracing]
) -> None:
    spans, tracing = exporter
    saga = Saga("later")

    @saga.step()
    async def first(ctx: StepContext[Any]) -> None:
        return None

    @first.compensation
    async def undo(ctx: StepContext[Any]) -> None:
        return None

    with Orchestrator(store, [saga], tracing=tracing) as orchestrator:
        execution_id = orchestrator.submit(saga, {})
        (submitted,) = spans.get_finished_spans()
        spans.clear()
        outcome = orchestrator.resume(execution_id)
    assert outcome.status is SagaStatus.COMPLETED

    named = by_name(spans.get_finished_spans())
    (resumed,) = named["saga later"]
    assert resumed.context.trace_id == submitted.context.trace_id
    assert resumed.parent is not None and resumed.parent.span_id == submitted.context.span_id
    assert resumed.attributes is not None and resumed.attributes["saga.resumed"] is True


def test_without_tracing_opentelemetry_is_never_imported(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "from saga_cli import Saga\n"
        "from saga_cli.orchestrator import Orchestrator\n"
        "saga = Saga('plain')\n"
        "@saga.step()\n"
        "def only(ctx):\n"
        "    return 1\n"
        "@only.compensation\n"
        "def undo(ctx):\n"
        "    return None\n"
        f"with Orchestrator({str(tmp_path / 'log.db')!r}) as o:\n"
        "    assert o.run(saga, {}).status.value == 'completed'\n"
        "import saga_cli.http, saga_cli.alerts\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# -- across processes, with the CLI's console exporter ------------------------------------


def read_spans(path: Path) -> list[dict[str, Any]]:
    """The spans a console exporter appended to `path` (JSON objects, one after another)."""
    text = path.read_text() if path.exists() else ""
    decoder, at = json.JSONDecoder(), 0
    spans: list[dict[str, Any]] = []
    while True:
        while at < len(text) and text[at].isspace():
            at += 1
        if at >= len(text):
            return spans
        span, at = decoder.raw_decode(text, at)
        spans.append(span)


def tracing_config(directory: Path, spans: str) -> Path:
    config = directory / f"{spans}.toml"
    config.write_text(f'[tracing]\nexporter = "console"\nfile = "{directory / spans}"\n')
    return config


@pytest.mark.slow
def test_a_trace_survives_a_sigkill_and_a_resume_in_another_process(
    saga: SagaCli, tmp_path: Path
) -> None:
    config = str(tracing_config(tmp_path, "spans.json"))

    crashed = saga("--config", config, "book", *BOOKING, "--crash-at", "car:after")
    assert crashed.code == -9, crashed.stderr  # SIGKILLed right after the car's reservation
    execution_id = newest_execution_id(saga.db)
    before = read_spans(tmp_path / "spans.json")

    resumed = saga("--config", config, "resume", execution_id)
    assert resumed.code == 0, resumed.stderr

    spans = read_spans(tmp_path / "spans.json")
    started = show_json(saga, execution_id)["events"][0]
    _version, trace_id, root_span, _flags = started["detail"]["traceparent"].split("-")
    assert {span["context"]["trace_id"] for span in spans} == {f"0x{trace_id}"}
    # the first process's ended spans are there; its execution span never ended (killed)
    assert [s["name"] for s in before] == ["step flight", "step hotel"]
    executions = [s for s in spans if s["name"] == "saga travel-booking"]
    assert len(executions) == 1 and executions[0]["parent_id"] == f"0x{root_span}"
    assert executions[0]["attributes"]["saga.outcome"] == "completed"
    steps = [s["name"] for s in spans if s["name"].startswith("step ")]
    assert steps == [
        "step flight",
        "step hotel",
        "step car",  # again, under the same key
        "step payment",
        "step confirm",
        "step notify",
    ]
    cars = [s for s in spans if s["name"] == "step car"]
    assert cars[0]["attributes"]["saga.idempotency_key"] == f"{execution_id}:car"
    assert cars[0]["parent_id"] == executions[0]["context"]["span_id"]


@pytest.mark.slow
def test_saga_serve_continues_the_trace_of_the_step_that_called_it(
    saga: SagaCli, tmp_path: Path
) -> None:
    port = free_port()
    service = subprocess.Popen(
        [
            saga_executable(),
            "--config",
            str(tracing_config(tmp_path, "service-spans.json")),
            "serve",
            "flight",
            "--port",
            str(port),
            "--db",
            str(tmp_path / "flight.db"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=cli_env(),
        stdin=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            try:
                return httpx.get(f"{url}/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, "the flight service to answer")
        config = str(tracing_config(tmp_path, "spans.json"))
        booked = saga("--config", config, "book", *BOOKING, "--services", f"flight={url}")
        assert booked.code == 0, booked.stderr
        wait_for(
            lambda: any(
                s["name"] == "POST /reserve" for s in read_spans(tmp_path / "service-spans.json")
            ),
            "the service's span",
        )
    finally:
        service.terminate()
        service.wait(timeout=30)
    client = {s["name"]: s for s in read_spans(tmp_path / "spans.json")}
    served = {s["name"]: s for s in read_spans(tmp_path / "service-spans.json")}
    step, request = client["step flight"], served["POST /reserve"]
    assert request["context"]["trace_id"] == step["context"]["trace_id"]
    assert request["parent_id"] == step["context"]["span_id"]
    assert request["kind"] == "SpanKind.SERVER"
    assert request["attributes"]["http.response.status_code"] in (200, 201)
    assert request["attributes"]["saga.idempotency_key"].endswith(":flight")
    assert "POST /confirm" in served
