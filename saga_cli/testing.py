"""A test kit for your own sagas: prove each step and compensation idempotent under SIGKILL.

For every crash point of a saga (before and after each step's call, and each
compensation's), :func:`check_crash_points` runs the saga with ``saga run``
in a child process that kills itself with SIGKILL there, resumes it with
``saga resume`` in another child, and compares the effects your services
report with what the log says happened::

    from saga_cli.testing import check_crash_points

    def test_transfer_survives_every_crash(tmp_path):
        report = check_crash_points(
            "examples/bank_transfer.py:transfer",
            payload={"source": "alice", "target": "bob", "amount": 30},
            effects=lambda execution_id: ledger_counts(execution_id),
            workdir=tmp_path,
        )
        assert report.ok, report.summary()

`effects(execution_id)` returns how many times each effect of that execution
exists, keyed ``"STEP"`` and ``"STEP:compensate"`` (the full idempotency keys,
``"<id>:STEP"``..., work too). After the resume, each step the log records
as succeeded must show exactly one effect, each compensation that succeeded
exactly one, and every other step none: twice means a step is not
idempotent; never means an effect was lost.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from saga_cli.domain import EventType, SagaDefinition, SagaStatus, StepKind
from saga_cli.faults import CrashPoint, crash_points
from saga_cli.loader import load_one
from saga_cli.store import open_store

Effects = Callable[[str], Mapping[str, int]]


@dataclass(slots=True)
class Scenario:
    """One crash point: what happened to the execution and what went wrong."""

    point: str
    execution_id: str | None = None
    status: str | None = None
    problems: list[str] = field(default_factory=list)


@dataclass(slots=True)
class CrashCheck:
    """The result of :func:`check_crash_points`, one scenario per crash point."""

    saga: str
    scenarios: list[Scenario] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every crash point was reached and every effect happened exactly as logged."""
        return bool(self.scenarios) and not any(s.problems for s in self.scenarios)

    @property
    def problems(self) -> list[str]:
        """Every problem found, prefixed with its crash point."""
        return [f"{s.point}: {p}" for s in self.scenarios for p in s.problems]

    def summary(self) -> str:
        """A readable table of the scenarios, for an assertion message."""
        lines = [f"crash-point check of {self.saga}: {len(self.scenarios)} scenario(s)"]
        for s in self.scenarios:
            verdict = "ok" if not s.problems else "; ".join(s.problems)
            lines.append(f"  {s.point:<32} {s.status or '-':<12} {verdict}")
        return "\n".join(lines)


def failing_step(definition: SagaDefinition) -> str:
    """The step made to fail to reach the compensation points: the pivot, else the last step."""
    for step in definition.steps:
        if step.kind is not StepKind.COMPENSATABLE:
            return step.name
    return definition.steps[-1].name


def scenario_points(definition: SagaDefinition, fail: str) -> list[tuple[CrashPoint, str | None]]:
    """Each crash point with the step to fail (for compensation points) or None."""
    before_fail = set(definition.step_names[: definition.index[fail]])
    chosen: list[tuple[CrashPoint, str | None]] = []
    for point in crash_points(definition):
        if not point.compensation:
            chosen.append((point, None))
        elif point.step in before_fail:
            chosen.append((point, fail))
    return chosen


def check_crash_points(
    saga: str,
    payload: Mapping[str, Any],
    effects: Effects,
    *,
    workdir: str | os.PathLike[str],
    env: Mapping[str, str] | None = None,
    ignore: Collection[str] = (),
    points: Sequence[str] | None = None,
    fail: str | None = None,
    setup: Callable[[], None] | None = None,
    timeout: float = 60.0,
) -> CrashCheck:
    """Kill the saga at every crash point, resume it, and check its effects against the log.

    Args:
        saga: a reference ``saga run`` takes (``path/to/file.py:NAME`` or
            ``module:NAME``); the children import it from there.
        payload: the input of every execution.
        effects: counts of the effects of one execution (see the module doc).
        workdir: a directory for the scenarios' saga logs (one per point).
        env: extra environment variables for the children (where your
            services keep their data, say).
        ignore: steps whose effects `effects` does not observe.
        points: only these crash points (``"debit:after"``...); default all.
        fail: the step made to fail (``saga run --fail``) so that the
            compensation points are reached; default :func:`failing_step`.
        setup: called before each scenario (to restock the services' data, say).
        timeout: seconds allowed to each child process.

    Returns:
        The scenarios and their problems; ``report.ok`` when there are none.
    """
    definition = load_one(saga)
    failing = fail or failing_step(definition)
    plan = scenario_points(definition, failing)
    if points is not None:
        wanted = set(points)
        plan = [(p, f) for p, f in plan if str(p) in wanted]
    child_env = {**os.environ, **(env or {})}
    directory = Path(workdir)
    directory.mkdir(parents=True, exist_ok=True)
    report = CrashCheck(saga)
    for number, (point, fail_step) in enumerate(plan, 1):
        scenario = Scenario(str(point))
        report.scenarios.append(scenario)
        if setup is not None:
            setup()
        log = directory / f"crash-{number:02d}.db"
        _run_scenario(scenario, saga, payload, point, fail_step, log, child_env, timeout)
        if scenario.execution_id is not None and not scenario.problems:
            _compare(scenario, log, definition, effects, ignore)
    return report


