"""The dashboard's actions (resume, compensate, cancel, resolve) and signing in to use them.

Mounted only when ``saga ui --allow-actions`` started it. Each action calls
the same Orchestrator method as the CLI command of the same name, so the log
records it exactly as it records ``saga resume`` or ``saga resolve``. An
action that drives an execution runs on the server's event loop through the
orchestrator's ``*_async`` method (``resolve``, a single write, on a
thread), never blocking the loop; the request waits a few seconds for the
outcome, then redirects (POST, redirect, GET) to a page that shows it, or
that follows the execution live while it is still going.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from saga_cli.engine import Outcome
from saga_cli.errors import SagaError
from saga_cli.ui.access import local_path, same_origin
from saga_cli.ui.app import Dashboard, dashboard_of

log = logging.getLogger(__name__)
router = APIRouter()

ACTIONS = ("resume", "compensate", "cancel", "resolve")
ACTION_WAIT_SECONDS = 3.0
MAX_FORM_BYTES = 16_384


class ActionRefusedError(Exception):
    """A POST without a signed-in session, a valid CSRF token or a same-origin page behind it."""


async def _form(request: Request) -> dict[str, str]:
    """The url-encoded form of a POST (the last value of each field)."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise ActionRefusedError(f"the form is larger than {MAX_FORM_BYTES:,} bytes")
    fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {name: values[-1] for name, values in fields.items()}


def _from_our_pages(request: Request) -> None:
    headers = request.headers
    if not same_origin(
        headers.get("origin"),
        headers.get("sec-fetch-site"),
        request.url.scheme,
        headers.get("host", ""),
    ):
        raise ActionRefusedError("the request did not come from this dashboard's own pages")


async def _signed_form(request: Request) -> tuple[Dashboard, dict[str, str]]:
    """The form of a POST that a signed-in operator sent from a dashboard page.

    Raises:
        ActionRefusedError: no session, a missing or foreign CSRF token, or
            another site's page behind the request.
    """
    dashboard = dashboard_of(request)
    _from_our_pages(request)
    form = await _form(request)
    session = dashboard.session(request)
    assert dashboard.access is not None  # the router is mounted only with access
    if session is None:
        raise ActionRefusedError("sign in with the actions token first (/login)")
    if not dashboard.access.csrf_matches(session, form.get("csrf", "")):
        raise ActionRefusedError("the form's CSRF token is missing or stale; reload the page")
    return dashboard, form


def refused_page(request: Request, exc: Exception) -> Response:
    """A refused action as a 403 page saying why (and nothing done)."""
    return dashboard_of(request).page(request, "error.html", status_code=403, error=str(exc))


def _with_message(path: str, key: str) -> str:
    return f"{path}{'&' if '?' in path else '?'}message={key}"


# -- signing in ------------------------------------------------------------------------


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: str | None = None) -> HTMLResponse:
    """The form that takes the actions token."""
    target = local_path(next, "/executions")
    return dashboard_of(request).page(request, "login.html", next=target, error=None)


@router.post("/login", response_model=None)
async def login(request: Request) -> Response:
    """Exchange the token for a session cookie (HttpOnly, SameSite=Strict)."""
    dashboard = dashboard_of(request)
    assert dashboard.access is not None
    _from_our_pages(request)
    form = await _form(request)
    target = local_path(form.get("next"), "/executions")
    if not dashboard.access.token_matches(form.get("token", "")):
        log.warning("a sign-in with a wrong token from %s", request.client)
        return dashboard.page(
            request, "login.html", status_code=403, next=target, error="That is not the token."
        )
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        dashboard.access.cookie_name,
        dashboard.access.new_session(),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/logout")
async def logout(request: Request) -> RedirectResponse:
    """Forget the session cookie."""
    dashboard, _form_fields = await _signed_form(request)
    assert dashboard.access is not None
    response = RedirectResponse("/executions", status_code=303)
    response.delete_cookie(dashboard.access.cookie_name)
    return response


# -- the actions -----------------------------------------------------------------------


def _call(dashboard: Dashboard, action: str, execution_id: str, form: dict[str, str]) -> Any:
    """The orchestrator call that carries out `action`, as an awaitable."""
    orchestrator = dashboard.orchestrator
    assert orchestrator is not None
    force = form.get("force") == "on"
    if action == "resume":
        return orchestrator.resume_async(execution_id, force=force)
    if action == "compensate":
        return orchestrator.compensate_async(execution_id, force=force)
    if action == "cancel":
        return orchestrator.cancel_async(execution_id, force=force)
    return asyncio.to_thread(orchestrator.resolve, execution_id, form.get("note", ""))


def _finished(action: str, task: asyncio.Task[Outcome]) -> tuple[str, bool]:
    """What an action's task came to, as a message and whether it went as asked."""
    error = task.exception()
    if isinstance(error, SagaError):
        return f"Error: {error}", False
    if error is not None:
        return f"Error: {action} failed unexpectedly ({type(error).__name__}; see the log)", False
    outcome = task.result()
    text = f"{action}: {outcome.execution_id} is {outcome.status.value}"
    if outcome.error and action != "resolve":  # a resolution's outcome repeats the old error
        text += f" ({outcome.error})"
    return text, True


def _settled(action: str, execution_id: str, task: asyncio.Task[Outcome]) -> None:
    """Log how a background action ended (it may outlive its request)."""
    if task.cancelled():
        log.info("%s of %s was handed back at shutdown", action, execution_id)
        return
    error = task.exception()
    if error is not None and not isinstance(error, SagaError):
        log.error("%s of %s failed", action, execution_id, exc_info=error)
    else:
        log.info("%s of %s: %s", action, execution_id, _finished(action, task)[0])


@router.post("/executions/{execution_id}/{action}")
async def act(request: Request, execution_id: str, action: str) -> Response:
    """Carry out `action` on one execution, then show the outcome on the page it came from."""
    if action not in ACTIONS:
        return dashboard_of(request).page(
            request, "error.html", status_code=404, error=f"no action {action!r}"
        )
    dashboard, form = await _signed_form(request)
    call: Awaitable[Outcome] = _call(dashboard, action, execution_id, form)
    task: asyncio.Task[Outcome] = asyncio.ensure_future(call)
    dashboard.tasks.add(task)
    task.add_done_callback(dashboard.tasks.discard)
    task.add_done_callback(lambda done: _settled(action, execution_id, done))
    await asyncio.wait({task}, timeout=ACTION_WAIT_SECONDS)
    if task.done():
        text, ok = _finished(action, task)
    else:
        text, ok = (
            f"{action} of {execution_id} goes on in the background; this page follows it",
            True,
        )
    back = local_path(form.get("next"), f"/executions/{execution_id}")
    return RedirectResponse(_with_message(back, dashboard.remember(text, ok=ok)), status_code=303)
