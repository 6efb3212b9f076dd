"""saga_cli: durable sagas on a persistent saga log.

Declare a saga with :class:`Saga` and run it with an :class:`Orchestrator`::

    from saga_cli import Orchestrator, Saga, StepContext

    transfer = Saga("transfer", payload=Transfer)

    @transfer.step()
    def debit(ctx: StepContext[Transfer]) -> dict[str, int]:
        return bank.debit(ctx.key, ctx.payload.source, ctx.payload.amount)

    @debit.compensation
    def refund(ctx: StepContext[Transfer]) -> None:
        bank.refund(ctx.action_key)

    with Orchestrator("saga.db") as orchestrator:
        outcome = orchestrator.run(transfer, {"source": "alice", "amount": 10})

The plain form builds the same definition from :class:`Step` objects:
``SagaDefinition("transfer", (Step("debit", debit, compensation=refund), ...))``.
Everything public is listed in ``__all__``; the rest is internal.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from saga_cli.alerts import AlertSettings, Command, Webhook
    from saga_cli.domain import (
        INHERIT,
        Event,
        EventType,
        RetryPolicy,
        SagaDefinition,
        SagaStatus,
        Step,
        StepContext,
        StepKind,
        is_terminal,
    )
    from saga_cli.engine import (
        Outcome,
        RecoveryReport,
        SagaRunner,
        registry,
    )
    from saga_cli.engine.alerting import AlertPolicy
    from saga_cli.errors import (
        BusinessError,
        ConcurrencyKeyBusyError,
        DefinitionChangedError,
        DefinitionError,
        ExecutionBusyError,
        InvalidInputError,
        LeaseLostError,
        SagaError,
        StepResultError,
        StepTimeoutError,
        StoreError,
        TransientError,
        UnknownExecutionError,
    )
    from saga_cli.health import HealthServer
    from saga_cli.orchestrator import Orchestrator
    from saga_cli.saga import Saga, StepHandle
    from saga_cli.store import (
        SagaStore,
        open_store,
    )
    from saga_cli.tracing import Tracing
    from saga_cli.views import ExecutionView, FailureView
    from saga_cli.worker import Worker, WorkerHealth, WorkerObserver, WorkerReport

# Where each public name lives. Loaded on first use (PEP 562) so that the
# CLI, which lives inside this package, starts without importing the engine.
_EXPORTS = {
    "Event": "saga_cli.domain",
    "EventType": "saga_cli.domain",
    "RetryPolicy": "saga_cli.domain",
    "SagaDefinition": "saga_cli.domain",
    "SagaStatus": "saga_cli.domain",
    "Step": "saga_cli.domain",
    "INHERIT": "saga_cli.domain",
    "StepContext": "saga_cli.domain",
    "StepKind": "saga_cli.domain",
    "is_terminal": "saga_cli.domain",
    "BusinessError": "saga_cli.errors",
    "ConcurrencyKeyBusyError": "saga_cli.errors",
    "DefinitionChangedError": "saga_cli.errors",
    "DefinitionError": "saga_cli.errors",
    "InvalidInputError": "saga_cli.errors",
    "StepTimeoutError": "saga_cli.errors",
    "StepResultError": "saga_cli.errors",
    "UnknownExecutionError": "saga_cli.errors",
    "Orchestrator": "saga_cli.orchestrator",
    "Saga": "saga_cli.saga",
    "StepHandle": "saga_cli.saga",
    "ExecutionView": "saga_cli.views",
    "Worker": "saga_cli.worker",
    "WorkerReport": "saga_cli.worker",
    "WorkerHealth": "saga_cli.worker",
    "WorkerObserver": "saga_cli.worker",
    "HealthServer": "saga_cli.health",
    "ExecutionBusyError": "saga_cli.errors",
    "LeaseLostError": "saga_cli.errors",
    "SagaError": "saga_cli.errors",
    "StoreError": "saga_cli.errors",
    "TransientError": "saga_cli.errors",
    "Outcome": "saga_cli.engine",
    "RecoveryReport": "saga_cli.engine",
    "SagaRunner": "saga_cli.engine",
    "registry": "saga_cli.engine",
    "SagaStore": "saga_cli.store",
    "open_store": "saga_cli.store",
    "AlertPolicy": "saga_cli.engine.alerting",
    "AlertSettings": "saga_cli.alerts",
    "Command": "saga_cli.alerts",
    "Webhook": "saga_cli.alerts",
    "Tracing": "saga_cli.tracing",
    "FailureView": "saga_cli.views",
}

__all__ = [
    "AlertPolicy",
    "AlertSettings",
    "BusinessError",
    "Command",
    "INHERIT",
    "ConcurrencyKeyBusyError",
    "DefinitionChangedError",
    "DefinitionError",
    "Event",
    "EventType",
    "ExecutionBusyError",
    "ExecutionView",
    "FailureView",
    "HealthServer",
    "InvalidInputError",
    "LeaseLostError",
    "Orchestrator",
    "Outcome",
    "RecoveryReport",
    "RetryPolicy",
    "Saga",
    "SagaDefinition",
    "SagaError",
    "SagaRunner",
    "SagaStatus",
    "SagaStore",
    "Step",
    "StepContext",
    "StepHandle",
    "StepKind",
    "StepResultError",
    "StepTimeoutError",
    "StoreError",
    "Tracing",
    "TransientError",
    "UnknownExecutionError",
    "Webhook",
    "Worker",
    "WorkerHealth",
    "WorkerObserver",
    "WorkerReport",
    "is_terminal",
    "open_store",
    "registry",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'saga_cli' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
