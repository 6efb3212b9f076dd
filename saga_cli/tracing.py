"""OpenTelemetry traces of executions: optional (the ``otel`` extra), and free when off.

Nothing here imports opentelemetry until a :class:`Tracing` is made; the
engine holds None when tracing is off and checks only that.

What is traced:

* one span per execution per process that drives it, ``saga NAME``. A new
  execution's is a child of the caller's current span (a web request's, say);
  its W3C ``traceparent`` is recorded in the ``saga_started`` event, and a
  process that resumes the execution later (another worker, or after a crash)
  makes its span a child of that one: one trace, however many processes;
* one child span per step or compensation attempt, ``step NAME`` or
  ``compensate NAME``, current while the call runs (so an HTTP call made with
  :mod:`saga_cli.http` carries its ``traceparent`` header), with the saga,
  the execution id, the step, its kind, the attempt, the idempotency key and
  the outcome as attributes, and a failure's exception recorded;
* on the service side, ``saga serve`` continues the trace it is sent.
"""

from __future__ import annotations

import contextvars
import importlib
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

from saga_cli.errors import InvalidInputError

# Where the saga_started event keeps the execution's trace context.
TRACE_KEY = "traceparent"
INSTRUMENTATION = "saga_cli"
EXPORTERS = ("console", "otlp", "global")
# Whether a Tracing was made in this process: HTTP calls then carry the
# current trace context (a module flag, so a call pays one lookup when off).
ACTIVE = False


@dataclass(frozen=True, slots=True)
class TracingSettings:
    """How ``saga`` commands export spans (the ``[tracing]`` table of saga.toml).

    Args:
        exporter: ``console`` (JSON spans, one after another, to `file` or
            stderr), ``otlp`` (OTLP over HTTP to `endpoint`; needs the
            ``opentelemetry-exporter-otlp-proto-http`` package) or ``global``
            (whatever tracer provider the process already has, e.g. set up by
            ``opentelemetry-instrument``).
        file: the console exporter's file (appended to).
        endpoint: the OTLP endpoint (default: the exporter's own, or
            ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``).
        service_name: the ``service.name`` resource attribute.
    """

    exporter: str = "console"
    file: str | None = None
    endpoint: str | None = None
    service_name: str = "saga"

    def __post_init__(self) -> None:
        if self.exporter not in EXPORTERS:
            raise InvalidInputError(
                f"tracing: exporter must be one of {', '.join(EXPORTERS)} (got {self.exporter!r})"
            )


def _otel() -> Any:
    try:
        from opentelemetry import trace
    except ImportError:
        raise InvalidInputError(
            "tracing needs OpenTelemetry: pip install 'saga-cli[otel]'"
        ) from None
    return trace


