"""Calling an HTTP service from a saga step, the way the engine needs it.

What the network does maps onto what the engine does:

======================================  =========================================
the service answers or fails with       the step raises (and the engine then)
======================================  =========================================
2xx                                     nothing: the JSON body is the result
409 or 422 (a refusal)                  :class:`RemoteRefusalError`, a BusinessError
                                        (compensate at once, never retried)
other 4xx but 408 and 429               :class:`RemoteRequestError`, a BusinessError
                                        (the request itself is wrong: retrying
                                        cannot help)
5xx, 408, 429, connection refused or    :class:`ServiceUnavailableError`, a
reset, connect timeout                  TransientError (retried with back-off)
no reply within the timeout after the   :class:`ServiceTimeoutError`, a
request was sent                        StepTimeoutError (the effect is unknown:
                                        the step is compensated, a compensation
                                        retried)
======================================  =========================================

Every call carries the step's idempotency key in the ``Idempotency-Key``
header, so a retry, a resume after a crash or a late duplicate has the effect
of one call, provided the service honours the header. When the engine makes
traces (see :mod:`saga_cli.tracing`), a call also carries the step's span as
a W3C ``traceparent`` header, so the service can continue the trace.

One :class:`HttpService` per remote service: it keeps a pool of keep-alive
connections (a sync one, on httpx, and an async one per event loop, on
aiohttp, whose client costs about a tenth of httpx's CPU per request, which
is what bounds a busy orchestrator) and a limit on the calls in flight to
that service, so one slow service cannot take every connection and thread of
the process. Use the ``*_async`` methods from ``async def`` steps: many calls
then wait at once without a thread each::

    flights = HttpService("flights", "http://flights.internal:8080", timeout=2.0)

    @trip.step()
    async def flight(ctx: StepContext[Trip]) -> Any:
        return await flights.post_async(ctx, "/reservations", json={"seat": ctx.payload.seat})

    @flight.compensation
    async def cancel_flight(ctx: StepContext[Trip]) -> Any:
        return await flights.post_async(ctx, "/cancellations", json={"of": ctx.action_key})

Only this module imports httpx and aiohttp.
"""

from __future__ import annotations

import asyncio
import json as json_module
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import httpx

from saga_cli import tracing
from saga_cli.domain import StepContext
from saga_cli.errors import BusinessError, InvalidInputError, StepTimeoutError, TransientError
from saga_cli.redact import redact_url

KEY_HEADER = "Idempotency-Key"
DEFAULT_TIMEOUT = 10.0
DEFAULT_MAX_CONCURRENCY = 32


class ServiceUnavailableError(TransientError):
    """Raised when a service cannot be reached, or answers 5xx, 408 or 429 (retried)."""


class ServiceTimeoutError(StepTimeoutError):
    """Raised when a sent request gets no reply within the timeout (its effect is unknown)."""


