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
from saga_cli.runner import Outcome, RecoveryReport, SagaRunner, registry
from saga_cli.store import SagaStore, open_store

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
