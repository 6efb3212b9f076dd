"""What a URL (a database's or a service's) may show: never its credentials.

One place decides it, whatever the password's characters: every message,
log line, JSON output and stored payload that names a URL goes through
:func:`redact_url`, and text that may quote one (a driver's error message)
through :func:`scrub`.
"""

from __future__ import annotations

from collections.abc import Iterable

MASK = "***"
# Query parameters that carry secrets (libpq's, and the usual API ones).
SECRET_PARAMETERS = frozenset(
    {
        "password",
        "passwd",
        "pwd",
        "sslpassword",
        "secret",
        "token",
        "access_token",
        "api_key",
        "apikey",
        "auth",
    }
)


def _split(url: str) -> tuple[str, str | None, str]:
    """(scheme and ``://``, userinfo or None, the rest) of `url`.

    The userinfo ends at the last ``@`` before the host, so a password may
    hold ``@``, ``#``, ``/``, ``?`` or ``:`` (a wrong guess masks more, never less).
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "", None, url
    at = rest.rfind("@")
    if at < 0:
        return scheme + sep, None, rest
    return scheme + sep, rest[:at], rest[at + 1 :]


def _redact_query(rest: str) -> str:
    path, sep, query = rest.partition("?")
    if not sep:
        return rest
    query, hash_, fragment = query.partition("#")
    parts = []
    for item in query.split("&"):
        name, eq, _value = item.partition("=")
        parts.append(f"{name}={MASK}" if eq and name.lower() in SECRET_PARAMETERS else item)
    return f"{path}?{'&'.join(parts)}{hash_}{fragment}"


def redact_url(url: str) -> str:
    """`url` with its password and secret query parameters replaced by ``***``."""
    prefix, userinfo, rest = _split(url)
    if userinfo is not None:
        user, colon, _password = userinfo.partition(":")
        userinfo = f"{user}:{MASK}" if colon else user
        rest = f"{userinfo}@{rest}"
    return prefix + _redact_query(rest)


def strip_credentials(url: str) -> str:
    """`url` without its userinfo and secret query parameters: what may be stored."""
    prefix, _userinfo, rest = _split(url)
    path, sep, query = rest.partition("?")
    if sep:
        kept = [
            item
            for item in query.split("&")
            if item.partition("=")[0].lower() not in SECRET_PARAMETERS
        ]
        rest = path + ("?" + "&".join(kept) if kept else "")
    return prefix + rest


def secrets_of(url: str) -> list[str]:
    """The secret parts of `url` (its password, secret query values), longest first."""
    found: list[str] = []
    _prefix, userinfo, rest = _split(url)
    if userinfo is not None and ":" in userinfo:
        found.append(userinfo.partition(":")[2])
    _path, sep, query = rest.partition("?")
    if sep:
        for item in query.partition("#")[0].split("&"):
            name, eq, value = item.partition("=")
            if eq and name.lower() in SECRET_PARAMETERS:
                found.append(value)
    return sorted((s for s in found if s), key=len, reverse=True)


def scrub(text: str, urls: Iterable[str]) -> str:
    """`text` with every URL of `urls`, and every secret in them, masked."""
    for url in urls:
        if url in text:
            text = text.replace(url, redact_url(url))
        for secret in secrets_of(url):
            text = text.replace(secret, MASK)
    return text
