"""The charts as SVG documents: well formed, every step and attempt where its time puts it."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from saga_cli.domain import Event, EventType
from saga_cli.timeline import build
from saga_cli.ui import svg

NS = {"s": "http://www.w3.org/2000/svg"}


def parse(markup: str) -> ET.Element:
    return ET.fromstring(markup)  # raises on markup that is not well-formed XML


def events_of_fifty(fail_at: int | None = None) -> list[Event]:
    """A 50-step execution: steps one after another, 20-22 together, optionally failing."""
    events = [Event(1, EventType.SAGA_STARTED, at=0.0)]
    clock = 0.0

    def add(kind: EventType, step: str, at: float) -> None:
        events.append(Event(len(events) + 1, kind, step=step, attempt=1, at=at))

    done: list[str] = []
    for number in range(1, 51):
        name = f"s{number:02d}"
        if number in (21, 22):
            continue  # started with 20
        if number == 20:
            for member in ("s20", "s21", "s22"):
                add(EventType.STEP_STARTED, member, clock)
            for offset, member in enumerate(("s22", "s20", "s21")):
                add(EventType.STEP_SUCCEEDED, member, clock + 0.01 + offset * 0.001)
            done += ["s20", "s21", "s22"]
            clock += 0.02
            continue
        add(EventType.STEP_STARTED, name, clock)
        if number == fail_at:
            add(EventType.STEP_FAILED, name, clock + 0.01)
            clock += 0.01
            for back in reversed(done):
                add(EventType.COMPENSATION_STARTED, back, clock)
                add(EventType.COMPENSATION_SUCCEEDED, back, clock + 0.002)
                clock += 0.003
            return events
        add(EventType.STEP_SUCCEEDED, name, clock + 0.01)
        done.append(name)
        clock += 0.012
    return events


def bars_by_step(root: ET.Element, phase: str) -> dict[str, list[ET.Element]]:
    rows = root.findall(f".//s:g[@data-phase='{phase}']", NS)
    return {str(r.get("data-step")): r.findall("s:rect[@data-outcome]", NS) for r in rows}


def test_a_50_step_timeline_has_a_row_and_a_bar_per_step_inside_the_chart() -> None:
    names = [f"s{n:02d}" for n in range(1, 51)]
    root = parse(svg.timeline_chart(build(events_of_fifty(), names)))

    width, height = (float(v) for v in str(root.get("viewBox")).split()[2:])
    rows = bars_by_step(root, "forward")
    assert list(rows) == names
    lefts = []
    for name, (bar,) in rows.items():
        x, w = float(bar.get("x") or -1), float(bar.get("width") or -1)
        y, h = float(bar.get("y") or -1), float(bar.get("height") or -1)
        assert svg.LABEL_WIDTH <= x and x + w <= width - svg.RIGHT_PAD + 0.1, name
        assert 0 < y and y + h <= height, name
        lefts.append(x)
    assert lefts[19] == lefts[20] == lefts[21]  # the parallel three start together
    assert lefts[:20] == sorted(lefts[:20]) and lefts[22:] == sorted(lefts[22:])
    tops = [float(bars[0].get("y") or 0) for bars in rows.values()]
    assert tops == sorted(tops) and len(set(tops)) == 50


def test_compensations_come_after_the_forward_path_in_the_order_they_ran() -> None:
    names = [f"s{n:02d}" for n in range(1, 51)]
    root = parse(svg.timeline_chart(build(events_of_fifty(fail_at=30), names)))

    forward = bars_by_step(root, "forward")
    back = bars_by_step(root, "compensation")
    assert [b.get("data-outcome") for b in forward["s30"]] == ["failed"]
    assert forward["s31"] == []  # never ran: a row without a bar
    assert list(back)[0] == "s29" and list(back)[-1] == "s01" and len(back) == 29
    failed_end = float(forward["s30"][0].get("x") or 0) + float(forward["s30"][0].get("width") or 0)
    assert all(float(b[0].get("x") or 0) >= failed_end - 0.1 for b in back.values())
    lowest_forward = max(float(b[0].get("y") or 0) for b in forward.values() if b)
    assert all(float(b[0].get("y") or 0) > lowest_forward for b in back.values())


def test_a_running_attempt_is_drawn_open_up_to_the_axis_end() -> None:
    events = [
        Event(1, EventType.SAGA_STARTED, at=100.0),
        Event(2, EventType.STEP_STARTED, step="a", attempt=1, at=100.0),
    ]
    root = parse(svg.timeline_chart(build(events, ["a", "b"]), until=110.0))

    (bar,) = bars_by_step(root, "forward")["a"]
    assert "open" in str(bar.get("class")) and bar.get("data-outcome") == "running"
    assert float(bar.get("data-end") or 0) == pytest.approx(110.0)
    assert float(bar.get("x") or 0) + float(bar.get("width") or 0) == pytest.approx(
        svg.WIDTH - svg.RIGHT_PAD
    )


def test_text_from_the_log_is_escaped() -> None:
    events = [
        Event(1, EventType.SAGA_STARTED, at=0.0),
        Event(2, EventType.STEP_STARTED, step="<b>&", attempt=1, at=0.0),
        Event(3, EventType.STEP_FAILED, step="<b>&", attempt=1, at=1.0, detail={"error": "<x>"}),
    ]
    markup = str(svg.timeline_chart(build(events)))

    assert "<b>" not in markup and "<x>" not in markup
    root = parse(markup)
    assert root.find(".//s:g[@data-step='<b>&']", NS) is not None
    assert "<x>" in "".join(root.itertext())


def test_an_empty_timeline_still_draws() -> None:
    root = parse(svg.timeline_chart(build([])))
    assert root.tag == "{http://www.w3.org/2000/svg}svg"


@pytest.mark.parametrize(
    ("span", "step"),
    [(0.0, 1.0), (0.007, 0.001), (1.0, 0.2), (7.3, 1.0), (95.0, 20.0), (3600.0, 500.0)],
)
def test_ticks_are_round_and_at_most_eight(span: float, step: float) -> None:
    assert svg.nice_step(span) == pytest.approx(step)
    assert span / svg.nice_step(span) <= 8


def test_the_statistics_charts_are_well_formed_and_proportional() -> None:
    columns = parse(svg.columns([0, 3, 6, 0], 0.0, 3600.0, label="started"))
    heights = [float(r.get("height") or 0) for r in columns.findall(".//s:rect", NS)]
    assert heights[0] == 0 and heights[2] == pytest.approx(2 * heights[1])

    bars = parse(
        svg.bars([svg.Bar("a", 0.5, "50%"), svg.Bar("b", 0.25, "25%")], label="x", scale=1.0)
    )
    widths = [float(r.get("width") or 0) for r in bars.findall(".//s:rect", NS)]
    assert widths[0] == pytest.approx(2 * widths[1])

    shares = parse(
        svg.shares([svg.Bar("completed", 3, "3"), svg.Bar("stuck", 1, "1")], label="ended")
    )
    parts = [float(r.get("width") or 0) for r in shares.findall(".//s:rect", NS)]
    assert parts == pytest.approx([svg.WIDTH * 0.75, svg.WIDTH * 0.25])
    empty = parse(svg.shares([svg.Bar("completed", 0, "0")], label="ended"))
    assert "nothing finished" in "".join(empty.itertext())

    timings = parse(
        svg.percentiles(
            [svg.Percentiles("a", 0.1, 0.2, 0.4), svg.Percentiles("b", None, None, None)], label="d"
        )
    )
    quantiles = [float(r.get("width") or 0) for r in timings.findall(".//s:rect", NS)]
    assert len(quantiles) == 3 and quantiles[2] == pytest.approx(4 * quantiles[0], rel=0.01)
