"""How much the CLI and the services accept from a user, in one place (README "Limits").

Every file, stream and request body is read through :func:`read_capped` or
:func:`read_stream`, which stop one byte past the cap, so ``/dev/zero`` or an
endless stdin is refused in a moment instead of filling memory; every JSON
document a user hands in goes through :func:`loads`, strict (no ``NaN`` or
``Infinity``) and at most :data:`MAX_JSON_DEPTH` levels deep.
"""

from __future__ import annotations

import json
import math
import re
from typing import IO, Any

from saga_cli.errors import InvalidInputError

MiB = 1024 * 1024
# An execution's payload (--payload, --payload-file, stdin).
MAX_PAYLOAD_BYTES = 8 * MiB
# A --services file, a --config file.
MAX_SETTINGS_BYTES = 1 * MiB
# A request body a `saga serve` service accepts (its bodies are a few dozen bytes).
MAX_REQUEST_BYTES = 64 * 1024
# Nesting of any JSON a user gives (Python's parser recurses: ~1,000 levels crash it).
MAX_JSON_DEPTH = 64
# `saga resolve --note`: kept in the log and shown by `saga show`.
MAX_NOTE_CHARS = 2000
# A `saga list --cursor` token (one is about 60 characters).
MAX_CURSOR_CHARS = 200
# Any duration or age: --deadline, --since, --older-than, --grace, --lease...
MAX_DURATION_SECONDS = 10 * 365 * 86400.0
# C0 and C1 controls except tab and newline, DEL, the bidirectional overrides
# and isolates (they reorder what the eye reads), and lone surrogates (they
# cannot be encoded for a terminal): what a terminal would obey or choke on.
CONTROL_CHARACTERS = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)


def check_note(note: str) -> str:
    """`note` if it is plain text of at most MAX_NOTE_CHARS characters.

    Raises:
        InvalidInputError: empty, too long, or holding control characters
            (escape sequences a terminal would obey when `saga show` prints it).
    """
    if not note.strip():
        raise InvalidInputError("a resolution needs a note saying what was done (--note)")
    if len(note) > MAX_NOTE_CHARS:
        raise InvalidInputError(f"the note is {len(note)} characters; at most {MAX_NOTE_CHARS}")
    if CONTROL_CHARACTERS.search(note):
        raise InvalidInputError("the note holds control characters (escape sequences); plain text")
    return note


def whole(text: str, low: int, high: int) -> int | None:
    """`text` as a whole number from `low` to `high`, or None (never an exception).

    ``str.isdigit`` accepts ``²`` and a 5,000-digit string, on which ``int``
    raises: this accepts ASCII digits only, at most 18 of them.
    """
    if not (text.isascii() and text.isdigit() and len(text) <= 18):
        return None
    number = int(text)
    return number if low <= number <= high else None


def bounded(value: float, low: float, high: float, what: str) -> float:
    """`value` if it is a finite number within [low, high].

    Raises:
        InvalidInputError: NaN, infinite, or out of range (the message names `what`).
    """
    if not (math.isfinite(value) and low <= value <= high):
        raise InvalidInputError(f"{what} must be a number from {low:g} to {high:g} (got {value})")
    return value


def _size(limit: int) -> str:
    return f"{limit // MiB} MiB" if limit >= MiB else f"{limit // 1024} KiB"


def read_stream(stream: IO[bytes] | None, limit: int, what: str) -> bytes:
    """At most `limit` bytes of `stream`, read to its end.

    Raises:
        InvalidInputError: the stream is closed, unreadable, or longer than `limit`.
    """
    if stream is None:
        raise InvalidInputError(f"cannot read {what}: it is closed")
    try:
        data = stream.read(limit + 1)
    except (OSError, ValueError) as exc:  # ValueError: a closed file
        raise InvalidInputError(f"cannot read {what}: {exc}") from None
    if data is None or len(data) > limit:
        raise InvalidInputError(f"{what} is larger than {_size(limit)}")
    return data


def read_capped(path: str, limit: int, what: str) -> str:
    """The UTF-8 text of the file at `path`, at most `limit` bytes (``-``: standard input).

    Raises:
        InvalidInputError: missing, unreadable, not UTF-8, or too large.
    """
    import sys

    if path == "-":
        stdin = sys.stdin
        data = read_stream(getattr(stdin, "buffer", None) if stdin else None, limit, what)
    else:
        try:
            with open(path, "rb") as handle:
                data = read_stream(handle, limit, what)
        except OSError as exc:
            raise InvalidInputError(f"cannot read {what}: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInputError(f"{what} is not UTF-8 text") from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of range for a number")
    return value


def depth(value: Any) -> int:
    """How deeply `value`'s lists and objects nest (0 for a scalar), without recursion."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in item if isinstance(child, dict | list))
    return deepest


def loads(text: str | bytes, what: str) -> Any:
    """`text` parsed as strict JSON: finite numbers only, at most MAX_JSON_DEPTH levels.

    Raises:
        InvalidInputError: not JSON, NaN or Infinity, or nested too deeply.
    """
    try:
        value = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite)
    except RecursionError:
        value = None
        deep = True
    except ValueError as exc:  # JSONDecodeError and our refusals
        raise InvalidInputError(f"{what} is not valid JSON: {exc}") from None
    else:
        deep = depth(value) > MAX_JSON_DEPTH
    if deep:
        raise InvalidInputError(f"{what} nests deeper than {MAX_JSON_DEPTH} levels")
    return value


def finite_json(value: Any) -> Any:
    """`value` with every NaN or infinite float replaced by None (strict JSON output)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite_json(item) for item in value]
    return value


def dumps(value: Any, **options: Any) -> str:
    """`value` as strict JSON (what ``--json`` prints): never NaN or Infinity."""
    try:
        return json.dumps(value, allow_nan=False, **options)
    except ValueError:  # an old log may hold NaN: shown as null
        return json.dumps(finite_json(value), allow_nan=False, **options)
