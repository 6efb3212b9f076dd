"""The dashboard's charts, drawn as inline SVG on the server.

Pure functions from read models (a Timeline, Stats figures) to SVG markup:
no JavaScript, no chart library, nothing to build, and a page's charts are
in its HTML, so a screenshot or a test sees exactly what a person sees. Every
text that comes from the log is escaped here; the result is marked safe for
the templates. Elements carry ``class`` and ``data-*`` attributes saying what
they stand for (a step, an attempt's outcome), which the browser tests read.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from markupsafe import Markup

from saga_cli.durations import format_seconds
from saga_cli.timeline import COMPENSATION, Attempt, StepLine, Timeline

WIDTH = 960
LABEL_WIDTH = 170
RIGHT_PAD = 24
AXIS_HEIGHT = 26


def _svg(height: float, body: list[str], *, label: str, css: str) -> Markup:
    """Wrap `body` in an <svg> that scales to its container's width."""
    return Markup(
        f'<svg class="chart {css}" viewBox="0 0 {WIDTH} {height:.0f}" role="img" '
        f'aria-label="{escape(label)}" xmlns="http://www.w3.org/2000/svg" '
        f'preserveAspectRatio="xMinYMin meet">' + "".join(body) + "</svg>"
    )


def _text(x: float, y: float, text: str, css: str = "", anchor: str = "start") -> str:
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" class="{css}" text-anchor="{anchor}">{escape(text)}</text>'
    )


def _gridline(x: float, bottom: float) -> str:
    """A vertical grid line from under the axis labels down to `bottom`."""
    return (
        f'<line class="grid" x1="{x:.1f}" y1="{AXIS_HEIGHT - 6}" x2="{x:.1f}" y2="{bottom:.1f}"/>'
    )


def nice_step(span: float, most: int = 8) -> float:
    """A tick spacing of 1, 2 or 5 times a power of ten that cuts `span` in at most `most`."""
    if not span > 0:
        return 1.0
    raw = span / most
    power = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 5, 10):
        if factor * power >= raw:
            return float(factor * power)
    return float(10 * power)  # pragma: no cover  # the loop always returns


def _ticks(span: float, most: int = 8) -> list[float]:
    step = nice_step(span, most)
    count = int(span / step + 1e-9)
    return [i * step for i in range(count + 1)]


# -- one execution's timeline --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Axis:
    """Maps times to x coordinates on the plot."""

    start: float
    span: float
    left: float = LABEL_WIDTH
    right: float = WIDTH - RIGHT_PAD

    def x(self, at: float) -> float:
        share = (at - self.start) / self.span if self.span > 0 else 0.0
        return self.left + max(0.0, min(1.0, share)) * (self.right - self.left)


_COMPENSATION_WORDS = {"succeeded": "compensated", "failed": "compensation failed"}


def _attempt_rect(
    attempt: Attempt, axis: _Axis, until: float, y: float, height: float, phase: str
) -> str:
    assert attempt.started_at is not None
    stop = attempt.ended_at if attempt.ended_at is not None else until
    left = axis.x(attempt.started_at)
    width = max(2.0, axis.x(stop) - left)
    outcome = attempt.outcome
    words = _COMPENSATION_WORDS.get(outcome, outcome) if phase == COMPENSATION else outcome
    took = "" if attempt.ended_at is None else f" after {format_seconds(attempt.duration)}"
    tip = f"{attempt.step}: {'compensation ' if phase == COMPENSATION else ''}"
    tip += f"attempt {attempt.number} {words}{took}"
    if attempt.error:
        tip += f": {attempt.error}"
    is_open = " open" if attempt.ended_at is None else ""
    return (
        f'<rect class="attempt {phase} {outcome}{is_open}" x="{left:.1f}" y="{y:.1f}" '
        f'width="{width:.1f}" height="{height:.1f}" rx="2" data-attempt="{attempt.number}" '
        f'data-outcome="{outcome}" data-start="{attempt.started_at:.6f}" '
        f'data-end="{stop:.6f}"><title>{escape(tip)}</title></rect>'
    )


