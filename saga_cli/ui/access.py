"""Who may press the dashboard's action buttons: a token, a signed session, a CSRF token.

The dashboard is read-only unless it is started with actions allowed. Then
an operator signs in once with the token (printed when ``saga ui`` starts, or
set with ``SAGA_UI_TOKEN``) and gets a session cookie: a random session id
signed with the token (HMAC-SHA256), HttpOnly and SameSite=Strict. Every
action is a POST whose form carries a CSRF token derived from the session id
(a page of another site cannot read it), and whose Origin, when the browser
sends one, must be the dashboard's own. A new random token at each start
signs out every session of the previous run.

Nothing here imports the web framework: these are plain functions of
strings, tested on their own.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from saga_cli.errors import InvalidInputError

TOKEN_ENV = "SAGA_UI_TOKEN"
MIN_TOKEN_LENGTH = 16


def _sign(key: str, message: str) -> str:
    return hmac.new(key.encode(), message.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class Access:
    """The actions token and what is derived from it.

    Args:
        token: the secret an operator types to sign in.
        generated: True when it was made at start (so it must be printed).
    """

    token: str
    generated: bool = False

    @classmethod
    def create(cls, given: str | None) -> Access:
        """The token from ``SAGA_UI_TOKEN`` (`given`), or a new random one.

        Raises:
            InvalidInputError: the given token is too short to resist guessing.
        """
        if given is None or given == "":
            return cls(secrets.token_urlsafe(24), generated=True)
        if len(given) < MIN_TOKEN_LENGTH:
            raise InvalidInputError(
                f"{TOKEN_ENV} must be at least {MIN_TOKEN_LENGTH} characters long "
                f"(got {len(given)})"
            )
        return cls(given)

    @property
    def cookie_name(self) -> str:
        """The session cookie's name, distinct per token.

        Cookies do not tell ports apart, so two dashboards on one host would
        otherwise overwrite each other's sessions.
        """
        return "saga_ui_" + _sign(self.token, "cookie")[:10]

    def token_matches(self, given: str) -> bool:
        """Whether `given` is the token (compared in constant time)."""
        return hmac.compare_digest(given.encode(), self.token.encode())

    def new_session(self) -> str:
        """A signed session cookie value for someone who just gave the token."""
        session = secrets.token_urlsafe(18)
        return f"{session}.{_sign(self.token, 'session:' + session)}"

    def session_of(self, cookie: str | None) -> str | None:
        """The session id inside a cookie value, or None when it was not signed with the token."""
        if not cookie:
            return None
        session, _, signature = cookie.partition(".")
        expected = _sign(self.token, "session:" + session)
        if not session or not hmac.compare_digest(signature.encode(), expected.encode()):
            return None
        return session

    def csrf_token(self, session: str) -> str:
        """The CSRF token that a session's forms carry."""
        return _sign(self.token, "csrf:" + session)

    def csrf_matches(self, session: str, given: str) -> bool:
        """Whether a form's CSRF token belongs to `session` (constant time)."""
        return hmac.compare_digest(given.encode(), self.csrf_token(session).encode())


def same_origin(origin: str | None, fetch_site: str | None, scheme: str, host: str) -> bool:
    """Whether a POST comes from the dashboard's own pages, as far as the browser says.

    Browsers send ``Sec-Fetch-Site`` and ``Origin`` with a form's POST; a
    request without them (a script with the cookie and CSRF token) is left to
    the CSRF check alone.
    """
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        return False
    return origin is None or origin == f"{scheme}://{host}"


def local_path(target: str | None, default: str) -> str:
    """`target` if it is a path on this site (``/stuck``), else `default`: no open redirects."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return default
