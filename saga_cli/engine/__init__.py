"""The engine: drives executions against the saga log, many in flight on one event loop.

Where to start reading: :mod:`saga_cli.engine.drive` (one execution's loop),
then :mod:`~saga_cli.engine.writer` (shared commits), :mod:`~saga_cli.engine.calls`
(calling participants), :mod:`~saga_cli.engine.claims` (leases),
:mod:`~saga_cli.engine.scheduler` (how many in flight) and
:mod:`~saga_cli.engine.runner` (the public :class:`SagaRunner`).
"""

from saga_cli.engine.execution import (
    DefinitionLookup,
    EventListener,
    Outcome,
    RecoveryReport,
    concurrency_key_of,
    new_execution_id,
    registry,
)
from saga_cli.engine.runner import DEFAULT_STEP_TIMEOUT, SagaRunner

__all__ = [
    "DEFAULT_STEP_TIMEOUT",
    "DefinitionLookup",
    "EventListener",
    "Outcome",
    "RecoveryReport",
    "SagaRunner",
    "concurrency_key_of",
    "new_execution_id",
    "registry",
]
