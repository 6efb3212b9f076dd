"""How the dashboard writes times, ages and shares (durations: saga_cli.durations)."""

from __future__ import annotations

import datetime as dt
import time


def utc(at: float | None) -> str:
    """An epoch time as ``2026-11-27 21:24:02`` (UTC, as the CLI prints it)."""
    if at is None:
        return ""
    return dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def utc_ms(at: float | None) -> str:
    """:func:`utc` with milliseconds, for the event log."""
    if at is None:
        return ""
    return utc(at) + f".{int(at * 1000) % 1000:03d}"


def ago(at: float | None, now: float | None = None) -> str:
    """How long ago `at` was, in its largest whole unit: ``42 s ago``, ``3 min ago``."""
    if at is None:
        return ""
    seconds = max(0.0, (time.time() if now is None else now) - at)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit} ago"
    return f"{int(seconds)} s ago"


def percent(share: float | None) -> str:
    """A share as ``12.5%``, or ``-`` when there is nothing to share."""
    return "-" if share is None else f"{share * 100:.1f}%"