class Tracing:
    """Makes the engine's spans with one tracer.

    Args:
        provider: an OpenTelemetry TracerProvider; by default the global one
            (set it up as for any OpenTelemetry program).

    Raises:
        InvalidInputError: OpenTelemetry is not installed.
    """

    def __init__(self, provider: Any | None = None) -> None:
        global ACTIVE
        trace = _otel()
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self._trace = trace
        self._status = trace.Status
        self._error = trace.StatusCode.ERROR
        self._propagator = TraceContextTextMapPropagator()
        self.provider = provider
        self.tracer = (provider or trace.get_tracer_provider()).get_tracer(INSTRUMENTATION)
        ACTIVE = True

    # -- executions ---------------------------------------------------------------------

    def start_execution(
        self, saga: str, execution_id: str, traceparent: str | None, *, resumed: bool
    ) -> Any:
        """Start the span of an execution driven here.

        Args:
            saga: its saga's name.
            execution_id: its id.
            traceparent: the context recorded when it started (a resumed
                execution's span continues that trace); None for a new one,
                whose span is a child of the current span, if any.
            resumed: whether the execution started elsewhere or earlier.
        """
        parent = None if traceparent is None else self._extract(traceparent)
        return self.tracer.start_span(
            f"saga {saga}",
            context=parent,
            attributes={
                "saga.name": saga,
                "saga.execution_id": execution_id,
                "saga.resumed": resumed,
            },
        )

    def traceparent(self, span: Any) -> str | None:
        """The W3C traceparent of `span`, as the log keeps it."""
        carrier: dict[str, str] = {}
        self._propagator.inject(carrier, context=self._trace.set_span_in_context(span))
        return carrier.get(TRACE_KEY)

    def end_execution(self, span: Any, status: str | None, error: str | None = None) -> None:
        """End an execution's span with where the execution stands (None: handed back)."""
        span.set_attribute("saga.outcome", status or "released")
        if error is not None and status in ("compensated", "stuck"):
            span.set_attribute("saga.error", error[:500])
        if status == "stuck":
            span.set_status(self._status(self._error, "stuck"))
        span.end()

    def fail_execution(self, span: Any, exc: BaseException) -> None:
        """End an execution's span on an error that stopped this process driving it."""
        span.record_exception(exc)
        span.set_status(self._status(self._error, type(exc).__name__))
        span.set_attribute("saga.outcome", "interrupted")
        span.end()

    # -- calls ---------------------------------------------------------------------------

    def start_call(
        self,
        parent: Any,
        *,
        saga: str,
        execution_id: str,
        step: str,
        kind: str,
        attempt: int,
        compensating: bool,
        key: str,
    ) -> Any:
        """Start the span of one call, a child of the execution's span `parent`."""
        return self.tracer.start_span(
            f"{'compensate' if compensating else 'step'} {step}",
            context=None if parent is None else self._trace.set_span_in_context(parent),
            attributes={
                "saga.name": saga,
                "saga.execution_id": execution_id,
                "saga.step": step,
                "saga.step_kind": kind,
                "saga.phase": "compensation" if compensating else "forward",
                "saga.attempt": attempt,
                "saga.idempotency_key": key,
            },
        )

    def attach(self, span: Any) -> Any:
        """Make `span` current in this context (what starts or is sent over HTTP is its child).

        Returns:
            The token that :meth:`detach` takes, in the same context.
        """
        from opentelemetry import context

        return context.attach(self._trace.set_span_in_context(span))

    @staticmethod
    def detach(token: Any) -> None:
        """Undo :meth:`attach`."""
        from opentelemetry import context

        context.detach(token)

    def bound(self, span: Any, function: Callable[[Any], Any]) -> Callable[[Any], Any]:
        """`function` made to run with `span` current, on whatever thread runs it."""
        context = contextvars.copy_context()
        context.run(self.attach, span)

        def in_context(argument: Any) -> Any:
            return context.run(function, argument)

        return in_context

    def end_call(self, span: Any, error: BaseException | None, *, cancelled: bool = False) -> None:
        """End a call's span: succeeded, failed with `error` recorded, or cancelled (abandoned)."""
        if cancelled:
            span.set_attribute("saga.outcome", "abandoned")
        elif error is None:
            span.set_attribute("saga.outcome", "succeeded")
        else:
            span.set_attribute("saga.outcome", "failed")
            span.set_attribute("saga.error_type", type(error).__name__)
            span.record_exception(error)
            span.set_status(self._status(self._error, f"{type(error).__name__}: {error}"[:300]))
        span.end()

    # -- propagation ------------------------------------------------------------------------

    def _extract(self, traceparent: str) -> Any:
        return self._propagator.extract({TRACE_KEY: traceparent})

    # -- the service side ----------------------------------------------------------------

    def start_request(self, method: str, path: str, headers: Mapping[str, str]) -> Any:
        """Start a server span for an incoming request, continuing the trace it carries."""
        from opentelemetry import propagate

        key = headers.get("idempotency-key") or headers.get("Idempotency-Key")
        attributes: dict[str, Any] = {"http.request.method": method, "url.path": path}
        if key:
            attributes["saga.idempotency_key"] = key
        return self.tracer.start_span(
            f"{method} {path}",
            context=propagate.extract(headers),
            kind=self._trace.SpanKind.SERVER,
            attributes=attributes,
        )

    def end_request(self, span: Any, status: int | None, error: BaseException | None) -> None:
        """End a request's server span with its HTTP status (5xx, or an error, is an error)."""
        if status is not None:
            span.set_attribute("http.response.status_code", status)
        if error is not None:
            span.record_exception(error)
        if error is not None or (status is not None and status >= 500):
            span.set_status(self._status(self._error))
        span.end()


def inject(headers: MutableMapping[str, str]) -> MutableMapping[str, str]:
    """Add the current trace context (``traceparent``) to HTTP `headers`, if there is one."""
    from opentelemetry import propagate

    propagate.inject(headers)
    return headers


def extracted(headers: Mapping[str, str]) -> Any:
    """The trace context an incoming request carries (for a server span)."""
    from opentelemetry import propagate

    return propagate.extract(headers)


def from_settings(settings: TracingSettings) -> Tracing:
    """A Tracing that exports as `settings` say (for the ``saga`` commands).

    Raises:
        InvalidInputError: OpenTelemetry, or the OTLP exporter, is not installed.
    """
    trace = _otel()
    if settings.exporter == "global":
        return Tracing()
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": settings.service_name}))
    if settings.exporter == "console":
        import sys

        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        out = sys.stderr if settings.file is None else open(settings.file, "a", encoding="utf-8")  # noqa: SIM115 - open for the process's life
        # One span at a time, flushed as it ends: a SIGKILL loses no ended span.
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(out=out)))
    else:
        try:
            otlp = importlib.import_module("opentelemetry.exporter.otlp.proto.http.trace_exporter")
        except ImportError:
            raise InvalidInputError(
                "tracing: the otlp exporter needs "
                "`pip install opentelemetry-exporter-otlp-proto-http`"
            ) from None
        options = {} if settings.endpoint is None else {"endpoint": settings.endpoint}
        exporter = otlp.OTLPSpanExporter(**options)
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    import atexit

    atexit.register(provider.shutdown)  # flush what is batched on the way out
    return Tracing(provider)
