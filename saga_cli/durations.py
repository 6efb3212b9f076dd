"""Durations as people type them (``90``, ``1.5s``, ``500ms``, ``2m``, ``1h``) and read them."""

from __future__ import annotations

import math
import re

from saga_cli.errors import InvalidInputError
from saga_cli.limits import MAX_DURATION_SECONDS

# The earliest and latest instants a filter may name: 1970 to 9999 (datetime's range).
_EARLIEST, _LATEST = 0.0, 253402300799.0

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d)?\s*$")


def parse_duration(text: str) -> float:
    """Seconds in `text`; a bare number means seconds; at most ten years.

    Raises:
        InvalidInputError: not a positive duration, or longer than ten years.
    """
    match = _PATTERN.match(text) if len(text) <= 100 else None
    if match is None:
        raise InvalidInputError(
            f"{text[:100]!r} is not a duration; write e.g. 30s, 500ms, 2m, 1h "
            "(a bare number is seconds)"
        )
    seconds = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    if not 0 < seconds < math.inf:
        raise InvalidInputError(f"{text!r}: a duration must be more than zero")
    if seconds > MAX_DURATION_SECONDS:
        raise InvalidInputError(f"{text!r}: a duration must be at most ten years (3650d)")
    return seconds


def parse_instant(text: str, now: float) -> float:
    """A point in time: a duration ago (``1h``, ``7d``) or an ISO 8601 date or time.

    A date or time without a zone is UTC: ``2026-11-27``, ``2026-11-27T10:30``,
    ``2026-11-27 10:30:00+01:00``.

    Returns:
        Seconds since the epoch.

    Raises:
        InvalidInputError: neither a duration nor an ISO 8601 time from 1970 to 9999.
    """
    if len(text) <= 100 and _PATTERN.match(text) is not None:
        return max(_EARLIEST, now - parse_duration(text))
    import datetime as dt

    try:
        moment = dt.datetime.fromisoformat(text.strip())
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.UTC)
        instant = moment.timestamp()
    except (ValueError, OverflowError):
        raise InvalidInputError(
            f"{text[:100]!r} is neither a duration (30m, 1h, 7d) nor an ISO date (2026-11-27T10:30)"
        ) from None
    if not _EARLIEST <= instant <= _LATEST:
        raise InvalidInputError(f"{text[:100]!r}: give a time from 1970 to 9999")
    return instant


def format_seconds(value: float | None) -> str:
    """A duration for people: 840 µs, 12.3 ms, 4.56 s, 3.2 min (blank when unknown).

    The terminal tables and the web dashboard print durations the same way.
    """
    if value is None:
        return ""
    if value < 0.001:
        return f"{value * 1e6:.0f} µs"
    if value < 1:
        return f"{value * 1000:.1f} ms"
    if value < 120:
        return f"{value:.2f} s"
    return f"{value / 60:.1f} min"


def format_window(seconds: float) -> str:
    """A window as it is typed when whole (``1h``, ``30m``, ``7d``), else as a duration."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size:.0f}{unit}"
    return format_seconds(seconds)
