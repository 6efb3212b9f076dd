"""``saga worker --http-port``: liveness, readiness and metrics over HTTP for process supervisors.

Kubernetes, systemd, Nomad and Prometheus ask a long-running worker three
things: is it alive (``GET /healthz``), may it be given work (``GET
/readyz``: the log answers and it is claiming), and what has it done
(``GET /metrics``, Prometheus's text format). A stdlib HTTP server on a
daemon thread answers them, reading only what the worker keeps in memory,
so a probe never adds load to the log. Only imported when a port is given.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST

from saga_cli.errors import InvalidInputError, SagaError
from saga_cli.metrics import WorkerMetrics
from saga_cli.worker import Worker

log = logging.getLogger(__name__)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    worker: Worker
    metrics: WorkerMetrics


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "saga-worker"

    def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(200, self.server.metrics.exposition(), CONTENT_TYPE_LATEST)
            return
        if path not in ("/healthz", "/readyz"):
            self._json(404, {"error": f"no such path: {path}; try /healthz, /readyz, /metrics"})
            return
        health = self.server.worker.health()
        ok = health.alive if path == "/healthz" else health.ready
        body: dict[str, Any] = {
            "status": "ok" if ok else "unavailable",
            "worker": self.server.worker.id,
            "alive": health.alive,
            "ready": health.ready,
        }
        if health.reason:
            body["reason"] = health.reason
        self._json(200 if ok else 503, body)

    def _json(self, code: int, body: dict[str, Any]) -> None:
        self._send(code, (json.dumps(body) + "\n").encode(), "application/json")

    def _send(self, code: int, body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the stdlib's name)
        log.debug("health: " + format, *args)  # probes every few seconds: not worth stderr


class HealthServer:
    """Serves a worker's ``/healthz``, ``/readyz`` and ``/metrics`` on a daemon thread.

    Args:
        worker: the worker to report on; a :class:`WorkerMetrics` is attached
            to it (call before ``worker.run()``).
        host: the address to listen on (loopback unless you say otherwise).
        port: the TCP port, 1 to 65535.

    Raises:
        InvalidInputError: port 0 or out of range (a probe needs a known port).
        SagaError: the address does not resolve or the port is taken.
    """

    def __init__(self, worker: Worker, host: str = "127.0.0.1", port: int = 9400) -> None:
        if not 1 <= port <= 65535:
            raise InvalidInputError(f"--http-port must be between 1 and 65535 (got {port})")
        self.metrics = WorkerMetrics(worker)
        try:
            family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        except (socket.gaierror, UnicodeError) as exc:
            raise SagaError(f"cannot listen on {host}:{port}: {exc}") from None
        server_class = type("_Bound", (_Server,), {"address_family": family})
        try:
            self._server: _Server = server_class((host, port), _Handler)
        except OSError as exc:
            raise SagaError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        self._server.worker = worker
        self._server.metrics = self.metrics
        worker.observe(self.metrics)
        self.host = host
        self.port = port
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="saga-worker-http", daemon=True
        )

    @property
    def url(self) -> str:
        """Where it listens, e.g. ``http://127.0.0.1:9400/``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def start(self) -> None:
        """Answer requests from now on (on a daemon thread)."""
        self._thread.start()

    def close(self) -> None:
        """Stop answering and free the port."""
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> HealthServer:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
