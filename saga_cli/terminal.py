"""Text that reaches a terminal: no control characters, no secrets, bounded length.

A note, a step name, an error message or a payload may hold escape
sequences (ESC, CSI, OSC), which a terminal would obey: they could retitle
the window, hide lines or fake output. Everything the CLI prints from the log
or from an exception goes through :func:`printable` (tables through
:class:`SafeConsole`), and every ``Error:`` line through :func:`error_line`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from saga_cli.limits import CONTROL_CHARACTERS as _CONTROLS
from saga_cli.redact import mask

if TYPE_CHECKING:
    from rich.console import Console

_LINE_BREAKS = re.compile(r"[\t\n]+")
# An Error: line is one line of at most this many characters.
MAX_ERROR_CHARS = 1000


def printable(text: str, *, one_line: bool = False, limit: int | None = None) -> str:
    """`text` without control characters (each becomes ``?``), optionally one bounded line."""
    text = _CONTROLS.sub("?", text)
    if one_line:
        text = _LINE_BREAKS.sub(" ", text)
    if limit is not None and len(text) > limit:
        text = text[: limit - 1] + "…"
    return text


def error_line(message: object) -> str:
    """``Error: message`` as one printable line without secrets."""
    return "Error: " + printable(mask(str(message)), one_line=True, limit=MAX_ERROR_CHARS)


def _clean_segments(segments: Iterable[Any]) -> Iterable[Any]:
    from rich.segment import Segment

    for segment in segments:
        if segment.control or not _CONTROLS.search(segment.text):
            yield segment
        else:
            yield Segment(printable(segment.text), segment.style)


def console_class() -> type[Console]:
    """A rich Console whose output holds no control characters but rich's own styles.

    Tables show what the log holds (notes, step names, errors, payloads);
    cleaning the rendered segments covers every table at once.
    """
    from rich.console import Console

    class SafeConsole(Console):
        def _render_buffer(self, buffer: Iterable[Any]) -> str:
            return mask(super()._render_buffer(_clean_segments(buffer)))

    return SafeConsole


def log_formatter() -> Any:
    """The logging formatter of ``-v``: each record masked and free of control characters."""
    import logging

    class SafeFormatter(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            return printable(mask(super().format(record)))

    return SafeFormatter("%(levelname)s %(name)s: %(message)s")
