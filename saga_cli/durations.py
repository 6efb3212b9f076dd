"""Durations as people type them: ``90``, ``1.5s``, ``500ms``, ``2m``, ``1h``."""

from __future__ import annotations

import math
import re

from saga_cli.errors import InvalidInputError

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d)?\s*$")


def parse_duration(text: str) -> float:
    """Seconds in `text`; a bare number means seconds.

    Raises:
        InvalidInputError: not a positive duration.
    """
    match = _PATTERN.match(text)
    if match is None:
        raise InvalidInputError(
            f"{text!r} is not a duration; write e.g. 30s, 500ms, 2m, 1h (a bare number is seconds)"
        )
    seconds = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    if not 0 < seconds < math.inf:
        raise InvalidInputError(f"{text!r}: a duration must be more than zero")
    return seconds
