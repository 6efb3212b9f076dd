"""The pure state machine: apply, replay, decide and forward_only, without a database."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from saga_cli.domain import (
    ALLOWED_TRANSITIONS,
    TERMINAL_STATUSES,
    Abort,
    Calls,
    Event,
    EventType,
    Finish,
    Halt,
    Rest,
    RunCompensation,
    RunStep,
    SagaDefinition,
    SagaState,
    SagaStatus,
    Step,
    StepContext,
    StepKind,
    apply,
    compensation_order,
    decide,
    forward_only,
    is_terminal,
    replay,
)
from saga_cli.errors import IllegalTransitionError

E = EventType


def noop(ctx: StepContext) -> Any:
    return None


def undo(ctx: StepContext) -> Any:
    return None


def definition(kinds: str) -> SagaDefinition:
    """Steps s0, s1, … of the given kinds: c compensatable, p pivot, r retriable."""
    steps = []
    for i, k in enumerate(kinds):
        if k == "c":
            steps.append(Step(f"s{i}", noop, undo))
        else:
            kind = StepKind.PIVOT if k == "p" else StepKind.RETRIABLE
            steps.append(Step(f"s{i}", noop, kind=kind))
    return SagaDefinition("test", tuple(steps))


class Log:
    """Builds an event list with consecutive sequence numbers."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def add(self, kind: EventType, step: str | None = None, attempt: int = 0, **detail: Any) -> Log:
        self.events.append(
            Event(len(self.events) + 1, kind, step, attempt, detail or None, at=float(len(self)))
        )
        return self

    def ok(self, step: str, attempt: int = 1, result: Any = None) -> Log:
        self.add(E.STEP_STARTED, step, attempt)
        return self.add(E.STEP_SUCCEEDED, step, attempt, result=result)

    def comp_ok(self, step: str, attempt: int = 1) -> Log:
        self.add(E.COMPENSATION_STARTED, step, attempt)
        return self.add(E.COMPENSATION_SUCCEEDED, step, attempt)

    def __len__(self) -> int:
        return len(self.events)


def started() -> Log:
    return Log().add(E.SAGA_STARTED)


# -- statuses ------------------------------------------------------------------------


def test_completed_and_compensated_are_the_only_terminal_statuses() -> None:
    assert TERMINAL_STATUSES == {SagaStatus.COMPLETED, SagaStatus.COMPENSATED}
    for status in SagaStatus:
        assert is_terminal(status) == (status in TERMINAL_STATUSES)
        assert is_terminal(status.value) == (status in TERMINAL_STATUSES)
        assert (not ALLOWED_TRANSITIONS[status]) == (status in TERMINAL_STATUSES)


def test_stuck_goes_back_to_running_or_compensating_or_is_resolved_by_hand() -> None:
    assert ALLOWED_TRANSITIONS[SagaStatus.STUCK] == {
        SagaStatus.RUNNING,
        SagaStatus.COMPENSATING,
        SagaStatus.COMPENSATED,  # `saga resolve` of a saga stuck compensating
        SagaStatus.COMPLETED,  # `saga resolve` of a saga stuck past its pivot
    }


# -- the success path ------------------------------------------------------------------


def test_success_path_runs_each_step_once_in_order_then_completes() -> None:
    d = definition("ccpr")
    state = apply(d, SagaState(), Event(1, E.SAGA_STARTED))
    assert state.status is SagaStatus.PENDING
    assert decide(d, state) == Calls((RunStep(0, 1, record=True),))
    seq = 2
    for index, name in enumerate(d.step_names):
        state = apply(d, state, Event(seq, E.STEP_STARTED, name, 1))
        assert state.status is SagaStatus.RUNNING
        assert state.in_flight == ((False, index, 1),)
        assert state.current_step == index
        # started but no outcome: the call is repeated without a new record
        assert decide(d, state) == Calls((RunStep(index, 1, record=False),))
        state = apply(d, state, Event(seq + 1, E.STEP_SUCCEEDED, name, 1, {"result": index * 10}))
        assert state.in_flight == ()
        seq += 2
        if index + 1 < len(d.steps):
            assert decide(d, state) == Calls((RunStep(index + 1, 1, record=True),))
    assert decide(d, state) == Finish(E.SAGA_COMPLETED)
    state = apply(d, state, Event(seq, E.SAGA_COMPLETED))
    assert state.status is SagaStatus.COMPLETED
    assert state.succeeded == (0, 1, 2, 3)
    assert dict(state.results) == {"s0": 0, "s1": 10, "s2": 20, "s3": 30}
    assert state.next_seq == seq + 1
    assert decide(d, state) == Rest()


