"""Two small sagas for the test kit's own tests: one idempotent, one that is not.

Effects are rows in a SQLite table named by SAGA_KIT_DB, one per call that
took effect, keyed by the idempotency key.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from typing import Any

from saga_cli import Saga, StepContext


def _db() -> sqlite3.Connection:
    connection = sqlite3.connect(os.environ["SAGA_KIT_DB"], isolation_level=None, timeout=10)
    connection.execute("CREATE TABLE IF NOT EXISTS effect (key TEXT, step TEXT)")
    return connection


def _once(ctx: StepContext[Any]) -> str:
    """Record the effect unless its key already has one (idempotent)."""
    with _db() as connection:
        connection.execute("BEGIN IMMEDIATE")
        if connection.execute("SELECT 1 FROM effect WHERE key=?", (ctx.key,)).fetchone() is None:
            connection.execute("INSERT INTO effect VALUES (?, ?)", (ctx.key, ctx.step))
        connection.execute("COMMIT")
    return ctx.key


def _every_time(ctx: StepContext[Any]) -> str:
    """Record the effect on every call: repeating it doubles the effect."""
    with _db() as connection:
        connection.execute("INSERT INTO effect VALUES (?, ?)", (ctx.key, ctx.step))
    return ctx.key


async def _once_async(ctx: StepContext[Any]) -> str:
    """An ``async def`` participant: waits as a remote call would, then records once."""
    await asyncio.sleep(0.001)
    return _once(ctx)


def effects(execution_id: str) -> dict[str, int]:
    """How many times each effect of one execution exists, by idempotency key."""
    with _db() as connection:
        rows = connection.execute(
            "SELECT key, COUNT(*) FROM effect WHERE key LIKE ? GROUP BY key", (execution_id + ":%",)
        ).fetchall()
    return {key: count for key, count in rows}


careful = Saga("kit-careful")
careful.step("reserve", compensation=_once)(_once)
with careful.parallel():
    careful.step("left", compensation=_once)(_once)
    careful.step("right", compensation=_once)(_once)
careful.step("commit", kind="pivot")(_once)
careful.step("announce", kind="retriable")(_once)

careless = Saga("kit-careless")
careless.step("reserve", compensation=_once)(_once)
careless.step("charge", compensation=_once)(_every_time)
careless.step("commit", kind="pivot")(_once)

# The same shape with async steps and compensations, one group mixing both kinds.
awaited = Saga("kit-awaited")
awaited.step("reserve", compensation=_once_async)(_once_async)
with awaited.parallel():
    awaited.step("left", compensation=_once_async)(_once_async)
    awaited.step("right", compensation=_once)(_once)
awaited.step("commit", kind="pivot")(_once_async)
awaited.step("announce", kind="retriable")(_once_async)
