"""``saga serve``: one travel service over HTTP, or all three as supervised child processes."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from saga_cli.tracing import Tracing


def _check_port_free(host: str, port: int) -> None:
    """Refuse a port that is taken with one line, before uvicorn logs a traceback-like error.

    Raises:
        SagaError: nothing can listen on `host`:`port`.
    """
    import socket

    from saga_cli.errors import SagaError

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise SagaError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def serve(
    service: str,
    port: int | None,
    host: str,
    db: str,
    delay: float,
    *,
    quiet: bool,
    say: Callable[[str], None],
    tracing: Tracing | None = None,
    config: str | None = None,
) -> None:
    """Run one travel service in this process, or all three as child processes, until stopped.

    Args:
        service: flight, hotel, car, or all.
        port: where to listen (default: the service's own port); with all,
            the first of three consecutive ports.
        host: the address to listen on.
        db: the service's SQLite file; ``{service}`` is replaced by its name.
        delay: seconds each reserve is held before it is handled.
        quiet: log warnings only (no request lines).
        say: prints a note for people.
        tracing: continue the traces of the requests (a server span each).
        config: the configuration file, handed to the children of `all`.

    Raises:
        InvalidInputError: an unknown service, one --db file for all three,
            or ports past 65535.
        SagaError: a port is taken.
    """
    from saga_cli.errors import InvalidInputError
    from saga_cli.services.travel import SERVICES

    if service == "all":
        _serve_all(port, host, db, delay, quiet=quiet, say=say, config=config)
        return
    if service not in SERVICES:
        raise InvalidInputError(
            f"unknown service {service!r}; choose from {', '.join(SERVICES)} or all"
        )
    import uvicorn

    from saga_cli.services.http_app import create_app, default_port

    port = default_port(service) if port is None else port
    _check_port_free(host, port)
    path = db.replace("{service}", service)
    served = create_app(service, path, delay=delay, tracing=tracing)
    say(f"{service} service on http://{host}:{port} (database {path}; docs at /docs)")
    if not quiet:
        import logging

        logging.getLogger("saga_cli.http").setLevel(logging.INFO)  # its refusals
    uvicorn.run(served, host=host, port=port, log_level="warning" if quiet else "info")


def _serve_all(
    port: int | None,
    host: str,
    db: str,
    delay: float,
    *,
    quiet: bool,
    say: Callable[[str], None],
    config: str | None = None,
) -> None:
    """Start the three services as child processes on consecutive ports and wait.

    Ctrl-C or SIGTERM stops them all; a child that exits is reported and the
    others keep running.
    """
    import signal
    import subprocess
    import time

    from saga_cli.errors import InvalidInputError
    from saga_cli.services.travel import SERVICES

    if "{service}" not in db:
        raise InvalidInputError("with `serve all`, --db must contain {service} (one file each)")
    first = 8001 if port is None else port
    if first + len(SERVICES) - 1 > 65535:
        raise InvalidInputError(f"ports {first}..{first + len(SERVICES) - 1} do not all exist")
    ports = {name: first + offset for offset, name in enumerate(SERVICES)}
    for name in SERVICES:
        _check_port_free(host, ports[name])
    children: dict[str, subprocess.Popen[bytes]] = {}
    for name in SERVICES:
        command = [sys.executable, "-m", "saga_cli", *(["--quiet"] if quiet else [])]
        command += [*(["--config", config] if config else []), "serve"]
        command += [name, "--port", str(ports[name]), "--host", host, "--db", db]
        command += ["--delay", str(delay)]
        children[name] = subprocess.Popen(command, stdin=subprocess.DEVNULL)
    urls = ",".join(f"http://{host}:{ports[name]}" for name in SERVICES)
    for name, child in children.items():
        say(f"{name}: pid {child.pid}, http://{host}:{ports[name]}")
    say(f"Book through them with: saga simulate --services {urls}")
    running = dict(children)
    # SIGTERM stops the three like Ctrl-C does; the handler only sets a flag.
    stopping: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, _frame: stopping.append(signum))
    try:
        while running and not stopping:
            for name, child in list(running.items()):
                code = child.poll()
                if code is not None:
                    del running[name]
                    say(f"{name} service (pid {child.pid}) exited with code {code}")
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        for child in running.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in running.values():
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
    say("Stopped.")
