"""What a URL (a database's or a service's) may show: never its credentials.

One place decides it, whatever the password's characters: every message,
log line, JSON output and stored payload that names a URL goes through
:func:`redact_url`, and text that may quote one (a driver's error message)
through :func:`scrub`. The CLI hands :func:`remember` the URLs
it is given (--db, --to, --services) and passes every line it prints through
:func:`mask`, so a secret quoted anywhere (an exception, a -v line) is hidden.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from urllib.parse import unquote

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


def _is_secret(name: str) -> bool:
    return unquote(name).strip().lower() in SECRET_PARAMETERS


def _redact_query(rest: str) -> str:
    path, sep, query = rest.partition("?")
    if not sep:
        return rest
    # No fragment is split off: a ``#`` may be part of a password, so a
    # secret's value runs to the next ``&`` (a wrong guess masks more, never less).
    parts = []
    for item in query.split("&"):
        name, eq, _value = item.partition("=")
        parts.append(f"{name}={MASK}" if eq and _is_secret(name) else item)
    return f"{path}?{'&'.join(parts)}"


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
        kept = [item for item in query.split("&") if not _is_secret(item.partition("=")[0])]
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
        for item in query.split("&"):
            name, eq, value = item.partition("=")
            if eq and _is_secret(name):
                found.append(value)
    # A driver may quote the password decoded (%40 as @, + as a space).
    found += [unquote(s) for s in found] + [unquote(s.replace("+", " ")) for s in found]
    return sorted({s for s in found if s}, key=len, reverse=True)


def scrub(text: str, urls: Iterable[str]) -> str:
    """`text` with every URL of `urls`, and every secret in them, masked."""
    for url in urls:
        if url in text:
            text = text.replace(url, redact_url(url))
        for secret in secrets_of(url):
            text = text.replace(secret, MASK)
    return text


# -- the secrets this process was given ---------------------------------------------

MIN_REMEMBERED = 4
_known: set[str] = set()
_known_lock = threading.Lock()
# A scheme starts a word and is short: matching stays linear on long text.
_SCHEME = r"(?<![A-Za-z0-9+.-])[A-Za-z][A-Za-z0-9+.-]{0,30}://"
_URL = re.compile(_SCHEME + r"\S+")
# userinfo in any URL, and key=value secrets in any text (libpq's conninfo included).
_USERINFO = re.compile(r"(?P<head>" + _SCHEME + r"[^\s/@:]{0,256}:)[^\s\"']{0,1024}@")
_ASSIGNED = re.compile(
    r"(?P<head>\b(?:"
    + "|".join(sorted(SECRET_PARAMETERS))
    + r")\s*=\s*)(?P<value>'[^']*'|[^\s&'\"]+)",
    re.IGNORECASE,
)


def remember(text: str) -> None:
    """Note the secrets of every URL in `text` (an option's value), so output never shows them.

    The CLI calls it with --db, --to and --services as they are parsed;
    :func:`mask` then masks them in every line it prints.
    """
    found = [secret for url in _URL.findall(text) for secret in secrets_of(url)]
    if "://" not in text:  # a bare conninfo or password-bearing text
        found += secrets_of(f"x://{text}") if "@" in text else []
    with _known_lock:
        # A secret of one to three characters would garble every line it
        # masks; redact_url and the patterns in mask still hide it in URLs.
        _known.update(s for s in found if len(s) >= MIN_REMEMBERED)


def mask(text: str) -> str:
    """`text` fit for a terminal or a log file: no remembered secret, no URL password.

    Covers what :func:`redact_url` cannot see coming: a driver's message
    quoting the URL or its password, a URL inside an exception.
    """
    with _known_lock:
        known = sorted(_known, key=len, reverse=True)
    for secret in known:
        text = text.replace(secret, MASK)
    text = _USERINFO.sub(lambda m: f"{m.group('head')}{MASK}@", text)
    return _ASSIGNED.sub(
        lambda m: m.group(0) if m.group("value").startswith(MASK) else m.group("head") + MASK,
        text,
    )
