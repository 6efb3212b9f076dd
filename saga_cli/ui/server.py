"""Where the dashboard listens, and uvicorn serving it there.

The socket is bound before anything else happens, so a port that is taken
is one ``Error:`` line (not uvicorn's log of a failed start), and ``--port
0`` gets a free port whose address can be printed before serving starts.
"""

from __future__ import annotations

import ipaddress
import signal
import socket
from dataclasses import dataclass

from fastapi import FastAPI

from saga_cli.errors import SagaError
from saga_cli.ui.app import LOOPBACK_HOSTS


def is_loopback(host: str) -> bool:
    """Whether `host` is an address only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class Listener:
    """A bound socket and the address people reach it at."""

    socket: socket.socket
    host: str
    port: int

    @property
    def loopback(self) -> bool:
        """True when only this machine can connect."""
        return is_loopback(self.host)

    @property
    def url(self) -> str:
        """The dashboard's address, e.g. ``http://127.0.0.1:8080/``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    @property
    def allowed_hosts(self) -> tuple[str, ...] | None:
        """Host headers to serve: loopback names only on loopback (None: any)."""
        return (*LOOPBACK_HOSTS, self.host) if self.loopback else None


def listen(host: str, port: int) -> Listener:
    """Bind a listening TCP socket to `host`:`port` (0: any free port).

    Raises:
        SagaError: the address does not resolve or the port is taken.
    """
    try:
        family, kind, proto, _name, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except (socket.gaierror, UnicodeError) as exc:
        raise SagaError(f"cannot listen on {host}:{port}: {exc}") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise SagaError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.set_inheritable(True)
    return Listener(sock, host, int(sock.getsockname()[1]))


def serve(app: FastAPI, listener: Listener) -> None:
    """Serve `app` on the listener's socket until SIGINT or SIGTERM, then return normally.

    uvicorn stops gracefully on either signal (requests in flight finish,
    actions still driving an execution hand it back) and then raises the
    signal again for whatever handler was there before it started: here a
    handler that only notes it, since a stop is how a dashboard is meant to
    end, not an error (exit 0, as ``saga watch``). uvicorn logs through the
    standard logging tree as the CLI configured it (its startup and request
    lines show with ``-v``).
    """
    import uvicorn

    config = uvicorn.Config(
        app, log_config=None, access_log=True, lifespan="on", timeout_graceful_shutdown=5
    )
    server = uvicorn.Server(config)
    stops: list[int] = []
    previous = {
        sig: signal.signal(sig, lambda number, _frame: stops.append(number))
        for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        server.run(sockets=[listener.socket])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        listener.socket.close()
