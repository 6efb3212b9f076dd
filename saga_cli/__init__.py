"""saga_cli: durable sagas on a persistent saga log.

Declare a saga as a :class:`SagaDefinition` of :class:`Step` objects, open a
log with :func:`open_store` and drive executions with :class:`SagaRunner`::

    from saga_cli import SagaDefinition, SagaRunner, Step, open_store, registry

    transfer = SagaDefinition("transfer", (
        Step("debit", debit, compensation=refund),
        Step("credit", credit, compensation=claw_back),
    ))
    store = open_store("saga.db")
    runner = SagaRunner(store, registry(transfer))
    outcome = runner.run(transfer, {"from": "alice", "to": "bob", "amount": 10})
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from saga_cli.domain import (
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
    from saga_cli.errors import (
        BusinessError,
        DefinitionError,
        ExecutionBusyError,
        LeaseLostError,
        SagaError,
        StoreError,
        TransientError,
    )
    from saga_cli.runner import (
        Outcome,
        RecoveryReport,
        SagaRunner,
        registry,
    )
    from saga_cli.store import (
        SagaStore,
        open_store,
    )

# Where each public name lives. Loaded on first use (PEP 562) so that the
# CLI, which lives inside this package, starts without importing the engine.
_EXPORTS = {
    "Event": "saga_cli.domain",
    "EventType": "saga_cli.domain",
    "RetryPolicy": "saga_cli.domain",
    "SagaDefinition": "saga_cli.domain",
    "SagaStatus": "saga_cli.domain",
    "Step": "saga_cli.domain",
    "StepContext": "saga_cli.domain",
    "StepKind": "saga_cli.domain",
    "is_terminal": "saga_cli.domain",
    "BusinessError": "saga_cli.errors",
    "DefinitionError": "saga_cli.errors",
    "ExecutionBusyError": "saga_cli.errors",
    "LeaseLostError": "saga_cli.errors",
    "SagaError": "saga_cli.errors",
    "StoreError": "saga_cli.errors",
    "TransientError": "saga_cli.errors",
    "Outcome": "saga_cli.runner",
    "RecoveryReport": "saga_cli.runner",
    "SagaRunner": "saga_cli.runner",
    "registry": "saga_cli.runner",
    "SagaStore": "saga_cli.store",
    "open_store": "saga_cli.store",
}

__all__ = [
    "BusinessError",
    "DefinitionError",
    "Event",
    "EventType",
    "ExecutionBusyError",
    "LeaseLostError",
    "Outcome",
    "RecoveryReport",
    "RetryPolicy",
    "SagaDefinition",
    "SagaError",
    "SagaRunner",
    "SagaStatus",
    "SagaStore",
    "Step",
    "StepContext",
    "StepKind",
    "StoreError",
    "TransientError",
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
