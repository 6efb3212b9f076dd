"""The input limits (saga_cli.limits), the terminal's text and the options' number bounds."""

from __future__ import annotations

import io
import json
import math
from typing import Any

import pytest
import typer
from hypothesis import given
from hypothesis import strategies as st

from saga_cli.cli import app
from saga_cli.cli.options import Finite
from saga_cli.durations import parse_duration, parse_instant
from saga_cli.errors import InvalidInputError
from saga_cli.limits import (
    MAX_JSON_DEPTH,
    check_note,
    depth,
    dumps,
    loads,
    read_capped,
    read_stream,
)
from saga_cli.redact import mask, remember
from saga_cli.terminal import error_line, printable


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('{"x": NaN}', "NaN is not a JSON number"),
        ('{"x": -Infinity}', "-Infinity is not a JSON number"),
        ('{"x": 1e999}', "out of range"),
        ("[" * 100_000 + "]" * 100_000, "nests deeper"),
        ('{"a":' * 65 + "1" + "}" * 65, "nests deeper"),
        ("{", "not valid JSON"),
    ],
)
def test_json_in_is_strict_and_shallow(text: str, fragment: str) -> None:
    with pytest.raises(InvalidInputError, match=fragment):
        loads(text, "the payload")


def test_json_at_the_depth_limit_is_accepted() -> None:
    nested = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH
    assert depth(loads(nested, "x")) == MAX_JSON_DEPTH


@given(st.recursive(st.floats() | st.text(), lambda kids: st.lists(kids, max_size=3)))
def test_json_out_is_always_strict(value: object) -> None:
    text = dumps({"v": value})
    json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} printed"))


def test_streams_are_read_up_to_the_cap_and_no_further() -> None:
    assert read_stream(io.BytesIO(b"x" * 10), 10, "it") == b"x" * 10
    with pytest.raises(InvalidInputError, match="larger than"):
        read_stream(io.BytesIO(b"x" * 11), 10, "it")
    with pytest.raises(InvalidInputError, match="closed"):
        read_stream(None, 10, "stdin")
    with pytest.raises(InvalidInputError, match="larger than 1 KiB"):
        read_capped("/dev/zero", 1024, "/dev/zero")
    with pytest.raises(InvalidInputError, match="cannot read"):
        read_capped("/no/such/file", 1024, "it")


@pytest.mark.parametrize(
    "note", ["", "  \n", "x" * 2001, "ok \x1b[2J", "bell\x07", "rtl \u202e", "half \ud800"]
)
def test_a_note_is_plain_bounded_text(note: str) -> None:
    with pytest.raises(InvalidInputError):
        check_note(note)


def test_text_for_a_terminal_has_no_control_characters_and_one_line_errors() -> None:
    assert printable("a\x1b[31mb\x07c\u202ed\ud800") == "a?[31mb?c?d?"
    line = error_line("first\nsecond\x1b]0;title\x07" + "x" * 5000)
    assert "\n" not in line and "\x1b" not in line and len(line) <= 1010


def test_remembered_secrets_are_masked_wherever_they_appear() -> None:
    remember("postgresql://u:Zq9#secret@h/db?sslpassword=Other%2Fsecret")
    text = mask("libpq said Zq9#secret and Other/secret, at http://x:y@h:1/ with password=p")
    assert "secret" not in text and "x:y@" not in text and "password=p" not in text


@pytest.mark.parametrize(
    "text", ["1000000d", "3651d", "0s", "-1s", "nan", "inf", "9" * 400 + "s", "x" * 10_000]
)
def test_durations_are_positive_and_at_most_ten_years(text: str) -> None:
    with pytest.raises(InvalidInputError):
        parse_duration(text)
    assert parse_duration("3650d") == 3650 * 86400


@pytest.mark.parametrize("text", ["0001-01-01", "1969-12-31T23:59", "10000-01-01", "1000000d"])
def test_instants_are_between_1970_and_9999(text: str) -> None:
    with pytest.raises(InvalidInputError):
        parse_instant(text, now=1.8e9)


def _numeric_options() -> list[tuple[str, Any]]:
    found = []

    def visit(command: Any, path: str) -> None:
        for param in command.params:
            if getattr(param, "count", False) or param.name in ("help",):
                continue
            kind = type(param.type).__name__
            if kind in ("IntParamType", "IntRange", "FloatParamType", "FloatRange"):
                found.append((f"{path} --{param.name}", param))
            elif kind == "FuncParamType" and isinstance(param.type.func, Finite):
                found.append((f"{path} --{param.name}", param))
        for name, sub in getattr(command, "commands", {}).items():
            visit(sub, f"{path} {name}")

    visit(typer.main.get_command(app), "saga")
    return found


def test_every_number_option_is_finite_and_bounded_on_both_sides() -> None:
    """The principle, checked on the whole command tree: no option takes nan, inf or 10**100."""
    options = _numeric_options()
    assert len(options) > 15
    for name, param in options:
        kind = param.type
        if type(kind).__name__ == "FuncParamType":
            bounds = (kind.func.low, kind.func.high)
        else:
            assert type(kind).__name__ == "IntRange", f"{name} is an unbounded {kind}"
            bounds = (kind.min, kind.max)
        assert None not in bounds and all(math.isfinite(b) for b in bounds), name