def test_replay_equals_applying_the_events_one_by_one() -> None:
    d = definition("ccr")
    log = started().ok("s0", result={"a": 1}).ok("s1").add(E.STEP_STARTED, "s2", 1)
    state = SagaState()
    for event in log.events:
        state = apply(d, state, event)
    assert replay(d, log.events) == state
    assert replay(d, []) == SagaState()


# -- failure and compensation --------------------------------------------------------------


def test_failure_compensates_the_succeeded_steps_in_reverse() -> None:
    d = definition("cccr")
    log = started().ok("s0").ok("s1").add(E.STEP_STARTED, "s2", 1)
    log.add(E.STEP_FAILED, "s2", 1, error="no cars")
    state = replay(d, log.events)
    assert state.status is SagaStatus.COMPENSATING
    assert state.error == "no cars"
    assert state.applied == (0, 1)
    assert decide(d, state) == Calls((RunCompensation(1, 1, record=True),))
    log.comp_ok("s1")
    state = replay(d, log.events)
    assert state.compensated == (1,)
    assert decide(d, state) == Calls((RunCompensation(0, 1, record=True),))
    log.comp_ok("s0")
    state = replay(d, log.events)
    assert decide(d, state) == Finish(E.SAGA_COMPENSATED)
    log.add(E.SAGA_COMPENSATED)
    state = replay(d, log.events)
    assert state.status is SagaStatus.COMPENSATED
    assert decide(d, state) == Rest()
    assert compensation_order(d, log.events) == ["s1", "s0"]


def test_failure_of_the_first_step_compensates_nothing() -> None:
    d = definition("cc")
    log = started().add(E.STEP_STARTED, "s0", 1).add(E.STEP_FAILED, "s0", 1, error="x")
    state = replay(d, log.events)
    assert state.status is SagaStatus.COMPENSATING
    assert decide(d, state) == Finish(E.SAGA_COMPENSATED)


def test_failed_pivot_compensates_the_steps_before_it() -> None:
    d = definition("ccpr")
    log = started().ok("s0").ok("s1").add(E.STEP_STARTED, "s2", 1)
    log.add(E.STEP_FAILED, "s2", 1, error="declined")
    state = replay(d, log.events)
    assert state.status is SagaStatus.COMPENSATING
    assert decide(d, state) == Calls((RunCompensation(1, 1, record=True),))


def test_failed_attempt_with_retry_at_schedules_the_next_attempt() -> None:
    d = definition("cc")
    log = started().ok("s0").add(E.STEP_STARTED, "s1", 1)
    log.add(E.STEP_FAILED, "s1", 1, error="timeout", retry_at=42.5)
    state = replay(d, log.events)
    assert state.status is SagaStatus.RUNNING
    assert state.retry == ((False, 1, 2, 42.5),)
    assert state.current_step == 1
    assert decide(d, state) == Calls((RunStep(1, 2, record=True, not_before=42.5),))
    log.add(E.STEP_STARTED, "s1", 2)
    state = replay(d, log.events)
    assert state.retry == ()
    assert decide(d, state) == Calls((RunStep(1, 2, record=False),))


