"""Rich rendering of library results. Never touches the database.

Colour comes from rich's own detection, so ``NO_COLOR`` is honoured and output
piped to a file has no escape codes; for the width, see :func:`console`.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import textwrap
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from saga_cli.domain import Event, EventType, SagaStatus
from saga_cli.durations import format_seconds, format_window
from saga_cli.views import detail_line

if TYPE_CHECKING:  # types only: `saga list` must not pay for importing the engine
    from saga_cli.booking import SimulationReport
    from saga_cli.engine import Outcome, RecoveryReport
    from saga_cli.faults import FaultOption
    from saga_cli.services.travel import AuditReport, InventoryRow
    from saga_cli.stats import Stats
    from saga_cli.store import AlertRecord, ExecutionRecord
    from saga_cli.timeline import Attempt, StepLine, Timeline
    from saga_cli.views import ExecutionView, FailureView
    from saga_cli.watch import Snapshot
    from saga_cli.worker import WorkerView

STATUS_STYLE = {
    SagaStatus.PENDING: "dim",
    SagaStatus.RUNNING: "cyan",
    SagaStatus.COMPENSATING: "yellow",
    SagaStatus.COMPLETED: "green",
    SagaStatus.COMPENSATED: "magenta",
    SagaStatus.STUCK: "bold red",
}

EVENT_LINE = {
    EventType.SAGA_STARTED: ("•", "saga started", "dim"),
    EventType.SAGA_RESUMED: ("↻", "resumed from the log", "cyan"),
    EventType.STEP_STARTED: ("→", "started", "dim"),
    EventType.STEP_SUCCEEDED: ("✓", "succeeded", "green"),
    EventType.STEP_FAILED: ("✗", "failed", "red"),
    EventType.COMPENSATION_REQUESTED: ("↩", "compensation requested", "yellow"),
    EventType.COMPENSATION_STARTED: ("↩", "compensating", "dim"),
    EventType.COMPENSATION_SUCCEEDED: ("↩", "compensated", "magenta"),
    EventType.COMPENSATION_FAILED: ("✗", "compensation failed", "red"),
    EventType.SAGA_COMPLETED: ("✓", "saga completed", "bold green"),
    EventType.SAGA_COMPENSATED: ("✗", "saga compensated", "bold magenta"),
    EventType.SAGA_STUCK: ("!", "saga stuck: needs attention", "bold red"),
    EventType.SAGA_RESOLVED: ("✓", "resolved by hand", "bold"),
}


PIPED_WIDTH = 1000


def console(*, stderr: bool = False) -> Console:
    """A console on stdout (or stderr) as wide as the terminal, or as ``COLUMNS`` says.

    Output piped to a file or another program has no terminal to fit: rich
    would wrap it at 80 columns, cutting long saga names and errors in two for
    whoever greps it, so it gets PIPED_WIDTH columns instead (a table stays as
    narrow as its cells).
    """
    width = None
    stream = sys.stderr if stderr else sys.stdout
    if not os.environ.get("COLUMNS", "").isdigit() and not stream.isatty():
        width = PIPED_WIDTH
    from saga_cli.terminal import console_class

    return console_class()(stderr=stderr, highlight=False, width=width)


def _count(number: int, noun: str) -> str:
    """``1 execution``, ``2 executions``."""
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _time(at: float | None) -> str:
    if at is None:
        return ""
    return dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _status(status: SagaStatus, interrupted: bool = False) -> Text:
    text = Text(status.value, style=STATUS_STYLE[status])
    if interrupted:
        text.append(" (interrupted)", style="bold yellow")
    return text


def event_line(console: Console, execution_id: str, event: Event) -> None:
    """Print one durable event as a progress line (``saga book``)."""
    if event.type is EventType.STEP_STARTED and event.attempt <= 1:
        return  # the outcome line follows at once; keep the display short
    if event.type is EventType.COMPENSATION_STARTED and event.attempt <= 1:
        return
    mark, words, style = EVENT_LINE[event.type]
    step = f"{event.step:<8} " if event.step else ""
    attempt = f" (attempt {event.attempt})" if event.attempt > 1 else ""
    extra = detail_line(event)
    line = Text(f"  {mark} ", style=style)
    line.append(f"{step}{words}{attempt}")
    if extra:
        line.append(f"  {extra}", style="dim")
    console.print(line)


def outcome(console: Console, result: Outcome) -> None:
    """Print the one-line result of a saga."""
    line = Text(f"{result.execution_id}  ")
    line.append_text(_status(result.status))
    if result.error and result.status is not SagaStatus.COMPLETED:
        line.append(f"  ({result.error})", style="dim")
    console.print(line)


def executions(console: Console, rows: Sequence[tuple[ExecutionRecord, bool]]) -> None:
    """Print ``saga list``."""
    if not rows:
        console.print("No executions match.")
        return
    table = Table(title="Saga executions (newest first)")
    table.add_column("id", no_wrap=True)
    table.add_column("saga", min_width=6, overflow="fold")
    table.add_column("status", min_width=9)
    table.add_column("step", min_width=4, overflow="fold")
    table.add_column("created (UTC)", no_wrap=True)
    for record, interrupted in rows:
        table.add_row(
            record.id[:12],
            record.saga,
            _status(record.status, interrupted),
            record.step or "",
            _time(record.created_at),
        )
    console.print(table)


def execution(console: Console, view: ExecutionView) -> None:
    """Print ``saga show``: the timeline, then the transition log."""
    record = view.record
    header = Text(f"{record.id}  {record.saga}  ")
    header.append_text(_status(record.status, view.interrupted))
    console.print(header)
    console.print(f"payload: {record.payload}", style="dim", markup=False, highlight=False)
    timeline(console, view.timeline)
    failures(console, view.failures)
    log = Table(title="Transition log")
    for column in ("seq", "time (UTC)", "step", "event", "attempt", "detail"):
        log.add_column(column)
    for event in view.events:
        log.add_row(
            str(event.seq),
            _time(event.at) + f".{int(event.at * 1000) % 1000:03d}",
            event.step or "",
            event.type.value,
            str(event.attempt or ""),
            detail_line(event),
        )
    console.print(log)


def failures(console: Console, found: Sequence[FailureView]) -> None:
    """Each unexpected failure's exception and the user's frames of its traceback."""
    for failure in found:
        where = "compensation of " if failure.phase == "compensation" else ""
        title = Text(f"{where}{failure.step}, attempt {failure.attempt}: ", style="bold red")
        title.append(f"{failure.exception}: {failure.error}", style="red")
        console.print(title)
        console.print(Text(textwrap.indent(failure.traceback, "  "), style="dim"), soft_wrap=True)


def definitions(console: Console, rows: Sequence[Mapping[str, Any]]) -> None:
    """The known sagas, one table each: steps in order with kind, retries and timeout."""
    if not rows:
        console.print("No sagas known: pass --load MODULE_OR_FILE.")
        return
    for row in rows:
        # The title and the source are lines of their own, not the table's title and
        # caption: those wrap at the table's width, and a saga's name is often wider.
        title = f"{row['saga']}  (version {row['version']}"
        title += ")" if row["loaded"] else ", from the log; not loaded)"
        console.print(Text(title, style="table.title"))
        table = Table()
        steps = row["steps"]
        # Columns that say nothing for this saga are left out, to fit a terminal.
        grouped = any(step["group"] for step in steps)
        timed = any(step.get("timeout") is not None for step in steps)
        columns = ["#", "step", "kind", *(["group"] if grouped else []), "attempts"]
        columns += ["compensation", *(["timeout"] if timed else [])]
        for column in columns:
            table.add_column(column)
        for number, step in enumerate(steps, 1):
            retry = step.get("retry")
            undo = step.get("compensation_retry")
            cells = [str(number), step["name"], step["kind"]]
            if grouped:
                cells.append(step["group"] or "")
            cells.append("" if retry is None else _attempts(retry))
            if undo is not None:
                cells.append(f"yes ({_attempts(undo)})")
            else:
                cells.append("yes" if step.get("compensation") else "")
            if timed:
                cells.append("" if step.get("timeout") is None else f"{step['timeout']:g}s")
            table.add_row(*cells)
        console.print(table)
        if row["source"]:
            console.print(Text(f"  {row['source']}", style="table.caption"))
        extras = []
        if row.get("payload"):
            extras.append(f"payload model: {row['payload']}")
        if row.get("concurrency_key"):
            extras.append("one execution at a time per concurrency key")
        if row.get("description"):
            extras.insert(0, row["description"])
        if not row["loaded"] and any("retry" in step for step in steps):
            extras.append("attempts as the log recorded them for this version's first execution")
        for line in extras:
            console.print(f"  {line}")


def _attempts(policy: Mapping[str, Any]) -> str:
    """``4 × 0.02s↑2``: attempts, then the first backoff and its growth."""
    attempts = int(policy["max_attempts"])
    if attempts == 1:
        return "1"
    return f"{attempts} × {policy['initial_delay']:g}s↑{policy['multiplier']:g}"


def simulation(console: Console, report: SimulationReport) -> None:
    """Print the summary table of ``saga simulate``."""
    table = Table(title=f"Simulation: {report.count} bookings in {report.seconds:.2f} s")
    table.add_column("outcome")
    table.add_column("count", justify="right")
    table.add_row(Text("completed", style="green"), str(report.completed))
    table.add_row(Text("compensated", style="magenta"), str(report.compensated))
    table.add_row(Text("stuck", style="red"), str(report.stuck))
    table.add_row("interrupted", str(report.interrupted))
    for step, count in sorted(report.failures.items()):
        table.add_row(f"failures at {step}", str(count))
    for step, count in sorted(report.released.items()):
        table.add_row(f"{step} reservations released", str(count))
    console.print(table)


def faults(console: Console, options: Sequence[FaultOption]) -> None:
    """Print ``saga faults``."""
    table = Table(title="Failure injection")
    table.add_column("option", no_wrap=True)
    table.add_column("commands", no_wrap=True)
    table.add_column("what it does")
    for option in options:
        table.add_row(option.option, option.commands, option.effect)
    console.print(table)


def inventory(console: Console, rows: Sequence[InventoryRow]) -> None:
    """Print ``saga inventory``."""
    table = Table(title="Inventory")
    table.add_column("service")
    table.add_column("resource")
    table.add_column("name", no_wrap=True, max_width=24, overflow="ellipsis")
    for column in ("capacity", "available", "pending", "confirmed"):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(
            row.service,
            row.resource,
            row.name,
            str(row.capacity),
            Text(str(row.available), style="red" if row.available == 0 else ""),
            str(row.pending),
            str(row.confirmed),
        )
    console.print(table)


def audit(console: Console, report: AuditReport) -> None:
    """Print ``saga check``."""
    if report.consistent:
        line = Text("consistent", style="green")
        line.append(f": {_count(report.executions, 'execution')}")
        if report.reservations:  # a log of the user's sagas only has no service records
            line.append(f", {_count(report.reservations, 'service record')}, capacity conserved")
        console.print(line)
        return
    console.print(f"[bold red]{len(report.violations)} violation(s)[/]")
    for violation in report.violations:
        console.print(f"  - {violation}", markup=False)


def recovery(console: Console, report: RecoveryReport) -> None:
    """Print the summary of ``saga resume --all``."""
    counts: dict[str, int] = {}
    for result in report.outcomes:
        counts[result.status.value] = counts.get(result.status.value, 0) + 1
    parts = ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "nothing"
    console.print(f"Resumed {len(report.outcomes)} execution(s): {parts}.")
    if report.busy:
        console.print(f"Skipped {len(report.busy)} owned by a live process.")
    for execution_id, reason in sorted(report.failed.items()):
        console.print(f"Could not resume {execution_id}: {reason}", markup=False)


def workers(console: Console, views: Sequence[WorkerView]) -> None:
    """Print ``saga workers``."""
    if not views:
        console.print("No workers registered.")
        return
    table = Table("worker", "state", "last seen (UTC)", "K", "sagas", "executions")
    for view in views:
        record = view.record
        held = view.executions
        shown = ", ".join(i[:8] for i in held[:4]) + (f" +{len(held) - 4}" if len(held) > 4 else "")
        table.add_row(
            record.id,
            view.state,
            f"{_time(record.heartbeat_at)} ({view.age:.1f}s ago)",
            str(record.concurrency),
            "all loaded" if record.sagas is None else ", ".join(record.sagas),
            f"{len(held)}: {shown}" if held else "0",
        )
    console.print(table)


BREAKER_STYLE = {"closed": "green", "open": "bold red", "half_open": "yellow"}


def services(console: Console, rows: Sequence[Mapping[str, Any]]) -> None:
    """Print ``saga services``: the breakers as a table, then each last error on its own line.

    An error is free text of any length: in a column it would squeeze the
    table into slivers on an 80-column terminal, so it goes below the table.
    """
    table = Table(title="Services")
    table.add_column("service", no_wrap=True)
    table.add_column("breaker", no_wrap=True)
    table.add_column("failures", justify="right", no_wrap=True)
    table.add_column("since (UTC)", no_wrap=True)
    table.add_column("capacity", justify="right", no_wrap=True)
    table.add_column("free", justify="right", no_wrap=True)
    for row in rows:
        table.add_row(
            row["service"],
            Text(row["breaker"], style=BREAKER_STYLE[row["breaker"]]),
            str(row["consecutive_failures"]),
            _time(row["updated_at"]),
            "" if row["capacity"] is None else str(row["capacity"]),
            "" if row["available"] is None else str(row["available"]),
        )
    console.print(table)
    for row in rows:
        if row["last_error"]:
            line = Text(f"{row['service']}: last error: ", style="bold")
            line.append(str(row["last_error"]), style="")
            console.print(line)


BAR_WIDTH = 32
OUTCOME_STYLE = {
    "succeeded": "green",
    "failed": "red",
    "retrying": "yellow",
    "running": "cyan",
    "not run": "dim",
}
OUTCOME_MARK = {"succeeded": "✓", "failed": "✗", "retrying": "↻", "running": "→", "not run": "·"}


def _bar(attempts: Sequence[Attempt], start: float, span: float, end: float) -> Text:
    """A Gantt bar: each attempt drawn where it ran, coloured by its outcome."""
    cells = [(" ", "")] * BAR_WIDTH
    for attempt in attempts:
        if attempt.started_at is None:
            continue
        stop = attempt.ended_at if attempt.ended_at is not None else end
        first = min(BAR_WIDTH - 1, int((attempt.started_at - start) / span * BAR_WIDTH))
        last = max(first + 1, min(BAR_WIDTH, round((stop - start) / span * BAR_WIDTH)))
        for cell in range(first, last):
            cells[cell] = ("█", OUTCOME_STYLE[attempt.outcome])
    bar = Text("│", style="dim")
    for char, style in cells:
        bar.append(char, style=style)
    bar.append("│", style="dim")
    return bar


def _timeline_line(line: StepLine, start: float, span: float, end: float) -> Text:
    compensating = line.phase == "compensation"
    status = line.status
    words = {"succeeded": "compensated", "failed": "compensation failed"}.get(status, status)
    mark = "↩" if compensating and status == "succeeded" else OUTCOME_MARK[status]
    text = Text(f"{mark} ", style=OUTCOME_STYLE[status])
    text.append(f"{line.step:<10} ")
    text.append(f"{words if compensating else status:<20}", style=OUTCOME_STYLE[status])
    count = len(line.attempts)
    text.append(f"{count} attempt{'s' if count != 1 else ' '}  " if count else " " * 12)
    text.append(f"{format_seconds(line.duration):>9}  ")
    if line.attempts:
        text.append_text(_bar(line.attempts, start, span, end))
    if line.error:
        text.append(f"  {line.error}", style="dim")
    return text


def timeline(console: Console, steps: Timeline) -> None:
    """Print an execution as a saga is drawn: forward path, then compensations in reverse."""
    start = steps.started_at or 0.0
    end = steps.ended_at or start
    span = max(end - start, 1e-9)
    tree = Tree(Text(f"timeline  {format_seconds(end - start)}", style="bold"), guide_style="dim")
    forward = tree.add(Text("forward", style="bold"))
    for line in steps.forward:
        forward.add(_timeline_line(line, start, span, end))
    if steps.compensation:
        back = tree.add(Text("compensation (reverse order)", style="bold yellow"))
        for line in steps.compensation:
            back.add(_timeline_line(line, start, span, end))
    console.print(tree)


SPARKS = "▁▂▃▄▅▆▇█"


def sparkline(counts: Sequence[int]) -> str:
    """One character per count, scaled to the largest (blank when it is zero)."""
    top = max(counts, default=0)
    if top == 0:
        return " " * len(counts)
    return "".join(" " if n == 0 else SPARKS[min(7, n * 8 // (top + 1))] for n in counts)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _stats_header(stats: Stats) -> Text:
    window = format_window(stats.until - stats.since)
    title = f"Sagas created in the last {window} (since {_time(stats.since)} UTC)"
    header = Text(title + (f", saga {stats.saga}" if stats.saga else ""), style="bold")
    header.append(
        f"\n  executions {stats.total:,}   finished {stats.finished:,}   "
        f"throughput {stats.throughput:.3g}/s"
    )
    header.append(f"\n  completed {_percent(stats.rate(SagaStatus.COMPLETED))}", style="green")
    header.append(f"   compensated {_percent(stats.rate(SagaStatus.COMPENSATED))}", style="magenta")
    header.append(f"   stuck {_percent(stats.rate(SagaStatus.STUCK))}", style="red")
    alarm = "bold red" if stats.stuck_now else ""
    header.append(f"\n  now: stuck {stats.stuck_now:,}", style=alarm)
    header.append(
        "   " + "   ".join(f"{state} {count:,}" for state, count in stats.in_flight.items())
    )
    header.append(f"\n  started  |{sparkline(stats.started)}|", style="cyan")
    return header


def stats(console: Console, figures: Stats) -> None:
    """Print ``saga stats``: rates and counts, per-step figures, a duration histogram."""
    from saga_cli.stats import quantile

    console.print(_stats_header(figures))
    table = Table(title=f"Steps (newest {figures.sampled:,} executions of the window)")
    for column in ("step", "attempts", "failure rate", "p50", "p95", "p99", "compensations"):
        table.add_column(column, justify="left" if column == "step" else "right")
    for step in figures.steps:
        table.add_row(
            step.step,
            f"{step.attempts:,}",
            _percent(step.failure_rate),
            *(format_seconds(quantile(step.durations, q)) for q in (0.5, 0.95, 0.99)),
            f"{step.compensations:,}",
        )
    console.print(table)
    histogram = [(bound, n) for bound, n in figures.duration_histogram() if n]
    if not histogram:
        return
    console.print(Text("Saga durations", style="bold"))
    top = max(n for _, n in histogram)
    for bound, count in histogram:
        label = "longer" if bound == float("inf") else f"≤ {format_seconds(bound)}"
        bar = "█" * max(1, round(count / top * 40))
        console.print(Text(f"  {label:>10} ").append(bar, style="cyan").append(f" {count:,}"))


def watch_view(snapshot: Snapshot) -> RenderableType:
    """What ``saga watch`` redraws: the counters, then the executions in flight."""
    counts = Text(f"saga watch  {_time(snapshot.at)} UTC   ", style="bold")
    for status, count in snapshot.statuses.items():
        counts.append(f"{status.value} {count:,}  ", style=STATUS_STYLE[status])
    counts.append(f"(created in the last {format_window(snapshot.window)})", style="dim")
    flight = Text("in flight: ")
    flight.append("   ".join(f"{k} {v:,}" for k, v in snapshot.in_flight.items()))
    alarm = "bold red" if snapshot.stuck_now else ""
    flight.append(f"   stuck {snapshot.stuck_now:,}", style=alarm)
    flight.append(f"\nstarted |{sparkline(snapshot.started)}|", style="cyan")
    table = Table(title=f"Executions in flight (newest {len(snapshot.rows)})")
    for column in ("id", "saga", "status", "step", "age"):
        table.add_column(column, no_wrap=True)
    for record, interrupted in snapshot.rows:
        table.add_row(
            record.id[:12],
            record.saga,
            _status(record.status, interrupted),
            record.step or "",
            format_seconds(snapshot.at - record.created_at),
        )
    return Group(counts, flight, table)


def alerts(console: Console, found: Sequence[AlertRecord]) -> None:
    """Print ``saga alerts``: each alert and how far its delivery got."""
    if not found:
        console.print("No alerts.")
        return
    table = Table(title="Alerts (newest first)")
    for column in ("at (UTC)", "kind", "execution", "saga", "step", "error", "delivery"):
        table.add_column(column, overflow="fold")
    for alert in found:
        if alert.delivered_at is not None:
            delivery = Text(f"delivered to {', '.join(alert.delivered_to)}", style="green")
        elif alert.attempts:
            delivery = Text(f"retrying ({alert.attempts}): {alert.last_error}", style="red")
        else:
            delivery = Text("pending", style="yellow")
        table.add_row(
            _time(alert.created_at),
            alert.kind,
            alert.execution_id[:12],
            alert.saga,
            alert.step or "",
            Text(alert.error or ""),
            delivery,
        )
    console.print(table)
