"""A web API that runs one saga per request without blocking its event loop.

Each ``POST /transfers`` runs the bank transfer saga of ``bank_transfer.py``
to its end with ``await orchestrator.run_async(...)``: the handler waits,
the event loop does not. The saga's plain ``def`` steps run on the engine's
threads, ``async def`` ones would run on this loop, and the log is written
from a thread of its own, so the API keeps answering other requests (and
runs their sagas side by side) while one waits on a slow step::

    pip install . && cd examples
    SAGA_DB=transfers.db uvicorn transfer_api:app --port 8000
    curl -s --json '{"source": "alice", "target": "bob", "amount": 2500}' localhost:8000/transfers
    curl -s localhost:8000/transfers/ID

A transfer that completes answers 201, one that was compensated (the money
went back) 409 with the reason, a stuck one 500; a second transfer from the
same account waits up to 5 s for the first (the saga's concurrency key),
then answers 429. The bank's tables live in ``SAGA_EXAMPLE_DB`` as for
``bank_transfer.py``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from bank_transfer import Transfer, transfer
from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse

from saga_cli import ConcurrencyKeyBusyError, Orchestrator, SagaStatus, UnknownExecutionError


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """One orchestrator for the process: its executions share the log's commits."""
    with Orchestrator(os.environ.get("SAGA_DB", "transfers.db"), [transfer]) as orchestrator:
        app.state.orchestrator = orchestrator
        yield


app = FastAPI(title="transfers", lifespan=lifespan)


@app.post("/transfers", status_code=201)
async def create_transfer(body: Transfer) -> Any:
    """Move money from one account to another; answers once the saga has ended."""
    orchestrator: Orchestrator = app.state.orchestrator
    try:
        outcome = await orchestrator.run_async(transfer, body, key_wait=5.0)
    except ConcurrencyKeyBusyError as exc:
        raise HTTPException(status_code=429, detail=str(exc)) from None
    answer = {"id": outcome.execution_id, "status": outcome.status.value, "error": outcome.error}
    if outcome.status is SagaStatus.COMPLETED:
        return answer
    return JSONResponse(
        status_code=409 if outcome.status is SagaStatus.COMPENSATED else 500, content=answer
    )


@app.get("/transfers/{execution_id}")
def show_transfer(execution_id: str) -> dict[str, Any]:
    """One transfer as ``saga show --json`` shows it (a plain def: it reads the log)."""
    orchestrator: Orchestrator = app.state.orchestrator
    try:
        return orchestrator.inspect(execution_id).as_json()
    except UnknownExecutionError as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from None