def test_failed_compensation_is_retried_with_the_next_attempt() -> None:
    d = definition("ccc")
    log = started().ok("s0").ok("s1").add(E.STEP_STARTED, "s2", 1)
    log.add(E.STEP_FAILED, "s2", 1, error="x")
    log.add(E.COMPENSATION_STARTED, "s1", 1)
    log.add(E.COMPENSATION_FAILED, "s1", 1, error="down", retry_at=7.0)
    state = replay(d, log.events)
    assert state.status is SagaStatus.COMPENSATING
    assert state.retry == ((True, 1, 2, 7.0),)
    assert decide(d, state) == Calls((RunCompensation(1, 2, record=True, not_before=7.0),))
    log.comp_ok("s1", attempt=2)
    state = replay(d, log.events)
    assert state.compensated == (1,)
    assert decide(d, state) == Calls((RunCompensation(0, 1, record=True),))


def test_exhausted_compensation_leaves_the_saga_stuck() -> None:
    d = definition("ccc")
    log = started().ok("s0").ok("s1").add(E.STEP_STARTED, "s2", 1)
    log.add(E.STEP_FAILED, "s2", 1, error="x")
    log.add(E.COMPENSATION_STARTED, "s1", 1)
    log.add(E.COMPENSATION_FAILED, "s1", 1, error="down")
    log.add(E.SAGA_STUCK, "s1", 1, error="compensation 's1' gave up")
    state = replay(d, log.events)
    assert state.status is SagaStatus.STUCK
    assert state.error == "compensation 's1' gave up"
    assert state.retry == () and state.in_flight == ()
    assert decide(d, state) == Rest()
    assert not is_terminal(state.status)


def test_resuming_a_saga_stuck_in_compensation_goes_backward() -> None:
    d = definition("ccc")
    log = started().ok("s0").ok("s1").add(E.STEP_STARTED, "s2", 1)
    log.add(E.STEP_FAILED, "s2", 1, error="x")
    log.comp_ok("s1")
    log.add(E.COMPENSATION_STARTED, "s0", 1).add(E.COMPENSATION_FAILED, "s0", 1, error="down")
    log.add(E.SAGA_STUCK, "s0", 1, error="gave up")
    log.add(E.SAGA_RESUMED)
    state = replay(d, log.events)
    assert state.status is SagaStatus.COMPENSATING
    # s1 was already compensated; only s0 is left
    assert decide(d, state) == Calls((RunCompensation(0, 1, record=True),))


def test_resuming_a_saga_stuck_past_its_pivot_goes_forward() -> None:
    d = definition("cpr")
    log = started().ok("s0").ok("s1").add(E.STEP_STARTED, "s2", 1)
    log.add(E.STEP_FAILED, "s2", 1, error="mail server down")
    state = replay(d, log.events)
    # forward-only: a failed step past the pivot does not start compensation
    assert state.status is SagaStatus.RUNNING
    log.add(E.SAGA_STUCK, "s2", 1, error="gave up")
    assert replay(d, log.events).status is SagaStatus.STUCK
    log.add(E.SAGA_RESUMED)
    state = replay(d, log.events)
    assert state.status is SagaStatus.RUNNING
    assert decide(d, state) == Calls((RunStep(2, 1, record=True),))


def test_resumed_event_on_a_running_saga_changes_nothing_but_the_sequence() -> None:
    d = definition("cc")
    log = started().ok("s0").add(E.STEP_STARTED, "s1", 1)
    before = replay(d, log.events)
    log.add(E.SAGA_RESUMED)
    after = replay(d, log.events)
    assert after.next_seq == before.next_seq + 1
    assert after.status is before.status and after.in_flight == before.in_flight
    assert decide(d, after) == Calls((RunStep(1, 1, record=False),))


# -- compensation requested by an operator ----------------------------------------------------