def _row(line: StepLine, axis: _Axis, until: float, y: float, row: float) -> list[str]:
    status = line.status
    if line.phase == COMPENSATION:
        status = _COMPENSATION_WORDS.get(status, status)
    parts = [
        f'<g class="row {line.phase}" data-step="{escape(line.step)}" '
        f'data-phase="{line.phase}" data-status="{escape(status)}">',
        f'<rect class="band" x="0" y="{y:.1f}" width="{WIDTH}" height="{row:.1f}"/>',
        _text(8, y + row * 0.68, line.step, f"label {status.replace(' ', '-')}"),
    ]
    bar = row * 0.64
    for attempt in line.attempts:
        if attempt.started_at is not None:
            parts.append(_attempt_rect(attempt, axis, until, y + (row - bar) / 2, bar, line.phase))
    parts.append("</g>")
    return parts


def timeline_chart(timeline: Timeline, *, until: float | None = None) -> Markup:
    """The execution as a Gantt chart: forward steps, then compensations, on one time axis.

    Each step (and each compensation) has its own row, and each attempt is a
    bar where it ran, coloured by its outcome, so the steps of a parallel
    group overlap in time and a retried step shows every try.

    Args:
        timeline: the execution laid out by saga_cli.timeline.build.
        until: where the time axis ends (default: the execution's last
            record); an attempt still running is drawn up to it.
    """
    start = timeline.started_at or 0.0
    end = max(until or 0.0, timeline.ended_at or start)
    axis = _Axis(start, end - start)
    lines = len(timeline.forward) + len(timeline.compensation)
    row = 22.0 if lines <= 24 else 16.0
    heading = 20.0
    sections = 1 + bool(timeline.compensation)
    height = AXIS_HEIGHT + sections * heading + lines * row + 8
    body: list[str] = []
    for offset in _ticks(axis.span):
        x = axis.x(start + offset)
        body.append(_gridline(x, height))
        body.append(_text(x, 14, format_seconds(offset) if offset else "0", "tick", "middle"))
    y = float(AXIS_HEIGHT)
    for title, steps in (
        ("forward", timeline.forward),
        ("compensation (reverse order)", timeline.compensation),
    ):
        if not steps:
            continue
        body.append(_text(4, y + 14, title, "section"))
        y += heading
        for line in steps:
            body += _row(line, axis, end, y, row)
            y += row
    total = f"timeline of {len(timeline.forward)} steps over {format_seconds(axis.span) or '0 s'}"
    return _svg(height, body, label=total, css="timeline")


# -- statistics -------------------------------------------------------------------------


def _clock(at: float, span: float) -> str:
    moment = dt.datetime.fromtimestamp(at, dt.UTC)
    return moment.strftime("%H:%M" if span <= 86400 else "%m-%d %H:%M")


def columns(counts: Sequence[int], since: float, until: float, *, label: str) -> Markup:
    """Counts per equal slice of [since, until) as columns (executions started over time)."""
    height, top, bottom = 180.0, 14.0, 26.0
    left, right = 60.0, WIDTH - RIGHT_PAD
    plot = height - top - bottom
    most = max(counts, default=0)
    scale = nice_step(most, 4) * math.ceil(most / nice_step(most, 4)) if most else 1.0
    body: list[str] = []
    for value in _ticks(scale, 4):
        y = top + plot - value / scale * plot
        body.append(f'<line class="grid" x1="{left}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}"/>')
        body.append(_text(left - 6, y + 4, f"{value:,.0f}", "tick", "end"))
    slot = (right - left) / max(len(counts), 1)
    span = until - since
    width = span / max(len(counts), 1)
    for i, count in enumerate(counts):
        bar = count / scale * plot
        begin = since + i * width
        tip = f"{count:,} started {_clock(begin, span)}-{_clock(begin + width, span)} UTC"
        body.append(
            f'<rect class="column" x="{left + i * slot + 1:.1f}" y="{top + plot - bar:.1f}" '
            f'width="{max(slot - 2, 1):.1f}" height="{bar:.1f}" data-count="{count}">'
            f"<title>{escape(tip)}</title></rect>"
        )
    for share, anchor in ((0.0, "start"), (0.5, "middle"), (1.0, "end")):
        moment = _clock(since + share * span, span)
        body.append(_text(left + share * (right - left), height - 8, moment, "tick", anchor))
    return _svg(height, body, label=label, css="columns")


@dataclass(frozen=True, slots=True)
class Bar:
    """One labelled bar of a horizontal bar chart."""

    label: str
    value: float
    text: str
    css: str = ""


