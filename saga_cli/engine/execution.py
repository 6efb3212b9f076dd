"""One execution in this process's hands, and what the engine reports about executions.

:class:`Execution` is the engine's mutable bookkeeping of an execution it
drives: the folded state, the events recorded since the last commit, the
row version its next write compare-and-sets. Everything else in the engine
passes these around; nothing here does I/O.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from saga_cli.domain import Event, SagaDefinition, SagaState, SagaStatus
from saga_cli.errors import InvalidInputError, UnknownSagaError
from saga_cli.saga import SagaLike, as_definition

EventListener = Callable[[str, Event], None]
DefinitionLookup = Callable[[str], SagaDefinition]

# A payload must be plain, strict JSON: the user typed it and expects it back
# as given, and NaN or Infinity would make `saga show --json` unreadable.
encode_payload = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


@dataclass(frozen=True, slots=True)
class Outcome:
    """Where an execution stands after the engine let go of it."""

    execution_id: str
    saga: str
    status: SagaStatus
    error: str | None = None
    results: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RecoveryReport:
    """What ``resume --all`` did."""

    outcomes: list[Outcome]
    busy: list[str]
    failed: dict[str, str] = field(default_factory=dict)


def registry(*definitions: SagaLike) -> DefinitionLookup:
    """A lookup of definitions (or :class:`~saga_cli.saga.Saga` objects) by saga name."""
    known = {d.name: d for d in map(as_definition, definitions)}

    def lookup(name: str) -> SagaDefinition:
        try:
            return known[name]
        except KeyError:
            raise UnknownSagaError(
                f"no definition of saga {name!r} is loaded (known: {', '.join(sorted(known))})"
            ) from None

    return lookup


def concurrency_key_of(definition: SagaDefinition, payload: Any) -> str | None:
    """The execution's concurrency key, computed by the definition from its payload.

    Raises:
        InvalidInputError: the key function failed or returned something other
            than a non-empty string.
    """
    compute = definition.concurrency_key
    if compute is None:
        return None
    try:
        key = compute(payload)
    except Exception as exc:
        raise InvalidInputError(
            f"saga {definition.name!r} could not compute the concurrency key of this payload: "
            f"{exc or type(exc).__name__}"
        ) from None
    if not isinstance(key, str) or not key or len(key) > 300:
        raise InvalidInputError(
            f"saga {definition.name!r}: the concurrency key must be a string of 1 to 300 "
            f"characters, got {key!r:.60}"
        )
    return key


def new_execution_id() -> str:
    """A random 32-hex-digit id; random so that short prefixes stay unique."""
    return uuid.uuid4().hex


class Execution:
    """Mutable bookkeeping of one execution while this process drives it.

    Attributes:
        pending: events recorded (folded into `state`) but not yet committed.
        version: the row version the next write compare-and-sets.
        created: whether the row exists in the log (its first write committed).
        writing: a write of this execution is being committed right now; the
            next one waits for it, since it must compare-and-set its result.
        waiters: futures of callers waiting for `pending` to become durable.
        release: the next write hands the execution back (owner and lease
            cleared) for any process to claim.
        span: this process's trace span of the execution (None untraced).
    """

    __slots__ = (
        "definition",
        "id",
        "payload",
        "payload_json",
        "state",
        "version",
        "created",
        "step_name",
        "key",
        "pending",
        "writing",
        "waiters",
        "release",
        "span",
        "_typed",
    )

    def __init__(
        self,
        definition: SagaDefinition,
        execution_id: str,
        payload: Mapping[str, Any],
        state: SagaState,
        version: int,
        created: bool,
    ) -> None:
        self.definition = definition
        self.id = execution_id
        self.payload = payload
        self.payload_json = ""
        self.state = state
        self.version = version
        self.created = created
        self.step_name: str | None = None
        self.key: str | None = None
        self.pending: list[Event] = []
        self.writing = False
        self.waiters: list[asyncio.Future[None]] = []
        self.release = False
        # This process's span of the execution, when traces are wanted.
        self.span: Any = None
        self._typed: Any = None

    def typed_payload(self) -> Any:
        """The payload as steps see it: an instance of the saga's model, if it has one.

        Built from the stored JSON once per process, so a resumed execution
        sees exactly what the first run saw.

        Raises:
            InvalidInputError: the stored payload no longer fits the model
                (the model changed since the execution started).
        """
        model = self.definition.payload
        if model is None:
            return self.payload
        if self._typed is None:
            from saga_cli.payloads import validate_payload

            self._typed = validate_payload(model, self.payload, self.definition.name)
        return self._typed

    def outcome(self) -> Outcome:
        """Where the execution stands now."""
        state = self.state
        return Outcome(self.id, self.definition.name, state.status, state.error, state.results)
