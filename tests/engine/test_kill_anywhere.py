"""Many executions in flight, random latencies and failures, SIGKILL at a random moment, resume.

Whatever moment the process dies at, a resume brings every execution to a
terminal state with every effect taken once, and the compensations of each
compensated execution in reverse order (group by group).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from saga_cli import Orchestrator, SagaStatus
from saga_cli.domain import EventType

from . import chaos_saga

SCRIPT = Path(chaos_saga.__file__).resolve()
COMPENSATED_GROUPS = {"a": 0, "b": 1, "c": 1, "d": 2}

execution = st.fixed_dictionaries(
    {
        "latency": st.fixed_dictionaries(
            {step: st.integers(min_value=0, max_value=30) for step in chaos_saga.STEPS}
        ),
        "fail": st.sampled_from([None, "a", "b", "c", "d"]),
    }
)


@pytest.mark.slow
@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    payloads=st.lists(execution, min_size=1, max_size=24),
    concurrency=st.integers(min_value=1, max_value=16),
    kill_after=st.floats(min_value=0.0, max_value=0.6),
)
def test_a_kill_at_any_moment_then_resume_ends_every_execution_with_each_effect_once(
    tmp_path_factory: pytest.TempPathFactory,
    payloads: list[dict[str, Any]],
    concurrency: int,
    kill_after: float,
) -> None:
    scratch = tmp_path_factory.mktemp("chaos")
    log = str(scratch / "saga.db")
    env = {**os.environ, "CHAOS_DB": str(scratch / "effects.db")}
    child = subprocess.Popen(
        [sys.executable, str(SCRIPT), log, json.dumps(payloads), str(concurrency)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "started"
    time.sleep(kill_after)
    child.send_signal(signal.SIGKILL)
    _out, err = child.communicate(timeout=60)
    assert "Traceback" not in err, err

    os.environ["CHAOS_DB"] = env["CHAOS_DB"]  # the participant in this process
    with Orchestrator(log, [chaos_saga.chaos]) as orchestrator:
        report = orchestrator.resume_all(concurrency=4)
        assert report.failed == {} and report.busy == []
        records = orchestrator.store.list_executions(limit=1000)
        assert len(records) <= len(payloads)
        effects = chaos_saga.effects()
        for record in records:
            assert record.status in (SagaStatus.COMPLETED, SagaStatus.COMPENSATED), record
            mine = {
                key.rsplit(":", 1)[1]: value
                for key, value in effects.items()
                if key.startswith(record.id + ":")
            }
            assert all(applied <= 1 for _state, applied in mine.values()), mine
            events = orchestrator.store.events(record.id)
            if record.status is SagaStatus.COMPLETED:
                assert {step: state for step, (state, _a) in mine.items()} == {
                    step: "held" for step in chaos_saga.STEPS
                }
                continue
            # compensated: nothing of it is left held, and the undo ran in reverse
            assert all(state != "held" for state, _a in mine.values()), mine
            undone = [
                e.step for e in events if e.type is EventType.COMPENSATION_SUCCEEDED and e.step
            ]
            groups = [COMPENSATED_GROUPS[step] for step in undone]
            assert groups == sorted(groups, reverse=True), undone
            assert len(undone) == len(set(undone))
