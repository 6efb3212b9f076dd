"""A user's saga module type-checks under `mypy --strict` against the installed package."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

USER_MODULE = textwrap.dedent(
    '''
    """What a user writes: decorator form, sync and async steps, both APIs."""

    from __future__ import annotations

    import asyncio

    from pydantic import BaseModel

    from saga_cli import (
        BusinessError,
        Orchestrator,
        Outcome,
        RetryPolicy,
        Saga,
        SagaStatus,
        StepContext,
    )


    class Order(BaseModel):
        sku: str
        quantity: int


    order = Saga("order", payload=Order, concurrency_key=lambda o: f"sku:{o.sku}", step_timeout=5)


    @order.step()
    def reserve(ctx: StepContext[Order]) -> dict[str, int]:
        if ctx.payload.quantity < 1:
            raise BusinessError("nothing to reserve")
        return {"held": ctx.payload.quantity}


    @reserve.compensation
    def release(ctx: StepContext[Order]) -> None:
        print("released", ctx.action_key)


    @order.step(timeout=2.5)
    async def charge(ctx: StepContext[Order]) -> str:
        await asyncio.sleep(0)
        return f"charged {ctx.payload.sku}"


    @charge.compensation
    async def refund(ctx: StepContext[Order]) -> None:
        await asyncio.sleep(0)


    @order.step(kind="pivot")
    def confirm(ctx: StepContext[Order]) -> None:
        return None


    @order.step(kind="retriable", retry=RetryPolicy(max_attempts=5), timeout=None)
    async def notify(ctx: StepContext[Order]) -> bool:
        return True


    def place(orchestrator: Orchestrator, sku: str) -> SagaStatus:
        outcome: Outcome = orchestrator.run(order, Order(sku=sku, quantity=1))
        return outcome.status


    async def place_async(orchestrator: Orchestrator, sku: str) -> str:
        outcome = await orchestrator.run_async(order, {"sku": sku, "quantity": 2})
        return outcome.execution_id


    def main() -> None:
        with Orchestrator("orders.db", [order], step_timeout=30, threads=8) as orchestrator:
            print(place(orchestrator, "A"))
            print(asyncio.run(place_async(orchestrator, "B")))
    '''
)


def test_a_user_saga_module_passes_mypy_strict(tmp_path: Path) -> None:
    module = tmp_path / "orders.py"
    module.write_text(USER_MODULE)
    checked = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(module)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
