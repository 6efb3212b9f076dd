"""What every command shares: the log it opens, errors as exit codes, and JSON or tables.

Nothing here imports the library or rich at import time (``saga --help`` must
stay fast); each helper imports what it needs when a command calls it.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from enum import IntEnum
from typing import TYPE_CHECKING, Any, TypeVar

import typer

from saga_cli.cli.options import DEFAULT_DB

if TYPE_CHECKING:
    from rich.console import Console

    from saga_cli import render as render
    from saga_cli.booking import TravelBooking
    from saga_cli.config import Config
    from saga_cli.engine import EventListener, Outcome
    from saga_cli.orchestrator import Orchestrator
    from saga_cli.services.travel import FaultPlan
    from saga_cli.store import SagaStore


def _lazy(name: str) -> Any:
    """Module `name`, imported when one of its attributes is first used.

    ``saga_cli.render`` imports rich (about 20 ms): commands name it at the top
    of their module, and only the ones that draw a table pay for it, never
    ``--help`` or ``--json``.
    """
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.loader is not None, name
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    return module


if not TYPE_CHECKING:
    render = _lazy("saga_cli.render")


class ExitCode(IntEnum):
    """Exit codes, the same for every command (and listed in the README)."""

    OK = 0
    ERROR = 1
    USAGE = 2
    COMPENSATED = 3
    STUCK = 4


class State:
    """Options given before the command name (``ctx.obj``)."""

    db: str = DEFAULT_DB
    load: tuple[str, ...] = ()
    quiet: bool = False
    step_timeout: str | None = None
    config: Config | None = None

    def settings(self) -> Config:
        """The configuration file's settings (the defaults when there is none)."""
        if self.config is None:
            from saga_cli.config import load_config

            self.config = load_config(None)
        return self.config

    def tracing(self) -> Any:
        """The engine's Tracing as the configuration asks, made once (None: no traces).

        Raises:
            InvalidInputError: tracing is asked for and OpenTelemetry is missing.
        """
        settings = self.settings().tracing
        if settings is None:
            return None
        if self._tracing is None:
            from saga_cli.tracing import from_settings

            self._tracing = from_settings(settings)
        return self._tracing

    _tracing: Any = None

    def step_timeout_seconds(self) -> float | None:
        """--step-timeout in seconds (None: no limit), or the engine's default.

        Raises:
            InvalidInputError: neither a duration nor "none".
        """
        from saga_cli.engine import DEFAULT_STEP_TIMEOUT

        text = self.step_timeout
        if text is None:
            return DEFAULT_STEP_TIMEOUT
        if text.strip().lower() == "none":
            return None
        return seconds(text)


def _state(ctx: typer.Context) -> State:
    return ctx.obj if isinstance(ctx.obj, State) else State()


def config_defaults(root: Any, given: str | None) -> tuple[dict[str, Any], Config | None]:
    """Click's default map for `root`'s command tree from the configuration, and the config.

    Top-level settings are the defaults of the options before the command
    name, and of options that several commands take (every command that has
    one gets it); ``[worker]`` is ``saga worker``'s.

    Raises:
        InvalidInputError: the configuration is bad (see saga_cli.config).
    """
    from saga_cli.config import find_config

    path = find_config(given)
    if path is None:  # the common case costs no import: defaults are made when needed
        return {}, None
    from saga_cli.config import load_config

    config = load_config(path)
    defaults: dict[str, Any] = dict(config.options)

    def visit(group: Any, into: dict[str, Any]) -> None:
        for name, command in getattr(group, "commands", {}).items():
            own = into.setdefault(name, {})
            params = {param.name for param in command.params}
            own.update({k: v for k, v in config.command_options.items() if k in params})
            if name == "worker" and group is root:
                own.update(config.worker)
            visit(command, own)

    if config.command_options or config.worker:
        visit(root, defaults)
    return defaults, config


