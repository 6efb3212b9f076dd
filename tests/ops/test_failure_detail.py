"""Failures you can debug: the exception's type and the user's frames, bounded, in the log."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conftest import SagaCli
from support import BOOKING, show_json

from saga_cli import Saga, StepContext
from saga_cli.engine.calls import TRACEBACK_CHARS
from saga_cli.orchestrator import Orchestrator
from saga_cli.store import SagaStore

SHOP = """
from typing import Any
from saga_cli import Saga, StepContext

shop = Saga("shop")
STOCK: dict[str, int] = {}


def lookup(sku: str) -> int:
    return STOCK[sku]


@shop.step()
def reserve(ctx: StepContext[Any]) -> Any:
    api_token = "s3cr3t-token-value"  # a local: never in the log
    return {"left": lookup(ctx.payload["sku"]), "token": len(api_token)}


@reserve.compensation
def release(ctx: StepContext[Any]) -> None:
    return None
"""


def run_shop(saga: SagaCli, tmp_path: Path, *options: str) -> tuple[str, str]:
    (tmp_path / "shop.py").write_text(SHOP)
    ran = saga(*options, "run", f"{tmp_path / 'shop.py'}:shop", "--payload", '{"sku": "nope"}')
    assert ran.code == 3, ran.stderr
    (execution_id,) = [
        line.split()[0] for line in ran.stdout.splitlines() if "compensated" in line
    ][-1:]
    return execution_id, ran.stderr


def test_show_names_the_exception_and_prints_the_users_frames(
    saga: SagaCli, tmp_path: Path
) -> None:
    execution_id, _ = run_shop(saga, tmp_path)

    shown = saga("show", execution_id)

    assert shown.code == 0, shown.stderr
    assert "KeyError: 'nope'" in shown.stdout
    assert "in reserve\n" in shown.stdout and "in lookup\n" in shown.stdout
    assert "return STOCK[sku]" in shown.stdout
    data = show_json(saga, execution_id)
    (failure,) = data["failures"]
    assert failure["step"] == "reserve" and failure["phase"] == "forward"
    assert failure["exception"] == "KeyError" and failure["error"] == "'nope'"
    assert failure["traceback"].startswith("Traceback (most recent call last):")
    assert failure["traceback"].endswith("KeyError: 'nope'")
    assert "saga_cli/engine" not in failure["traceback"]  # the engine's frames are left out
    assert data["timeline"]["forward"][0]["error"] == "KeyError: 'nope'"
    failed = [e for e in data["events"] if e["type"] == "step_failed"][0]
    assert failed["detail"]["error"] == "'nope'"  # the message as before, the type beside it
    assert failed["detail"]["exception"] == "KeyError"


def test_no_local_variable_reaches_the_log(saga: SagaCli, tmp_path: Path) -> None:
    run_shop(saga, tmp_path)
    assert b"s3cr3t-token-value" not in Path(saga.db).read_bytes()
    wal = Path(f"{saga.db}-wal")
    assert not wal.exists() or b"s3cr3t-token-value" not in wal.read_bytes()


def test_verbose_logs_the_traceback(saga: SagaCli, tmp_path: Path) -> None:
    _, stderr = run_shop(saga, tmp_path, "-v")
    assert "step reserve of" in stderr and "failed (attempt 1): KeyError: 'nope'" in stderr
    assert "in lookup" in stderr and "return STOCK[sku]" in stderr


def test_quiet_by_default_on_stderr(saga: SagaCli, tmp_path: Path) -> None:
    _, stderr = run_shop(saga, tmp_path)
    assert "Traceback" not in stderr


def test_a_deep_traceback_is_bounded(store: SagaStore) -> None:
    saga = Saga("deep")

    def dive(depth: int) -> int:
        if depth == 0:
            raise ValueError("x" * 10_000)
        return dive(depth - 1) + 1

    @saga.step()
    def sink(ctx: StepContext[Any]) -> int:
        return dive(400)

    @sink.compensation
    def surface(ctx: StepContext[Any]) -> None:
        return None

    with Orchestrator(store, [saga]) as orchestrator:
        outcome = orchestrator.run(saga, {})
        (failure,) = orchestrator.inspect(outcome.execution_id).failures

    assert len(failure.traceback) <= TRACEBACK_CHARS
    assert "earlier frame(s)" in failure.traceback and "in dive" in failure.traceback
    assert failure.traceback.endswith("…")  # the 10,000-character message was cut short


def test_a_business_refusal_keeps_its_message_alone(saga: SagaCli) -> None:
    booked = saga("book", *BOOKING, "--fail", "car", "--json")
    assert booked.code == 3
    data = show_json(saga, booked.json()["id"])
    assert data["failures"] == []
    car = [line for line in data["timeline"]["forward"] if line["step"] == "car"][0]
    assert car["error"] == "car declined the booking (--fail)"