def test_compensation_requested_with_a_step_in_flight_compensates_it_too() -> None:
    d = definition("cccr")
    log = started().ok("s0").ok("s1").add(E.STEP_STARTED, "s2", 1)
    log.add(E.COMPENSATION_REQUESTED, reason="operator")
    state = replay(d, log.events)
    assert state.status is SagaStatus.COMPENSATING
    assert state.in_flight == ()
    assert state.applied == (0, 1, 2)
    assert state.error == "operator"
    assert decide(d, state) == Calls((RunCompensation(2, 1, record=True),))
    log.comp_ok("s2")
    assert decide(d, replay(d, log.events)) == Calls((RunCompensation(1, 1, record=True),))
    log.comp_ok("s1").comp_ok("s0")
    assert decide(d, replay(d, log.events)) == Finish(E.SAGA_COMPENSATED)
    assert compensation_order(d, log.events) == ["s2", "s1", "s0"]


def test_compensation_requested_during_a_retry_wait_skips_the_failed_step() -> None:
    d = definition("cc")
    log = started().ok("s0").add(E.STEP_STARTED, "s1", 1)
    log.add(E.STEP_FAILED, "s1", 1, error="timeout", retry_at=99.0)
    log.add(E.COMPENSATION_REQUESTED)
    state = replay(d, log.events)
    assert state.retry == ()
    assert state.applied == (0,)
    assert decide(d, state) == Calls((RunCompensation(0, 1, record=True),))


def test_compensation_requested_of_a_pending_saga_compensates_nothing() -> None:
    d = definition("cc")
    state = replay(d, started().add(E.COMPENSATION_REQUESTED).events)
    assert state.status is SagaStatus.COMPENSATING
    assert decide(d, state) == Finish(E.SAGA_COMPENSATED)
    state = apply(d, state, Event(state.next_seq, E.SAGA_COMPENSATED))
    assert state.status is SagaStatus.COMPENSATED


def test_compensation_requested_while_the_pivot_is_in_flight_is_illegal() -> None:
    # The pivot's outcome is unknown: it may have committed, and it cannot be
    # compensated, so undoing the steps before it could strand its effect.
    d = definition("cpr")
    log = started().ok("s0").add(E.STEP_STARTED, "s1", 1)
    with pytest.raises(IllegalTransitionError):
        apply(d, replay(d, log.events), Event(99, E.COMPENSATION_REQUESTED))


# -- illegal transitions ------------------------------------------------------------------------


def _completed(log: Log) -> Log:
    return log.ok("s0").ok("s1").ok("s2").add(E.SAGA_COMPLETED)


def _compensating(log: Log) -> Log:
    return log.ok("s0").add(E.STEP_STARTED, "s1", 1).add(E.STEP_FAILED, "s1", 1, error="x")


ILLEGAL: list[tuple[str, str, Log, Event]] = [
    (
        "completed-while-compensating",
        "ccr",
        _compensating(started()),
        Event(99, E.SAGA_COMPLETED),
    ),
    (
        "step-started-while-compensating",
        "ccr",
        _compensating(started()),
        Event(99, E.STEP_STARTED, "s1", 2),
    ),
    ("step-started-after-completed", "ccr", _completed(started()), Event(99, E.STEP_STARTED, "s2")),
    (
        "compensation-started-after-completed",
        "ccr",
        _completed(started()),
        Event(99, E.COMPENSATION_STARTED, "s0", 1),
    ),
    ("compensated-after-completed", "ccr", _completed(started()), Event(99, E.SAGA_COMPENSATED)),
    ("stuck-while-pending", "ccr", started(), Event(99, E.SAGA_STUCK)),
    ("completed-while-pending", "ccr", started(), Event(99, E.SAGA_COMPLETED)),
    ("unknown-step", "ccr", started(), Event(99, E.STEP_STARTED, "nope", 1)),
    (
        "compensation-requested-after-pivot",
        "cpr",
        started().ok("s0").ok("s1"),
        Event(99, E.COMPENSATION_REQUESTED),
    ),
    (
        "compensation-requested-before-retriable",
        "ccr",
        started().ok("s0").ok("s1"),
        Event(99, E.COMPENSATION_REQUESTED),
    ),
    (
        "compensation-requested-during-retriable",
        "cr",
        started().ok("s0").add(E.STEP_STARTED, "s1", 1),
        Event(99, E.COMPENSATION_REQUESTED),
    ),
]


