"""Exceptions raised by saga_cli, rooted at :class:`SagaError`.

The library raises these and never prints or exits; the CLI turns them into a
one-line message and an exit code. ``bad_input`` marks the errors that are the
caller's to fix (exit 2) as opposed to runtime failures (exit 1).
"""

from __future__ import annotations


class SagaError(Exception):
    """Base of every error saga_cli raises on purpose."""

    bad_input = False


class InvalidInputError(SagaError):
    """Raised when an argument, payload or option is malformed or out of range."""

    bad_input = True


class DefinitionError(InvalidInputError):
    """Raised when a saga definition is inconsistent (names, kinds, compensations)."""


class UnknownExecutionError(InvalidInputError):
    """Raised when no execution matches an id or id prefix."""


class AmbiguousIdError(InvalidInputError):
    """Raised when an id prefix matches more than one execution."""


class UnknownSagaError(InvalidInputError):
    """Raised when an execution names a saga definition this process does not know."""


class DefinitionChangedError(SagaError):
    """Raised when an execution's saga changed incompatibly since it started (see --force)."""


class ConcurrencyKeyBusyError(SagaError):
    """Raised when another unfinished execution holds the same concurrency key."""


class StoreError(SagaError):
    """Raised when the saga log cannot be read or written."""


class NotADatabaseError(StoreError):
    """Raised when the --db file exists but is not a SQLite database (it is left untouched)."""

    bad_input = True


class ForeignDatabaseError(StoreError):
    """Raised when the --db file is another application's SQLite database (it is left untouched)."""

    bad_input = True


class SchemaTooNewError(StoreError):
    """Raised when the log was migrated by a newer saga than this one."""

    bad_input = True


class LogUnavailableError(StoreError):
    """Raised when the log cannot be reached for now (a lost connection, a lock, an I/O error).

    Long-running commands wait such an outage out (saga_cli.engine.outage);
    a one-shot command fails with it, leaving its execution resumable.
    """


class DatabaseLockedError(LogUnavailableError):
    """Raised when another writer held the database past the busy timeout."""


class OutageTooLongError(StoreError):
    """Raised when the log stayed unreachable for longer than --max-outage allows."""


class WouldBlockError(SagaError):
    """Raised by Participant.try_transaction when starting would wait (nothing was done)."""


class MigrationError(StoreError):
    """Raised when applying the schema migrations fails (the version is left unchanged)."""


class ExecutionBusyError(SagaError):
    """Raised when another live process holds the execution's lease."""


class LeaseLostError(SagaError):
    """Raised when a write is refused because another owner took the execution over."""


class IllegalTransitionError(SagaError):
    """Raised when an event does not fit the execution's state (a corrupt or foreign log)."""


class StepError(SagaError):
    """Base of the errors a step's action or compensation raises to steer the runner."""


class BusinessError(StepError):
    """A participant refused the request (no availability, declined card): compensate at once."""


class TransientError(StepError):
    """A participant failed in a way worth retrying (timeout, connection reset)."""


class StepTimeoutError(TransientError):
    """A step's action did not answer within its timeout: its effect is unknown.

    The engine does not retry an action that timed out: the saga compensates
    at once, and the compensation must cope with the action arriving late (a
    tombstone). A compensation that times out is retried, as compensations are.
    """


class StepResultError(StepError):
    """A step or compensation returned a value the log cannot hold as JSON.

    Its effect may have happened, so the call counts as a failure after the
    fact (the step is compensated, or the saga is stuck past its pivot); it is
    not retried, since the same code would return the same value.
    """


class NotSentError(TransientError):
    """The request never reached the participant (a circuit breaker failed it fast).

    Unlike other failures its effect certainly does not exist, so a step that
    ends on it is not compensated; `retry_after` says when trying again makes
    sense (compensations wait at least that long before their next attempt).
    """

    def __init__(self, message: str, retry_after: float = 0.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after
