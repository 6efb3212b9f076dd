"""Property tests of the real SagaRunner on a real SQLite log, one fresh file per example.

Each example draws a definition (compensatable* pivot? retriable*), an outcome
for every attempt of every action and compensation, and retry budgets. A small
reference model says what must happen; the runner must agree with it, keep
the write-ahead rule, and survive a crash at any call or event.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from saga_cli.domain import (
    Event,
    EventType,
    RetryPolicy,
    SagaDefinition,
    SagaStatus,
    Step,
    StepContext,
    StepKind,
    compensation_order,
    replay,
)
from saga_cli.engine import Outcome, SagaRunner, registry
from saga_cli.errors import BusinessError, TransientError
from saga_cli.store import ExecutionRecord, SagaStore, open_store

OK = "ok"
BUSINESS = "business"
TRANSIENT = "transient"
OTHER = "other"
OUTCOMES = (OK, BUSINESS, TRANSIENT, OTHER)
AT_REST = (SagaStatus.COMPLETED, SagaStatus.COMPENSATED, SagaStatus.STUCK)

PROPERTY_SETTINGS = settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


class Crash(BaseException):
    """Stands in for the process dying: the runner must not catch it."""


@dataclass(frozen=True)
class StepPlan:
    kind: StepKind
    attempts: int
    compensation_attempts: int
    action_outcomes: tuple[str, ...]
    compensation_outcomes: tuple[str, ...]

    def action(self, attempt: int) -> str:
        outcomes = self.action_outcomes
        return outcomes[attempt - 1] if attempt <= len(outcomes) else OK

    def compensation(self, attempt: int) -> str:
        outcomes = self.compensation_outcomes
        return outcomes[attempt - 1] if attempt <= len(outcomes) else OK


@dataclass(frozen=True)
class Scenario:
    steps: tuple[StepPlan, ...]

    @property
    def names(self) -> list[str]:
        return [f"s{i}" for i in range(len(self.steps))]


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    size = draw(st.integers(min_value=1, max_value=6), label="size")
    comps = draw(st.integers(min_value=0, max_value=size), label="compensatable")
    pivots = draw(st.integers(min_value=0, max_value=min(1, size - comps)), label="pivots")
    kinds = (
        [StepKind.COMPENSATABLE] * comps
        + [StepKind.PIVOT] * pivots
        + [StepKind.RETRIABLE] * (size - comps - pivots)
    )
    # Most steps succeed at once (an empty script) and one step, drawn, fails
    # for good, so that long sagas get far enough to compensate several steps;
    # other steps follow a script of 1-3 drawn outcomes, then succeed.
    scripted = st.lists(st.sampled_from(OUTCOMES), min_size=1, max_size=3).map(tuple)
    failures = st.sampled_from((BUSINESS, TRANSIENT, OTHER))
    doomed = draw(st.integers(min_value=0, max_value=size), label="doomed")
    plans = []
    for index, kind in enumerate(kinds):
        attempts = draw(st.integers(min_value=1, max_value=3))
        if index == doomed:
            script = tuple(draw(st.lists(failures, min_size=attempts, max_size=attempts)))
        else:
            script = draw(st.one_of(st.just(()), st.just(()), scripted))
        plans.append(
            StepPlan(
                kind=kind,
                attempts=attempts,
                compensation_attempts=draw(st.integers(min_value=1, max_value=3)),
                action_outcomes=script,
                compensation_outcomes=draw(st.one_of(st.just(()), scripted)),
            )
        )
    return Scenario(tuple(plans))


@dataclass(frozen=True)
class Expected:
    status: SagaStatus
    succeeded: list[str]
    compensated: list[str]


def reference_model(scenario: Scenario) -> Expected:
    """What must happen, from the scenario alone (no crashes, no resume of stuck)."""
    names = scenario.names
    succeeded: list[int] = []
    for index, plan in enumerate(scenario.steps):
        ok = False
        for attempt in range(1, plan.attempts + 1):
            outcome = plan.action(attempt)
            if outcome == OK:
                ok = True
                break
            if outcome == BUSINESS:
                break
        if ok:
            succeeded.append(index)
            continue
        # A failure other than a business refusal leaves the effect uncertain:
        # a compensatable step is then compensated too, a pivot parks the saga.
        uncertain = outcome != BUSINESS
        past_pivot = any(scenario.steps[i].kind is not StepKind.COMPENSATABLE for i in succeeded)
        if past_pivot or plan.kind is StepKind.RETRIABLE:
            return Expected(SagaStatus.STUCK, [names[i] for i in succeeded], [])
        if uncertain and plan.kind is StepKind.PIVOT:
            return Expected(SagaStatus.STUCK, [names[i] for i in succeeded], [])
        undo = [*succeeded, index] if uncertain else succeeded
        compensated: list[str] = []
        for done in reversed(undo):
            step = scenario.steps[done]
            attempts = range(1, step.compensation_attempts + 1)
            if not any(step.compensation(a) == OK for a in attempts):
                return Expected(SagaStatus.STUCK, [names[i] for i in succeeded], compensated)
            compensated.append(names[done])
        return Expected(SagaStatus.COMPENSATED, [names[i] for i in succeeded], compensated)
    return Expected(SagaStatus.COMPLETED, names, [])


@dataclass
class Call:
    compensation: bool
    step: str
    attempt: int
    outcome: str
    key: str
    action_key: str
    logged_before: bool


@dataclass
class Harness:
    """A definition whose participants follow a scenario and record every call."""

    scenario: Scenario
    url: str
    crash_calls: frozenset[int] = frozenset()
    crash_after: bool = False
    calls: list[Call] = field(default_factory=list)
    observer: SagaStore | None = None

    def definition(self) -> SagaDefinition:
        steps = []
        for name, plan in zip(self.scenario.names, self.scenario.steps, strict=True):
            compensation = (
                self._participant(plan, compensation=True)
                if plan.kind is StepKind.COMPENSATABLE
                else None
            )
            steps.append(
                Step(
                    name,
                    self._participant(plan, compensation=False),
                    compensation,
                    kind=plan.kind,
                    retry=RetryPolicy(max_attempts=plan.attempts),
                    compensation_retry=RetryPolicy(max_attempts=plan.compensation_attempts),
                )
            )
        return SagaDefinition("property", tuple(steps))

    def _participant(self, plan: StepPlan, *, compensation: bool) -> Callable[[StepContext], Any]:
        def call(ctx: StepContext) -> Any:
            number = len(self.calls)
            outcome = plan.compensation(ctx.attempt) if compensation else plan.action(ctx.attempt)
            crash = number in self.crash_calls
            if crash and not self.crash_after:
                self.calls.append(self._call(ctx, compensation, "crash"))
                raise Crash
            self.calls.append(self._call(ctx, compensation, outcome))
            if crash:
                raise Crash
            if outcome == BUSINESS:
                raise BusinessError(f"{ctx.step} declined")
            if outcome == TRANSIENT:
                raise TransientError(f"{ctx.step} timed out")
            if outcome == OTHER:
                raise RuntimeError(f"{ctx.step} broke")
            return {"step": ctx.step, "attempt": ctx.attempt}

        return call

    def _call(self, ctx: StepContext, compensation: bool, outcome: str) -> Call:
        # Read the log on a separate connection, as another process would: the
        # started record for this very attempt must already be committed.
        assert self.observer is not None
        wanted = EventType.COMPENSATION_STARTED if compensation else EventType.STEP_STARTED
        logged = any(
            e.type is wanted and e.step == ctx.step and e.attempt == ctx.attempt
            for e in self.observer.events(ctx.execution_id)
        )
        return Call(compensation, ctx.step, ctx.attempt, outcome, ctx.key, ctx.action_key, logged)

    def successes(self, *, compensation: bool) -> list[str]:
        return [c.step for c in self.calls if c.compensation is compensation and c.outcome == OK]


@contextmanager
def fresh_log() -> Iterator[str]:
    """A URL of a new SQLite file (function-scoped fixtures do not reset per example)."""
    with tempfile.TemporaryDirectory(prefix="saga-prop-") as tmp:
        yield f"sqlite:///{Path(tmp) / 'saga.db'}?synchronous=OFF"


def no_sleep(seconds: float) -> None:
    return None


@dataclass(frozen=True)
class Finished:
    outcome: Outcome
    events: list[Event]
    record: ExecutionRecord


def run_once(harness: Harness) -> Finished:
    """Run the scenario to rest on a fresh log; return what the runner and the log say."""
    store = open_store(harness.url)
    harness.observer = open_store(harness.url)
    try:
        definition = harness.definition()
        runner = SagaRunner(store, registry(definition), sleep=no_sleep)
        outcome = runner.run(definition, {"case": "property"})
        return Finished(
            outcome, store.events(outcome.execution_id), store.get(outcome.execution_id)
        )
    finally:
        harness.observer.close()
        store.close()


@PROPERTY_SETTINGS
@given(scenario=scenarios())
def test_execution_always_ends_at_rest_as_the_reference_model_says(scenario: Scenario) -> None:
    with fresh_log() as url:
        harness = Harness(scenario, url)
        finished = run_once(harness)
    status, events, record = finished.outcome.status, finished.events, finished.record
    expected = reference_model(scenario)
    assert status in AT_REST
    assert status is expected.status
    assert record.status is status
    assert record.owner is None and record.lease_expires_at is None
    # the log alone rebuilds the runner's final state
    replayed = replay(harness.definition(), events)
    assert replayed.status is status
    assert replayed.error == finished.outcome.error
    assert dict(replayed.results) == dict(finished.outcome.results)
    assert (replayed.error is None) == (status is SagaStatus.COMPLETED)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert events[-1].type in (
        EventType.SAGA_COMPLETED,
        EventType.SAGA_COMPENSATED,
        EventType.SAGA_STUCK,
    )
    # completed iff every step succeeded
    succeeded = harness.successes(compensation=False)
    assert (status is SagaStatus.COMPLETED) == (succeeded == scenario.names)
    assert succeeded == expected.succeeded
    # attempts stay within the budget
    tries = Counter(c.step for c in harness.calls if not c.compensation)
    for name, plan in zip(scenario.names, scenario.steps, strict=True):
        assert tries[name] <= plan.attempts


@PROPERTY_SETTINGS
@given(scenario=scenarios())
def test_compensations_run_in_reverse_once_each_and_never_past_the_pivot(
    scenario: Scenario,
) -> None:
    with fresh_log() as url:
        harness = Harness(scenario, url)
        finished = run_once(harness)
    status, events = finished.outcome.status, finished.events
    succeeded = harness.successes(compensation=False)
    compensated = harness.successes(compensation=True)
    kinds = dict(zip(scenario.names, (p.kind for p in scenario.steps), strict=True))
    undoable = [s for s in reversed(succeeded) if kinds[s] is StepKind.COMPENSATABLE]
    # a compensatable step whose last attempt failed with something other than
    # a business refusal may have taken effect: it is compensated first
    forward = [c for c in harness.calls if not c.compensation]
    if forward and forward[-1].outcome not in (OK, BUSINESS):
        if kinds[forward[-1].step] is StepKind.COMPENSATABLE:
            undoable.insert(0, forward[-1].step)
    # exact reverse order of the compensatable steps that succeeded, possibly
    # cut short by a compensation that gave up (stuck), and nothing else
    assert compensated == undoable[: len(compensated)]
    if status is SagaStatus.COMPENSATED:
        assert compensated == undoable
    if status is SagaStatus.COMPLETED:
        assert not any(c.compensation for c in harness.calls)
    assert all(n <= 1 for n in Counter(compensated).values())
    assert compensation_order(harness.definition(), events) == compensated
    # once a pivot succeeded or a retriable step ran, nothing is compensated
    committed = any(kinds[s] is StepKind.PIVOT for s in succeeded) or any(
        kinds[c.step] is StepKind.RETRIABLE for c in harness.calls if not c.compensation
    )
    if committed:
        assert not any(c.compensation for c in harness.calls)
    # compensation attempts stay within their budget per step
    tries = Counter(c.step for c in harness.calls if c.compensation)
    for name, plan in zip(scenario.names, scenario.steps, strict=True):
        assert tries[name] <= plan.compensation_attempts
    assert compensated == reference_model(scenario).compensated


@PROPERTY_SETTINGS
@given(scenario=scenarios())
def test_every_call_follows_a_durable_started_record_and_uses_stable_keys(
    scenario: Scenario,
) -> None:
    with fresh_log() as url:
        harness = Harness(scenario, url)
        execution_id = run_once(harness).outcome.execution_id
    assert harness.calls, "the first step is always called"
    for call in harness.calls:
        assert call.logged_before, f"{call} ran before its started record was durable"
        assert call.action_key == f"{execution_id}:{call.step}"
        suffix = ":compensate" if call.compensation else ""
        assert call.key == f"{execution_id}:{call.step}{suffix}"


@st.composite
def crash_plans(draw: st.DrawFn) -> tuple[frozenset[int], bool, frozenset[int]]:
    """Calls to crash in, whether after the participant's effect, events to crash after."""
    in_calls = draw(st.frozensets(st.integers(min_value=0, max_value=12), max_size=2))
    after = draw(st.booleans())
    in_events = draw(st.frozensets(st.integers(min_value=0, max_value=25), max_size=2))
    return in_calls, after, in_events


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario=scenarios(), plan=crash_plans())
def test_crash_at_any_point_then_resume_ends_as_if_nothing_had_crashed(
    scenario: Scenario, plan: tuple[frozenset[int], bool, frozenset[int]]
) -> None:
    crash_calls, crash_after, crash_events = plan
    seen_events: list[Event] = []

    def listener(_execution_id: str, event: Event) -> None:
        number = len(seen_events)
        seen_events.append(event)
        if number in crash_events:
            raise Crash

    execution_id = "c0ffee" + "0" * 26
    crashes = 0
    with fresh_log() as url:
        harness = Harness(scenario, url, crash_calls=crash_calls, crash_after=crash_after)
        definition = harness.definition()
        harness.observer = open_store(url)
        try:
            store = open_store(url)
            try:
                runner = SagaRunner(store, registry(definition), on_event=listener, sleep=no_sleep)
                runner.run(definition, {"case": "crash"}, execution_id=execution_id)
            except Crash:
                crashes += 1
            finally:
                store.close()
            # Each "restart" is a new connection and a new runner, as a new process
            # would have; `resume --all` picks up what is not at rest.
            for _ in range(5):
                store = open_store(url)
                try:
                    runner = SagaRunner(
                        store, registry(definition), on_event=listener, sleep=no_sleep
                    )
                    report = runner.resume_all()
                    assert report.busy == []
                    break
                except Crash:
                    crashes += 1
                finally:
                    store.close()
            store = open_store(url)
            try:
                record = store.get(execution_id)
                events = store.events(execution_id)
                assert store.unfinished() == []
            finally:
                store.close()
        finally:
            harness.observer.close()
    expected = reference_model(scenario)
    assert record.status in AT_REST
    assert record.status is expected.status
    assert replay(definition, events).status is record.status
    # the log records each compensation once, in exact reverse order, whatever crashed
    assert compensation_order(definition, events) == expected.compensated
    succeeded = [e.step for e in events if e.type is EventType.STEP_SUCCEEDED]
    assert succeeded == expected.succeeded
    for call in harness.calls:
        assert call.logged_before, f"{call} ran before its started record was durable"
    assert crashes <= len(crash_calls) + len(crash_events)
