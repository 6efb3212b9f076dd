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
