"""The dashboard's application factory: one FastAPI app over one saga log.

Pages are server-rendered Jinja2 templates over the same read models as the
CLI (``views``, ``stats``, ``timeline``, ``worker.list_workers``); the charts
are SVG drawn by :mod:`saga_cli.ui.svg`. Page handlers are plain ``def``
functions, so FastAPI runs their store reads on its worker threads and the
event loop stays free for the actions, which drive executions on it through
the orchestrator's ``*_async`` methods.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import jinja2
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.middleware.trustedhost import TrustedHostMiddleware

from saga_cli.body_limit import BodyLimit
from saga_cli.domain import SagaStatus
from saga_cli.durations import format_seconds
from saga_cli.errors import SagaError, StoreError, UnknownExecutionError
from saga_cli.limits import MAX_REQUEST_BYTES
from saga_cli.orchestrator import Orchestrator
from saga_cli.store import SagaStore
from saga_cli.ui import readable
from saga_cli.ui.access import Access

log = logging.getLogger(__name__)

# The pages in the navigation bar, in order: (path, title). A new page (the
# alerts outbox, say) is one entry here, one route and one template.
NAV = (
    ("/executions", "Executions"),
    ("/stuck", "Stuck"),
    ("/stats", "Stats"),
    ("/workers", "Workers"),
)
REFRESH_SECONDS = 2.0
KEPT_MESSAGES = 200
# Host names a browser uses for a dashboard on loopback; any other Host
# header is a DNS-rebinding page trying to read the log through the browser.
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")


@dataclass(frozen=True, slots=True)
class Message:
    """The result of an action, shown once on the page the action redirects to."""

    text: str
    ok: bool


def environment() -> jinja2.Environment:
    """The templates (shipped in the package) with autoescaping and the dashboard's filters."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("saga_cli.ui", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        utc=readable.utc,
        utc_ms=readable.utc_ms,
        ago=readable.ago,
        seconds=format_seconds,
        percent=readable.percent,
    )
    return env


class Dashboard:
    """What every page and action needs: the log, who may act, the templates, the messages.

    Args:
        store: the saga log the pages read.
        orchestrator: drives executions for the actions (None: read-only).
        access: the actions token (None: read-only).
    """

    def __init__(
        self, store: SagaStore, orchestrator: Orchestrator | None, access: Access | None
    ) -> None:
        self.store = store
        self.orchestrator = orchestrator
        self.access = access
        self.templates = environment()
        self._messages: OrderedDict[str, Message] = OrderedDict()
        self.tasks: set[asyncio.Task[Any]] = set()

    @property
    def actions_allowed(self) -> bool:
        """True when started with actions allowed."""
        return self.access is not None and self.orchestrator is not None

    def session(self, request: Request) -> str | None:
        """The signed-in session id of `request`, if any."""
        if self.access is None:
            return None
        return self.access.session_of(request.cookies.get(self.access.cookie_name))

    def remember(self, text: str, *, ok: bool) -> str:
        """Keep an action's result for the next page; returns the key the redirect carries.

        The key is random, so a link cannot make the dashboard show text of its choosing.
        """
        key = secrets.token_urlsafe(9)
        self._messages[key] = Message(text, ok)
        while len(self._messages) > KEPT_MESSAGES:
            self._messages.popitem(last=False)
        return key

    def recall(self, key: str | None) -> Message | None:
        """The message kept under `key`, once."""
        return None if key is None else self._messages.pop(key, None)

    def page(
        self, request: Request, template: str, *, status_code: int = 200, **context: Any
    ) -> HTMLResponse:
        """Render a page with what every page shows: navigation, stuck count, who is signed in."""
        session = self.session(request)
        context.setdefault("live", False)  # pages that follow the log say so
        stuck = self.store.count_statuses(statuses=(SagaStatus.STUCK,))[SagaStatus.STUCK]
        html = self.templates.get_template(template).render(
            request_path=request.url.path,
            request_url=str(request.url.path)
            + (f"?{request.url.query}" if request.url.query else ""),
            nav=NAV,
            stuck_count=stuck,
            log_url=getattr(self.store, "display_url", self.store.url),
            actions_allowed=self.actions_allowed,
            signed_in=session is not None,
            csrf=self.access.csrf_token(session) if self.access and session else "",
            refresh_seconds=REFRESH_SECONDS,
            now=time.time(),
            message=self.recall(request.query_params.get("message")),
            **context,
        )
        return HTMLResponse(html, status_code=status_code)


def dashboard_of(request: Request) -> Dashboard:
    """The Dashboard of the app serving `request`."""
    dashboard: Dashboard = request.app.state.dashboard
    return dashboard


def _error_page(request: Request, exc: Exception) -> HTMLResponse:
    """A SagaError as the CLI would say it (``Error: …``), never a traceback."""
    assert isinstance(exc, SagaError)
    if isinstance(exc, UnknownExecutionError):
        status = 404
    elif isinstance(exc, StoreError) and not exc.bad_input:
        status = 503
    else:
        status = 400 if exc.bad_input else 409
    dashboard = dashboard_of(request)
    try:
        return dashboard.page(request, "error.html", status_code=status, error=str(exc))
    except SagaError:  # the log itself is unreadable: a page without the stuck count
        return HTMLResponse(f"<p>Error: {exc}</p>", status_code=503)


def create_app(
    store: SagaStore,
    *,
    orchestrator: Orchestrator | None = None,
    access: Access | None = None,
    allowed_hosts: Sequence[str] | None = LOOPBACK_HOSTS,
) -> FastAPI:
    """The dashboard as an ASGI app over `store` (uvicorn serves it; tests may too).

    Args:
        store: the saga log; the caller opens and closes it.
        orchestrator: with `access`, enables the action buttons, which call it.
        access: the actions token; both or neither of these two.
        allowed_hosts: Host header values served (None: any, for a dashboard
            bound to a public address, whose names it cannot know).

    Raises:
        ValueError: only one of `orchestrator` and `access` was given.
    """
    from saga_cli.ui import actions, pages

    if (orchestrator is None) != (access is None):
        raise ValueError("actions need both an orchestrator and an access token")
    dashboard = Dashboard(store, orchestrator, access)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        # Actions still driving an execution hand it back (its lease is
        # released, the log says where it stopped) before the process exits.
        for task in list(dashboard.tasks):
            task.cancel()
        if dashboard.tasks:
            await asyncio.gather(*dashboard.tasks, return_exceptions=True)

    app = FastAPI(
        title="saga",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
    )
    app.state.dashboard = dashboard
    if allowed_hosts is not None:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))
    # The dashboard's forms are a token and a note: a larger body is refused unread.
    app.add_middleware(BodyLimit, limit=MAX_REQUEST_BYTES)
    app.add_exception_handler(SagaError, _error_page)
    app.include_router(pages.router)
    if dashboard.actions_allowed:
        app.include_router(actions.router)
        app.add_exception_handler(actions.ActionRefusedError, actions.refused_page)

    @app.get("/", include_in_schema=False)
    def home() -> RedirectResponse:
        return RedirectResponse("/executions", status_code=303)

    return app