def bars(rows: Sequence[Bar], *, label: str, scale: float | None = None) -> Markup:
    """Horizontal bars, one row each, with the value's text at the bar's end."""
    row = 24.0
    height = row * len(rows) + 8
    left, right = LABEL_WIDTH, WIDTH - RIGHT_PAD - 90
    most = scale if scale is not None else max((r.value for r in rows), default=0.0)
    body: list[str] = []
    for i, item in enumerate(rows):
        y = 4 + i * row
        length = 0.0 if most <= 0 else item.value / most * (right - left)
        body.append(
            f'<g class="bar-row" data-label="{escape(item.label)}" data-value="{item.value:g}">'
        )
        body.append(_text(left - 8, y + row * 0.66, item.label, "label", "end"))
        body.append(
            f'<rect class="bar {item.css}" x="{left}" y="{y + 4:.1f}" '
            f'width="{max(length, 1.0 if item.value else 0.0):.1f}" height="{row - 8:.1f}" rx="2">'
            f"<title>{escape(f'{item.label}: {item.text}')}</title></rect>"
        )
        body.append(_text(left + length + 6, y + row * 0.66, item.text, "value"))
        body.append("</g>")
    return _svg(height, body, label=label, css="bars")


@dataclass(frozen=True, slots=True)
class Percentiles:
    """One step's p50, p95 and p99 durations (None when it has no finished attempt)."""

    step: str
    p50: float | None
    p95: float | None
    p99: float | None


def percentiles(rows: Sequence[Percentiles], *, label: str) -> Markup:
    """Per step, three bars (p50, p95, p99 durations) on one shared seconds axis."""
    group = 46.0
    height = AXIS_HEIGHT + group * len(rows) + 8
    left, right = LABEL_WIDTH, WIDTH - RIGHT_PAD - 90
    most = max((v for r in rows for v in (r.p50, r.p95, r.p99) if v is not None), default=0.0)
    axis = _Axis(0.0, most, left, right)
    body: list[str] = []
    for tick in _ticks(most, 6) if most else []:
        x = axis.x(tick)
        body.append(_gridline(x, height))
        body.append(_text(x, 14, format_seconds(tick) if tick else "0", "tick", "middle"))
    for i, item in enumerate(rows):
        y = AXIS_HEIGHT + i * group
        body.append(f'<g class="step-durations" data-step="{escape(item.step)}">')
        body.append(_text(left - 8, y + group / 2 + 4, item.step, "label", "end"))
        quantiles = (("p50", item.p50), ("p95", item.p95), ("p99", item.p99))
        for j, (name, value) in enumerate(quantiles):
            if value is None:
                continue
            bar_y = y + 4 + j * 13
            width = max(1.0, axis.x(value) - left)
            body.append(
                f'<rect class="bar {name}" x="{left}" y="{bar_y:.1f}" width="{width:.1f}" '
                f'height="11" rx="2" data-quantile="{name}" data-seconds="{value:.6f}">'
                f"<title>{escape(f'{item.step} {name}: {format_seconds(value)}')}</title></rect>"
            )
            words = f"{name} {format_seconds(value)}"
            body.append(_text(left + width + 6, bar_y + 10, words, "value small"))
        body.append("</g>")
    return _svg(height, body, label=label, css="percentiles")


def shares(parts: Sequence[Bar], *, label: str) -> Markup:
    """One bar split into the shares of a whole (completed, compensated, stuck)."""
    height = 34.0
    total = sum(p.value for p in parts)
    body: list[str] = []
    x = 0.0
    for part in parts:
        width = 0.0 if total <= 0 else part.value / total * WIDTH
        if width <= 0:
            continue
        body.append(
            f'<rect class="share {part.css}" x="{x:.1f}" y="0" width="{width:.1f}" '
            f'height="{height}" data-label="{escape(part.label)}" data-value="{part.value:g}">'
            f"<title>{escape(f'{part.label}: {part.text}')}</title></rect>"
        )
        if width > 90:
            body.append(_text(x + 8, 22, f"{part.label} {part.text}", "on-bar"))
        x += width
    if total <= 0:
        body.append(f'<rect class="share empty" x="0" y="0" width="{WIDTH}" height="{height}"/>')
        body.append(_text(8, 22, "nothing finished in this window", "on-bar"))
    return _svg(height, body, label=label, css="shares")