class RemoteRefusalError(BusinessError):
    """Raised when a service refuses a request (409 or 422): a business answer.

    Attributes:
        status: the HTTP status.
        kind: the ``error`` (or ``type``) field of a JSON problem body, "" if none.
        body: the decoded JSON body, or the text.
    """

    def __init__(self, message: str, status: int, kind: str = "", body: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.body = body


class RemoteRequestError(RemoteRefusalError):
    """Raised when a service rejects the request itself (a 4xx other than 408, 409, 422, 429)."""


class HttpService:
    """One remote participant reached over HTTP, for steps and compensations to call.

    Args:
        name: what messages call the service.
        base_url: ``http://host:port`` (a path prefix may follow).
        timeout: seconds a call may take, connecting included; past it a sent
            request's effect is unknown (keep it under the step's timeout).
        max_concurrency: calls in flight to this service at once; the others wait.
        headers: sent with every call (an ``Authorization``, say; never logged).
        transport: for tests (an httpx mock transport for the sync calls).

    Raises:
        InvalidInputError: a URL that is not http(s)://HOST[:PORT], or bad numbers.
    """

    def __init__(
        self,
        name: str,
        base_url: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        headers: Mapping[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidInputError(
                f"{name}: {redact_url(base_url)!r} is not an http(s)://HOST[:PORT] URL"
            )
        if not 0 < timeout < 86400:
            raise InvalidInputError(f"{name}: the timeout must be 0 to 86400 seconds")
        if not 1 <= max_concurrency <= 100_000:
            raise InvalidInputError(f"{name}: max_concurrency must be 1 to 100000")
        self.name = name
        self.base_url = base_url.rstrip("/")
        # What messages (and so the log's error records) name: never a password.
        self.shown_url = redact_url(self.base_url)
        self.timeout = timeout
        self.max_concurrency = max_concurrency
        self._headers = dict(headers or {})
        self._transport = transport
        self._limits = httpx.Limits(
            max_connections=max_concurrency, max_keepalive_connections=max_concurrency
        )
        self._client: httpx.Client | None = None
        self._client_lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(max_concurrency)
        # An aiohttp session belongs to one event loop; its connector bounds the calls.
        self._sessions: dict[asyncio.AbstractEventLoop, aiohttp.ClientSession] = {}

    # -- calls from plain steps ------------------------------------------------------

    def request(
        self,
        ctx: StepContext[Any] | str | None,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
    ) -> Any:
        """Send one request with the step's idempotency key; return the decoded reply.

        Args:
            ctx: the step's context (its ``key`` is sent), a key, or None for
                a call that needs none (a read).
            method: the HTTP method.
            path: the path under the base URL.
            json: the body, sent as JSON.
            params: the query string.

        Raises:
            RemoteRefusalError, RemoteRequestError, ServiceUnavailableError,
            ServiceTimeoutError: see the module's table.
        """
        client = self._sync_client()
        with self._slots:
            try:
                response = client.request(
                    method, path, json=json, params=params, headers=self._key(ctx)
                )
            except httpx.HTTPError as exc:
                raise self._network_error(exc, path) from None
        return self._answer(response, path)

    def post(self, ctx: StepContext[Any] | str | None, path: str, *, json: Any = None) -> Any:
        """POST `json` to `path` (see :meth:`request`)."""
        return self.request(ctx, "POST", path, json=json)

    def get(self, path: str, *, params: Mapping[str, Any] | None = None) -> Any:
        """GET `path` (see :meth:`request`)."""
        return self.request(None, "GET", path, params=params)

    # -- calls from async steps ------------------------------------------------------

    async def request_async(
        self,
        ctx: StepContext[Any] | str | None,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
    ) -> Any:
        """:meth:`request` without a thread: awaits the reply on the running loop."""
        session = self._async_session()
        try:
            async with session.request(
                method,
                self.base_url + path,
                json=json,
                params=None if params is None else dict(params),
                headers=self._key(ctx),
            ) as response:
                status = response.status
                content = await response.read()
        except aiohttp.ConnectionTimeoutError:
            raise ServiceUnavailableError(
                f"{self.name} at {self.shown_url} unreachable for {path} (connect timeout)"
            ) from None
        except TimeoutError:
            # Sent (or being sent), and no reply in time: it may have acted on it.
            raise ServiceTimeoutError(
                f"{self.name} at {self.shown_url} did not answer {path} within {self.timeout:g}s"
            ) from None
        except aiohttp.ClientError as exc:
            raise ServiceUnavailableError(
                f"{self.name} at {self.shown_url} unreachable for {path} ({type(exc).__name__})"
            ) from None
        return self._decide(status, content, path)

    async def post_async(
        self, ctx: StepContext[Any] | str | None, path: str, *, json: Any = None
    ) -> Any:
        """POST `json` to `path` (see :meth:`request_async`)."""
        return await self.request_async(ctx, "POST", path, json=json)

    async def get_async(self, path: str, *, params: Mapping[str, Any] | None = None) -> Any:
        """GET `path` (see :meth:`request_async`)."""
        return await self.request_async(None, "GET", path, params=params)

    def close(self) -> None:
        """Close the connection pools (an event loop's is closed on that loop)."""
        if self._client is not None:
            self._client.close()
            self._client = None
        for loop, session in list(self._sessions.items()):
            self._sessions.pop(loop, None)
            if session.closed or loop.is_closed():
                continue
            if loop.is_running():
                asyncio.run_coroutine_threadsafe(session.close(), loop)
            else:
                loop.run_until_complete(session.close())

    async def aclose(self) -> None:
        """Close the running loop's async connection pool."""
        session = self._sessions.pop(asyncio.get_running_loop(), None)
        if session is not None:
            await session.close()

    # -- plumbing --------------------------------------------------------------------

    def _sync_client(self) -> httpx.Client:
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    self._client = httpx.Client(
                        base_url=self.base_url,
                        timeout=self.timeout,
                        limits=self._limits,
                        headers=self._headers,
                        transport=self._transport,
                        # No proxy from the environment between a saga and its participants.
                        trust_env=False,
                    )
        return self._client

    def _async_session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        session = self._sessions.get(loop)
        if session is None or session.closed:
            session = self._sessions[loop] = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.max_concurrency, limit_per_host=0),
                timeout=aiohttp.ClientTimeout(total=self.timeout, sock_connect=self.timeout),
                headers=self._headers,
                # No proxy from the environment between a saga and its participants.
                trust_env=False,
                skip_auto_headers=("User-Agent",),
            )
        return session

    @staticmethod
    def _key(ctx: StepContext[Any] | str | None) -> dict[str, str] | None:
        headers = None if ctx is None else {KEY_HEADER: ctx if isinstance(ctx, str) else ctx.key}
        if tracing.ACTIVE:  # the step's span goes along as `traceparent`
            headers = dict(tracing.inject(headers or {}))
        return headers

    def _network_error(self, exc: httpx.HTTPError, path: str) -> Exception:
        where = f"{self.name} at {self.shown_url}"
        if isinstance(exc, httpx.TimeoutException) and not isinstance(
            exc, httpx.ConnectTimeout | httpx.PoolTimeout
        ):
            # Sent, and no reply: the service may have acted on it.
            return ServiceTimeoutError(f"{where} did not answer {path} within {self.timeout:g}s")
        return ServiceUnavailableError(f"{where} unreachable for {path} ({type(exc).__name__})")

    def _answer(self, response: httpx.Response, path: str) -> Any:
        return self._decide(response.status_code, response.content, path)

    def _decide(self, status: int, content: bytes, path: str) -> Any:
        """The decoded reply of a 2xx; the error the table maps any other status to."""
        if status < 400:
            if not content:
                return None
            try:
                return json_module.loads(content)
            except ValueError:
                return content.decode("utf-8", "replace")
        where = f"{self.name} at {self.shown_url}"
        if status >= 500 or status in (408, 429):
            raise ServiceUnavailableError(f"{where} answered {status} to {path}")
        detail, kind, body = _problem(status, content)
        if status in (409, 422):
            raise RemoteRefusalError(f"{where} refused {path}: {detail}", status, kind, body)
        raise RemoteRequestError(
            f"{where} rejected {path} ({status}): {detail}", status, kind, body
        )


def _problem(status: int, content: bytes) -> tuple[str, str, Any]:
    """(detail, kind, body) of an error reply; FastAPI's validation errors have a list detail."""
    try:
        body = json_module.loads(content)
    except ValueError:
        text = content[:500].decode("utf-8", "replace")
        return text or f"HTTP {status}", "", text
    detail: Any = body
    kind = ""
    if isinstance(body, dict):
        detail = body.get("detail", body)
        kind = str(body.get("error") or body.get("type") or "")
    if not isinstance(detail, str):
        detail = f"invalid request: {detail}"
    return detail[:500], kind, body