def _saga(log: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "saga_cli", "--db", str(log), *args]


def _run_scenario(
    scenario: Scenario,
    saga: str,
    payload: Mapping[str, Any],
    point: CrashPoint,
    fail_step: str | None,
    log: Path,
    env: Mapping[str, str],
    timeout: float,
) -> None:
    """Run to the crash point in one child, then resume in another."""
    command = _saga(log, "run", saga, "--payload", json.dumps(dict(payload)), "--json")
    command += ["--crash-at", str(point)]
    if fail_step is not None:
        command += ["--fail", fail_step]
    crashed = subprocess.run(
        command, env=dict(env), capture_output=True, text=True, timeout=timeout
    )
    if crashed.returncode != -signal.SIGKILL:
        scenario.problems.append(
            f"the crash point was not reached (exit {crashed.returncode}: "
            f"{crashed.stderr.strip()[-300:] or crashed.stdout.strip()[-300:]})"
        )
        return
    store = open_store(str(log))
    try:
        records = store.list_executions(limit=2)
    finally:
        store.close()
    if len(records) != 1:
        scenario.problems.append(f"expected one execution in the log, found {len(records)}")
        return
    scenario.execution_id = records[0].id
    resumed = subprocess.run(
        _saga(log, "resume", scenario.execution_id, "--json"),
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if resumed.returncode not in (0, 3):
        scenario.problems.append(
            f"resume exited {resumed.returncode}: {resumed.stderr.strip()[-300:]}"
        )


def _compare(
    scenario: Scenario,
    log: Path,
    definition: SagaDefinition,
    effects: Effects,
    ignore: Collection[str],
) -> None:
    """Check the execution ended terminal and each effect exists exactly as often as logged."""
    assert scenario.execution_id is not None
    store = open_store(str(log))
    try:
        record = store.get(scenario.execution_id)
        events = store.events(record.id)
    finally:
        store.close()
    scenario.status = record.status.value
    if record.status not in (SagaStatus.COMPLETED, SagaStatus.COMPENSATED):
        scenario.problems.append(f"the execution ended {record.status.value}, not terminal")
    succeeded = {e.step for e in events if e.type is EventType.STEP_SUCCEEDED}
    compensated = {e.step for e in events if e.type is EventType.COMPENSATION_SUCCEEDED}
    prefix = f"{record.id}:"
    seen = {key.removeprefix(prefix): count for key, count in effects(record.id).items()}
    expected: dict[str, int] = {}
    for step in definition.steps:
        if step.name in ignore:
            continue
        expected[step.name] = 1 if step.name in succeeded else 0
        if step.compensation is not None:
            expected[f"{step.name}:compensate"] = 1 if step.name in compensated else 0
    for key, want in expected.items():
        got = seen.get(key, 0)
        if got == want:
            continue
        if got > want and want == 1:
            scenario.problems.append(f"{key} took effect {got} times (not idempotent)")
        elif got > want:
            scenario.problems.append(f"{key} took effect {got} time(s) but the log says it did not")
        else:
            scenario.problems.append(f"{key} never took effect but the log says it succeeded")
    for key, got in seen.items():
        if key not in expected and got and key.partition(":")[0] not in ignore:
            scenario.problems.append(f"unexpected effect {key!r} ({got}x) names no step")
