"""A saga for the kill-at-any-moment property: async and plain steps with scripted latencies.

Run as a script, it starts many executions at once and is meant to be
SIGKILLed mid-way: ``python chaos_saga.py LOG PAYLOADS_JSON CONCURRENCY``.
The participant keeps one row per idempotency key in CHAOS_DB, like a real
service: a repeated call does nothing new, a cancel of a key never seen
leaves a tombstone that refuses the late call.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import sys
import time
from typing import Any

from saga_cli import BusinessError, Orchestrator, Saga, StepContext


def _db() -> sqlite3.Connection:
    connection = sqlite3.connect(os.environ["CHAOS_DB"], isolation_level=None, timeout=30)
    connection.execute(
        "CREATE TABLE IF NOT EXISTS effect (key TEXT PRIMARY KEY, step TEXT, state TEXT, "
        "applied INTEGER NOT NULL DEFAULT 0, at REAL)"
    )
    return connection


def _apply(ctx: StepContext[Any]) -> str:
    if ctx.payload.get("fail") == ctx.step:
        raise BusinessError(f"{ctx.step} refused")  # a refusal takes no effect
    with _db() as db:
        db.execute("BEGIN IMMEDIATE")
        row = db.execute("SELECT state FROM effect WHERE key=?", (ctx.key,)).fetchone()
        if row is None:
            db.execute(
                "INSERT INTO effect VALUES (?, ?, 'held', 1, ?)", (ctx.key, ctx.step, time.time())
            )
        db.execute("COMMIT")
    if row is not None and row[0] == "tombstone":
        raise BusinessError(f"{ctx.step}: cancelled before it arrived")
    return ctx.step


def _undo(ctx: StepContext[Any]) -> None:
    with _db() as db:
        db.execute("BEGIN IMMEDIATE")
        row = db.execute("SELECT state FROM effect WHERE key=?", (ctx.action_key,)).fetchone()
        if row is None:
            db.execute(
                "INSERT INTO effect VALUES (?, ?, 'tombstone', 0, ?)",
                (ctx.action_key, ctx.step, time.time()),
            )
        elif row[0] == "held":
            db.execute(
                "UPDATE effect SET state='cancelled', at=? WHERE key=?",
                (time.time(), ctx.action_key),
            )
        db.execute("COMMIT")


def _latency(ctx: StepContext[Any]) -> float:
    return float(ctx.payload["latency"].get(ctx.step, 0)) / 1000


async def act_async(ctx: StepContext[Any]) -> str:
    await asyncio.sleep(_latency(ctx))
    return _apply(ctx)


def act(ctx: StepContext[Any]) -> str:
    time.sleep(_latency(ctx))
    return _apply(ctx)


async def undo_async(ctx: StepContext[Any]) -> None:
    await asyncio.sleep(_latency(ctx))
    _undo(ctx)


def undo(ctx: StepContext[Any]) -> None:
    time.sleep(_latency(ctx))
    _undo(ctx)


chaos = Saga("chaos")
chaos.step("a", compensation=undo_async)(act_async)
with chaos.parallel():
    chaos.step("b", compensation=undo)(act)
    chaos.step("c", compensation=undo_async)(act_async)
chaos.step("d", compensation=undo)(act)
chaos.step("pivot", kind="pivot")(act_async)
chaos.step("notify", kind="retriable")(act)

STEPS = ("a", "b", "c", "d", "pivot", "notify")


def effects() -> dict[str, tuple[str, int]]:
    """Every key the participant saw: its state and how many times it took effect."""
    with _db() as db:
        return {
            key: (state, applied)
            for key, state, applied in db.execute("SELECT key, state, applied FROM effect")
        }


if __name__ == "__main__":
    log, payloads, concurrency = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
    with Orchestrator(log, [chaos]) as orchestrator:
        print("started", flush=True)
        orchestrator.run_many(chaos, payloads, concurrency=concurrency)
