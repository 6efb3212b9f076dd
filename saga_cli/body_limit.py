"""ASGI middleware that caps request bodies: ``saga serve`` and ``saga ui`` use it.

Neither uvicorn nor Starlette limits a body's size; an endless or huge body
would be read into memory. This one reads at most `limit` bytes before the
app sees the request, so a chunked body without a Content-Length is capped
too, and answers 413 past it. It needs no web framework: plain ASGI.
"""

from __future__ import annotations

import json
from typing import Any

from saga_cli.limits import whole


class BodyLimit:
    """Refuse a request body longer than `limit` bytes with a 413; replay a shorter one."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Handle one ASGI call: refuse an oversized body, else replay it to the app."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or ()).get(b"content-length", b"0")
        if whole(declared.decode("latin-1"), 0, self.limit) is None:
            await self._refuse(send)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            body += message.get("body", b"")
            if len(body) > self.limit:
                await self._refuse(send)
                return
            if not message.get("more_body"):
                break
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, send: Any) -> None:
        content = json.dumps(
            {"detail": f"request body over {self.limit} bytes", "error": "InvalidInputError"}
        ).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", b"%d" % len(content)),
        ]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": content})