@pytest.mark.parametrize(
    ("kinds", "log", "event"), [pytest.param(k, lg, ev, id=i) for i, k, lg, ev in ILLEGAL]
)
def test_illegal_transition_raises(kinds: str, log: Log, event: Event) -> None:
    d = definition(kinds)
    state = replay(d, log.events)
    with pytest.raises(IllegalTransitionError):
        apply(d, state, event)


# Outcomes must answer the call that is in flight; anything else is a corrupt
# or foreign log, which apply() promises to refuse rather than fold silently.
NOT_IN_FLIGHT: list[tuple[str, Log, Event]] = [
    ("step-succeeded-with-nothing-in-flight", started(), Event(99, E.STEP_SUCCEEDED, "s0", 1)),
    (
        "step-succeeded-for-another-step",
        started().add(E.STEP_STARTED, "s0", 1),
        Event(99, E.STEP_SUCCEEDED, "s1", 1),
    ),
    (
        "compensation-succeeded-while-a-step-is-in-flight",
        started().ok("s0").add(E.STEP_STARTED, "s1", 1),
        Event(99, E.COMPENSATION_SUCCEEDED, "s0", 1),
    ),
    ("step-succeeded-after-completed", _completed(started()), Event(99, E.STEP_SUCCEEDED, "s2")),
]


@pytest.mark.parametrize(
    ("log", "event"), [pytest.param(lg, ev, id=i) for i, lg, ev in NOT_IN_FLIGHT]
)
def test_outcome_of_a_call_that_is_not_in_flight_is_illegal(log: Log, event: Event) -> None:
    d = definition("ccr")
    state = replay(d, log.events)
    with pytest.raises(IllegalTransitionError):
        apply(d, state, event)


# -- forward_only ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kinds", "succeeded", "expected"),
    [
        pytest.param("ccpr", 0, False, id="nothing-done"),
        pytest.param("ccpr", 2, False, id="next-is-the-pivot"),
        pytest.param("ccpr", 3, True, id="pivot-succeeded"),
        pytest.param("ccpr", 4, True, id="all-done"),
        pytest.param("ccp", 3, True, id="pivot-last-succeeded"),
        pytest.param("cr", 0, False, id="first-compensatable-pending"),
        pytest.param("cr", 1, True, id="next-is-retriable"),
        pytest.param("rr", 0, True, id="only-retriables"),
        pytest.param("p", 0, False, id="pivot-not-yet-run"),
        pytest.param("cc", 2, False, id="compensatables-all-succeeded"),
    ],
)
def test_forward_only_once_the_pivot_succeeded_or_a_retriable_step_is_next(
    kinds: str, succeeded: int, expected: bool
) -> None:
    d = definition(kinds)
    log = started()
    for name in d.step_names[:succeeded]:
        log.ok(name)
    assert forward_only(d, replay(d, log.events)) is expected


def test_failed_retriable_step_does_not_compensate() -> None:
    d = definition("cr")
    log = started().ok("s0").add(E.STEP_STARTED, "s1", 1).add(E.STEP_FAILED, "s1", 1, error="x")
    state = replay(d, log.events)
    assert state.status is SagaStatus.RUNNING
    assert state.error == "x"
    assert state.compensated == ()


# -- a pure model of the runner: any failing step k ----------------------------------------------