def commands(**settings: Any) -> typer.Typer:
    """A group of commands; plain help (rich would cost ~0.1 s of imports per ``--help``)."""
    return typer.Typer(rich_markup_mode=None, **settings)


F = TypeVar("F", bound=Callable[..., Any])


def errors_to_exit_codes(command: F) -> F:
    """Turn the library's errors into ``Error: …`` on stderr and an exit code."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from saga_cli.errors import SagaError

        try:
            return command(*args, **kwargs)
        except SagaError as exc:
            from saga_cli.terminal import error_line

            typer.echo(error_line(exc), err=True)
            code = ExitCode.USAGE if exc.bad_input else ExitCode.ERROR
            raise typer.Exit(code) from None
        except KeyboardInterrupt:
            typer.echo(
                "Interrupted; unfinished executions continue with `saga resume --all`.", err=True
            )
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def log_url(ctx: typer.Context) -> str:
    """The saga log given with --db (or SAGA_DB), else ./saga.db."""
    return str(ctx.obj.db) if ctx.obj else DEFAULT_DB


def quiet(ctx: typer.Context) -> bool:
    """True with --quiet: nothing but errors on stderr."""
    return bool(ctx.obj and ctx.obj.quiet)


def say(message: str, *, err: bool = False) -> None:
    """Print a line for people: no secret and no control character reaches the terminal."""
    from saga_cli.redact import mask
    from saga_cli.terminal import printable

    typer.echo(printable(mask(message)), err=err)


def hint(ctx: typer.Context, message: str) -> None:
    """A note for people on stderr (not data, so not on stdout); --quiet drops it."""
    if not quiet(ctx):
        say(message, err=True)


# -- the log, and the engine on it ----------------------------------------------------


@contextmanager
def open_log(ctx: typer.Context) -> Iterator[SagaStore]:
    """The saga log (migrated on first use), closed when the command is done."""
    import logging
    import time

    from saga_cli.store import open_store

    began = time.perf_counter()
    store = open_store(log_url(ctx))
    where = getattr(store, "display_url", store.url)  # a PostgreSQL URL without its password
    log = logging.getLogger("saga_cli")
    log.info("opened saga log %s in %.3f s", where, time.perf_counter() - began)
    with closing(store):
        yield store


def _progress_lines(show_steps: bool) -> EventListener | None:
    """With `show_steps`, a listener that prints each durable event as a line on stdout."""
    if not show_steps:
        return None
    console = render.console()
    return lambda execution_id, event: render.event_line(console, execution_id, event)


def _load_sagas(ctx: typer.Context, engine: Orchestrator) -> None:
    """Register the sagas given with --load (or SAGA_LOAD)."""
    for reference in ctx.obj.load if ctx.obj else ():
        engine.load(reference)


@contextmanager
def orchestrator(ctx: typer.Context, *, show_steps: bool = False) -> Iterator[Orchestrator]:
    """An orchestrator on the log with the --load sagas registered (no demo services)."""
    from saga_cli.orchestrator import Orchestrator

    listener = _progress_lines(show_steps)
    state = _state(ctx)
    timeout = state.step_timeout_seconds()
    policy = state.settings().alerts.policy
    with (
        open_log(ctx) as store,
        Orchestrator(
            store,
            on_event=listener,
            step_timeout=timeout,
            alerts=policy,
            tracing=state.tracing(),
        ) as engine,
    ):
        _load_sagas(ctx, engine)
        yield engine


@contextmanager
def travel(
    ctx: typer.Context,
    *,
    faults: FaultPlan | None = None,
    show_steps: bool = False,
    services: str | None = None,
    service_timeout: float | None = None,
) -> Iterator[TravelBooking]:
    """The travel demo on the log (its services in-process, or at --services URLS).

    Its orchestrator also has the --load sagas registered.
    """
    from saga_cli.booking import TravelBooking

    urls = None
    if services:
        from saga_cli.services.http_client import parse_services

        urls = parse_services(services)
    state = _state(ctx)
    with open_log(ctx) as store:
        booking = TravelBooking(
            store,
            step_timeout=state.step_timeout_seconds(),
            on_event=_progress_lines(show_steps),
            faults=faults,
            services=urls,
            service_timeout=service_timeout,
            alerts=state.settings().alerts.policy,
            tracing=state.tracing(),
        )
        with closing(booking):
            _load_sagas(ctx, booking.orchestrator)
            yield booking


@contextmanager
def delivering_alerts(
    ctx: typer.Context, store: SagaStore, engine: Orchestrator | None = None
) -> Iterator[None]:
    """While a long-running command runs, deliver alerts to the configured sinks in the background.

    With `engine`, its alert-bearing events wake the deliverer at once.
    Without sinks, nothing runs: alerts wait in the log (``saga alerts --pending``).
    """
    settings = _state(ctx).settings().alerts
    if not settings.sinks:
        yield
        return
    if engine is not None:
        with engine.delivering(settings):
            yield
        return
    from saga_cli.alerts import Deliverer

    with Deliverer(store, settings):
        yield


# -- output -------------------------------------------------------------------------


def print_json(data: Any) -> None:
    """`data` as strict indented JSON on stdout (times and the like as strings), no secrets."""
    from saga_cli.limits import dumps
    from saga_cli.redact import mask

    sys.stdout.write(mask(dumps(data, indent=2, default=str)) + "\n")


def emit(as_json: bool, data: Any, draw: Callable[[Console], object]) -> None:
    """With --json print `data`; otherwise `draw` it for people (see saga_cli.render)."""
    if as_json:
        print_json(data)
    else:
        draw(render.console())


def outcome_code(result: Outcome) -> int:
    """The exit code that says how a saga ended."""
    from saga_cli.domain import SagaStatus

    return {
        SagaStatus.COMPLETED: ExitCode.OK,
        SagaStatus.COMPENSATED: ExitCode.COMPENSATED,
        SagaStatus.STUCK: ExitCode.STUCK,
    }.get(result.status, ExitCode.ERROR)


def finish(result: Outcome, as_json: bool) -> None:
    """Show how an execution ended and exit with the code that says so."""
    data = {
        "id": result.execution_id,
        "saga": result.saga,
        "status": result.status.value,
        "error": result.error,
        "results": dict(result.results),
    }
    emit(as_json, data, lambda console: render.outcome(console, result))
    raise typer.Exit(outcome_code(result))


def submitted(execution_id: str, as_json: bool) -> None:
    """Print the id of an execution written as pending (``--submit``)."""
    if as_json:
        print_json({"id": execution_id, "status": "pending"})
    else:
        say(execution_id)


# -- parsing ------------------------------------------------------------------------


def seconds(text: str | None) -> float | None:
    """A duration such as ``30s`` or ``2m`` in seconds (None stays None)."""
    from saga_cli.durations import parse_duration

    return None if text is None else parse_duration(text)


def refuse_local_faults(**given: object) -> None:
    """With --submit a worker runs the saga: this process's fault options would do nothing."""
    from saga_cli.errors import InvalidInputError

    for name, value in given.items():
        if value:
            option = "--" + name.replace("_", "-")
            raise InvalidInputError(
                f"{option} acts on the process that runs the saga; with --submit, "
                "give it to `saga worker` instead"
            )


def travel_faults(
    crash_at: str | None,
    flaky: list[str] | None,
    fail_compensation: list[str] | None,
    slow: list[str] | None,
    outage: list[str] | None,
    hang: list[str] | None,
) -> FaultPlan:
    """The travel services' failure injection, from the fault options."""
    from saga_cli.services.travel import FaultPlan

    return FaultPlan.parse(
        crash_at=crash_at,
        flaky=flaky or (),
        fail_compensation=fail_compensation or (),
        slow=slow or (),
        outage=outage or (),
        hang=hang or (),
    )
