"""SQLModel tables of the saga log: the schema of record.

The migrations in ``migrations/versions`` build exactly these tables (a test
compares the two). Runtime code on SQLite does not import this module: loading
SQLModel costs more than the whole budget of ``saga list`` (see store/sqlite.py).
"""

from __future__ import annotations

from sqlalchemy import Index
from sqlmodel import Field, SQLModel


class SagaExecution(SQLModel, table=True):
    """One saga execution; a projection of its events, updated in the same transaction."""

    __tablename__ = "saga_execution"
    __table_args__ = (
        Index("ix_saga_execution_created", "created_at", "id"),
        Index("ix_saga_execution_status_created", "status", "created_at", "id"),
        # `--saga` filters (revision 0006); saga and created_at never change.
        Index("ix_saga_execution_saga_created", "saga", "created_at", "id"),
    )

    id: str = Field(primary_key=True, max_length=32)
    saga: str = Field(max_length=200)
    payload: str
    status: str = Field(max_length=20)
    step: str | None = Field(default=None, max_length=200)
    created_at: float
    updated_at: float
    owner: str | None = Field(default=None, max_length=300)
    lease_expires_at: float | None = None
    version: int = 1
    definition_version: str | None = Field(default=None, max_length=64)
    concurrency_key: str | None = Field(default=None, max_length=300)


class SagaEvent(SQLModel, table=True):
    """One transition of one execution; append-only, unique on (saga_id, seq)."""

    __tablename__ = "saga_event"

    saga_id: str = Field(primary_key=True, foreign_key="saga_execution.id", max_length=32)
    seq: int = Field(primary_key=True)
    step: str | None = Field(default=None, max_length=200)
    type: str = Field(max_length=40)
    attempt: int = 0
    detail: str | None = None
    at: float


class SagaDefinitionRecord(SQLModel, table=True):
    """One version of a saga definition: its steps, and the code it was loaded from."""

    __tablename__ = "saga_definition"

    name: str = Field(primary_key=True, max_length=200)
    version: str = Field(primary_key=True, max_length=64)
    steps: str
    source: str | None = None
    created_at: float


class SagaKeyLock(SQLModel, table=True):
    """A concurrency key in use, and the execution that holds it until it ends."""

    __tablename__ = "saga_key_lock"

    key: str = Field(primary_key=True, max_length=300)
    execution_id: str = Field(foreign_key="saga_execution.id", max_length=32)
    acquired_at: float


class SagaWorker(SQLModel, table=True):
    """A `saga worker` process: upserted on each heartbeat, deleted on a clean exit."""

    __tablename__ = "saga_worker"

    id: str = Field(primary_key=True, max_length=300)
    host: str = Field(max_length=255)
    pid: int
    started_at: float
    heartbeat_at: float
    concurrency: int
    lease_seconds: float
    sagas: str | None = None


class SagaAlert(SQLModel, table=True):
    """An alert (stuck, deadline missed, compensation failing), written with its cause's event.

    The outbox of alert delivery: a row per alert, and its delivery state.
    """

    __tablename__ = "saga_alert"
    __table_args__ = (
        Index("ix_saga_alert_due", "delivered_at", "next_attempt_at"),
        Index("ix_saga_alert_created", "created_at", "id"),
    )

    id: str = Field(primary_key=True, max_length=100)
    execution_id: str = Field(max_length=32)
    saga: str = Field(max_length=200)
    kind: str = Field(max_length=40)
    step: str | None = Field(default=None, max_length=200)
    attempt: int
    error: str | None = None
    created_at: float
    attempts: int
    next_attempt_at: float
    delivered_at: float | None = None
    delivered_to: str | None = None
    last_error: str | None = None