def _simulate(d: SagaDefinition, failing: int) -> tuple[SagaState, list[Event]]:
    """Drive decide/apply the way the runner does; step `failing` fails once, for good."""
    events: list[Event] = []

    def add(state: SagaState, kind: EventType, step: str | None = None, **detail: Any) -> SagaState:
        event = Event(state.next_seq, kind, step, 1, detail or None)
        events.append(event)
        return apply(d, state, event)

    state = add(SagaState(), E.SAGA_STARTED)
    for _ in range(100):
        decision = decide(d, state)
        if isinstance(decision, Rest):
            return state, events
        if isinstance(decision, Finish):
            state = add(state, decision.event)
        elif isinstance(decision, Halt):
            state = add(state, E.SAGA_STUCK, error=decision.error)
        else:
            assert isinstance(decision, Calls)  # no deadline here, so no Abort
            (call,) = decision.calls
            name = d.steps[call.index].name
            if isinstance(call, RunStep):
                state = add(state, E.STEP_STARTED, name)
                if call.index == failing:
                    state = add(state, E.STEP_FAILED, name, error="boom")
                else:
                    state = add(state, E.STEP_SUCCEEDED, name)
            else:
                state = add(state, E.COMPENSATION_STARTED, name)
                state = add(state, E.COMPENSATION_SUCCEEDED, name)
    raise AssertionError("the state machine did not come to rest")


@st.composite
def shapes(draw: st.DrawFn) -> str:
    size = draw(st.integers(min_value=1, max_value=7))
    comps = draw(st.integers(min_value=0, max_value=size))
    pivots = draw(st.integers(min_value=0, max_value=min(1, size - comps)))
    return "c" * comps + "p" * pivots + "r" * (size - comps - pivots)


@given(kinds=shapes(), data=st.data())
def test_for_any_failing_step_exactly_the_steps_before_it_are_compensated_in_reverse(
    kinds: str, data: st.DataObject
) -> None:
    d = definition(kinds)
    failing = data.draw(st.integers(min_value=0, max_value=len(kinds)), label="failing")
    state, events = _simulate(d, failing)
    assert replay(d, events) == state
    if failing == len(kinds):  # nothing fails
        assert state.status is SagaStatus.COMPLETED
        assert compensation_order(d, events) == []
        return
    before = kinds[:failing]
    if "p" in before or kinds[failing] == "r":
        # past the point of no return: nothing is undone, the saga waits for help
        assert state.status is SagaStatus.STUCK
        assert compensation_order(d, events) == []
    else:
        assert state.status is SagaStatus.COMPENSATED
        assert compensation_order(d, events) == [f"s{i}" for i in reversed(range(failing))]


# -- deadlines -------------------------------------------------------------------------


def test_a_passed_deadline_turns_a_running_saga_back_between_steps() -> None:
    d = definition("ccpr")
    log = Log().add(E.SAGA_STARTED, deadline_at=100.0).add(E.STEP_STARTED, "s0", 1)
    log.add(E.STEP_SUCCEEDED, "s0", 1)
    state = replay(d, log.events)
    assert state.deadline == 100.0
    assert decide(d, state, now=99.0) == Calls((RunStep(1, 1, record=True),))
    assert decide(d, state, now=101.0) == Abort("the saga's deadline passed")


def test_a_passed_deadline_does_not_touch_a_saga_past_its_pivot_or_compensating() -> None:
    d = definition("cpr")
    paid = Log().add(E.SAGA_STARTED, deadline_at=100.0)
    for step in ("s0", "s1"):
        paid.add(E.STEP_STARTED, step, 1).add(E.STEP_SUCCEEDED, step, 1)
    assert decide(d, replay(d, paid.events), now=500.0) == Calls((RunStep(2, 1, record=True),))
    failing = Log().add(E.SAGA_STARTED, deadline_at=100.0).add(E.STEP_STARTED, "s0", 1)
    failing.add(E.STEP_SUCCEEDED, "s0", 1).add(E.STEP_STARTED, "s1", 1)
    failing.add(E.STEP_FAILED, "s1", 1, error="declined")
    assert decide(d, replay(d, failing.events), now=500.0) == Calls(
        (RunCompensation(0, 1, record=True),)
    )
    in_pivot = Log().add(E.SAGA_STARTED, deadline_at=100.0).add(E.STEP_STARTED, "s0", 1)
    in_pivot.add(E.STEP_SUCCEEDED, "s0", 1).add(E.STEP_STARTED, "s1", 1)
    # the pivot's outcome is unknown: resume must learn it, not turn back
    assert decide(d, replay(d, in_pivot.events), now=500.0) == Calls((RunStep(1, 1, record=False),))
