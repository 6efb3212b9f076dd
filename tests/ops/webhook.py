"""A webhook receiver on 127.0.0.1 for alert tests: it records every POST, can hang or be down."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Received:
    """What the receiver got: every request, and the bodies it acknowledged by key."""

    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    acknowledged: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    hang: threading.Event | None = None  # while set-able and unset, requests wait
    lock: threading.Lock = field(default_factory=threading.Lock)

    def keys(self) -> set[str]:
        with self.lock:
            return set(self.acknowledged)


@contextmanager
def webhook(port: int, received: Received) -> Iterator[str]:
    """Serve on `port` until the block ends; yields the URL to configure."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            key = self.headers.get("Idempotency-Key", "")
            with received.lock:
                received.requests.append((key, body))
            if received.hang is not None and not received.hang.is_set():
                received.hang.wait(60)  # the sender is killed meanwhile
                return
            with received.lock:
                received.acknowledged.setdefault(key, []).append(body)
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *_args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}/hook"
    finally:
        if received.hang is not None:
            received.hang.set()
        server.shutdown()
        server.server_close()


def alerts_config(path: Any, url: str, *, retry: str = "200ms", extra: str = "") -> str:
    """Write a saga.toml with one webhook sink at `url`; return its path."""
    text = f"""
[alerts]
retry = "{retry}"
retry_max = "1s"

[[alerts.webhook]]
name = "ops"
url = "{url}"
timeout = 2
{extra}
"""
    path.write_text(text)
    return str(path)
