"""One configuration file for an operator: ``saga.toml``, read with the standard library's tomllib.

It holds the defaults of the options an operator would otherwise repeat
(the log, the services, the worker's options) and what only a file can say
well: where alerts go and how traces are exported. Options on the command
line and environment variables still win over it::

    db = "postgresql+psycopg://saga@db.internal:5432/saga"
    services = "http://127.0.0.1:8001,http://127.0.0.1:8002,http://127.0.0.1:8003"

    [worker]
    concurrency = 16
    lease = 30

    [alerts]
    compensation_failures = 3

    [[alerts.webhook]]
    name = "slack"
    url = "https://hooks.slack.com/services/T000/B000/XXXX"

    [tracing]
    exporter = "otlp"

The file is ``--config PATH``, else ``SAGA_CONFIG``, else ``./saga.toml``
when it exists; no file means the built-in defaults.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from saga_cli.errors import InvalidInputError

DEFAULT_FILE = "saga.toml"
# The largest configuration file read: anything bigger is not one.
MAX_BYTES = 1_000_000

# Top-level keys: options given before the command name, and options that
# several commands take (each gets it as its default).
GLOBAL_OPTIONS = {"db": str, "load": list, "step_timeout": str}
COMMAND_OPTIONS = {"services": str, "service_timeout": float}
WORKER_OPTIONS = {
    "concurrency": int,
    "saga": list,
    "lease": float,
    "poll": float,
    "grace": str,
    "exit_when_idle": bool,
    "http_port": int,
    "http_host": str,
    "prune_after": str,
    "max_outage": str,
}
TABLES = ("worker", "alerts", "tracing")


@dataclass(frozen=True, slots=True)
class Config:
    """What a configuration file says (everything is optional).

    Attributes:
        path: the file read, or None (no file: the defaults).
        options: defaults of the options before the command name (db, load, step_timeout).
        command_options: defaults of options several commands take (services, service_timeout).
        worker: defaults of ``saga worker``'s options.
        alerts: when alerts are written and where they go.
        tracing: how traces are exported; None: no traces.
    """

    path: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    command_options: Mapping[str, Any] = field(default_factory=dict)
    worker: Mapping[str, Any] = field(default_factory=dict)
    alerts: Any = None  # AlertSettings, imported lazily (see load_config)
    tracing: Any = None  # TracingSettings or None


def find_config(given: str | None, cwd: str | None = None) -> str | None:
    """The file to read: `given` (--config or SAGA_CONFIG), else ./saga.toml if it exists."""
    if given:
        return given
    try:
        default = os.path.join(cwd or os.getcwd(), DEFAULT_FILE)
    except OSError:  # the working directory was deleted: there is no ./saga.toml
        return None
    return DEFAULT_FILE if os.path.isfile(default) else None


def load_config(path: str | None) -> Config:
    """Read and check a configuration file (None: the defaults).

    Raises:
        InvalidInputError: the file is missing, unreadable, not TOML, or
            says something saga does not understand (the message names it).
    """
    from saga_cli.alerts import AlertSettings

    if path is None:
        return Config(alerts=AlertSettings())
    import tomllib

    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_BYTES + 1)
    except OSError as exc:
        raise InvalidInputError(f"cannot read the configuration {path}: {exc.strerror}") from None
    if len(raw) > MAX_BYTES:
        raise InvalidInputError(f"{path} is larger than {MAX_BYTES} bytes; not a configuration")
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InvalidInputError(f"{path} is not valid TOML: {exc}") from None
    except RecursionError:  # tomllib recurses into nested arrays and tables
        raise InvalidInputError(f"{path} nests too deeply to be a configuration") from None
    known = {*GLOBAL_OPTIONS, *COMMAND_OPTIONS, *TABLES}
    _refuse_unknown(path, "", data, known)
    return Config(
        path=path,
        options=_typed(path, "", data, GLOBAL_OPTIONS),
        command_options=_typed(path, "", data, COMMAND_OPTIONS),
        worker=_typed(path, "worker.", _table(path, data, "worker"), WORKER_OPTIONS),
        alerts=_alerts(path, _table(path, data, "alerts")),
        tracing=_tracing(path, data),
    )


def _alerts(path: str, table: Mapping[str, Any]) -> Any:
    from saga_cli.alerts import AlertSettings, sinks_from
    from saga_cli.durations import parse_duration
    from saga_cli.engine.alerting import AlertPolicy

    fields = {
        "stuck": bool,
        "deadline": bool,
        "compensation_failures": int,
        "retry": str,
        "retry_max": str,
        "webhook": list,
        "command": list,
    }
    _refuse_unknown(path, "alerts.", table, set(fields))
    given = _typed(path, "alerts.", table, fields)
    webhooks = _sink_tables(path, "webhook", given.get("webhook", []), {"url"})
    commands = _sink_tables(path, "command", given.get("command", []), {"command"})
    try:
        policy = AlertPolicy(
            stuck=given.get("stuck", True),
            deadline=given.get("deadline", True),
            compensation_failures=given.get("compensation_failures", 3),
        )
        return AlertSettings(
            policy=policy,
            sinks=sinks_from(webhooks, commands),
            retry=parse_duration(given.get("retry", "5s")),
            retry_max=parse_duration(given.get("retry_max", "10m")),
        )
    except InvalidInputError as exc:
        raise InvalidInputError(f"{path}: {exc}") from None


def _sink_tables(
    path: str, kind: str, tables: list[Any], required: set[str]
) -> list[Mapping[str, Any]]:
    fields: dict[str, type] = {"name": str, "timeout": float}
    fields.update({"url": str, "headers": dict} if kind == "webhook" else {"command": str})
    checked: list[Mapping[str, Any]] = []
    for table in tables:
        where = f"alerts.{kind}."
        if not isinstance(table, dict):
            raise InvalidInputError(f"{path}: each [[alerts.{kind}]] must be a table")
        _refuse_unknown(path, where, table, set(fields))
        missing = required - set(table)
        if missing:
            raise InvalidInputError(f"{path}: [[alerts.{kind}]] needs {', '.join(sorted(missing))}")
        typed = _typed(path, where, table, fields)
        timeout = typed.get("timeout", 5.0)
        if not 0 < timeout <= 600:
            raise InvalidInputError(f"{path}: {where}timeout must be 0 to 600 seconds")
        checked.append(typed)
    return checked


def _tracing(path: str, data: Mapping[str, Any]) -> Any:
    if "tracing" not in data:
        return None
    from saga_cli.tracing import TracingSettings

    fields = {"exporter": str, "file": str, "endpoint": str, "service_name": str}
    table = _table(path, data, "tracing")
    _refuse_unknown(path, "tracing.", table, set(fields))
    try:
        return TracingSettings(**_typed(path, "tracing.", table, fields))
    except InvalidInputError as exc:
        raise InvalidInputError(f"{path}: {exc}") from None


def _table(path: str, data: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    table = data.get(name, {})
    if not isinstance(table, dict):
        raise InvalidInputError(f"{path}: {name} must be a table ([{name}])")
    return table


def _refuse_unknown(path: str, where: str, table: Mapping[str, Any], known: set[str]) -> None:
    unknown = sorted(set(table) - known)
    if unknown:
        raise InvalidInputError(
            f"{path}: unknown setting {where}{unknown[0]} (known: {', '.join(sorted(known))})"
        )


def _typed(
    path: str, where: str, table: Mapping[str, Any], fields: Mapping[str, type[Any]]
) -> dict[str, Any]:
    """The settings of `fields` found in `table`, each checked for its type.

    A whole number is a float where a float is wanted, a number or a string
    where a duration is, and a string a one-item list.
    """
    typed: dict[str, Any] = {}
    for name, kind in fields.items():
        if name not in table:
            continue
        value = table[name]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        elif kind is str and name in (
            "grace",
            "prune_after",
            "max_outage",
            "step_timeout",
            "retry",
            "retry_max",
        ):
            if isinstance(value, int | float) and not isinstance(value, bool):
                value = f"{value}s"
        elif kind is list and isinstance(value, str):
            value = [value]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise InvalidInputError(
                f"{path}: {where}{name} must be {_NAMES[kind]} (got {value!r:.60})"
            )
        if isinstance(value, list) and name in ("load", "saga"):
            if not all(isinstance(item, str) for item in value):
                raise InvalidInputError(f"{path}: {where}{name} must be a list of strings")
        typed[name] = value
    return typed


_NAMES = {
    str: "a string",
    int: "a whole number",
    float: "a number",
    bool: "true or false",
    list: "a list",
    dict: "a table",
}
