"""Sagas the dashboard's tests run: a 50-step one (with a parallel group) and a slow one.

Steps only wait a little and return; nothing outside the log is touched.
"""

from __future__ import annotations

import asyncio
from typing import Any

from saga_cli import BusinessError, Saga, StepContext

FIFTY = 50
GROUP = ("g1", "g2", "g3")  # steps 21-23 run as one parallel group


async def _work(ctx: StepContext[Any]) -> str:
    await asyncio.sleep(0.002)
    if ctx.payload.get("fail_at") == ctx.step:
        raise BusinessError(f"{ctx.step} refused (fail_at)")
    return ctx.key


async def _undo(ctx: StepContext[Any]) -> None:
    await asyncio.sleep(0.001)


fifty = Saga("fifty-steps", description="50 steps: 20 + a group of 3 + 6, a pivot, 20 retriable")
for number in range(1, 21):
    fifty.step(f"s{number:02d}", compensation=_undo)(_work)
with fifty.parallel("trio"):
    for name in GROUP:
        fifty.step(name, compensation=_undo)(_work)
for number in range(24, 30):
    fifty.step(f"s{number:02d}", compensation=_undo)(_work)
fifty.step("s30", kind="pivot")(_work)
for number in range(31, FIFTY + 1):
    fifty.step(f"s{number:02d}", kind="retriable")(_work)


async def _wait(ctx: StepContext[Any]) -> str:
    await asyncio.sleep(float(ctx.payload.get("seconds", 0)))
    return ctx.key


slow = Saga("slow-wait", description="a step that waits the payload's seconds")
slow.step("prepare", compensation=_undo)(_work)
slow.step("wait", compensation=_undo)(_wait)
slow.step("commit", kind="pivot")(_work)
