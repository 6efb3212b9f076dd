"""The actions token, the session cookie and the CSRF token, without a server."""

from __future__ import annotations

import pytest

from saga_cli.errors import InvalidInputError
from saga_cli.ui.access import Access, local_path, same_origin


def test_a_generated_token_is_long_random_and_says_it_was_generated() -> None:
    first, second = Access.create(None), Access.create("")
    assert first.generated and len(first.token) >= 32
    assert first.token != second.token


def test_a_given_token_is_kept_and_a_short_one_refused() -> None:
    assert Access.create("s" * 16) == Access("s" * 16, generated=False)
    with pytest.raises(InvalidInputError, match="at least 16 characters"):
        Access.create("s" * 15)


def test_a_session_is_valid_only_under_the_token_that_signed_it() -> None:
    access, other = Access("a" * 20), Access("b" * 20)
    cookie = access.new_session()
    session = access.session_of(cookie)

    assert session is not None and cookie.startswith(session + ".")
    assert other.session_of(cookie) is None
    assert access.session_of(session + ".forged") is None
    assert access.session_of("") is None and access.session_of(None) is None
    assert access.new_session() != cookie
    assert access.cookie_name != other.cookie_name


def test_a_csrf_token_belongs_to_one_session() -> None:
    access = Access("a" * 20)
    one, two = (access.session_of(access.new_session()) for _ in range(2))
    assert one is not None and two is not None

    assert access.csrf_matches(one, access.csrf_token(one))
    assert not access.csrf_matches(two, access.csrf_token(one))
    assert not access.csrf_matches(one, "")


@pytest.mark.parametrize(
    ("origin", "site", "allowed"),
    [
        (None, None, True),  # a script: left to the CSRF token
        ("http://127.0.0.1:8080", "same-origin", True),
        ("http://127.0.0.1:8080", None, True),
        ("http://evil.example", None, False),
        ("http://127.0.0.1:8080", "cross-site", False),
        (None, "same-site", False),  # another port of the same host is another origin
        ("null", None, False),
    ],
)
def test_same_origin(origin: str | None, site: str | None, allowed: bool) -> None:
    assert same_origin(origin, site, "http", "127.0.0.1:8080") is allowed


@pytest.mark.parametrize(
    ("target", "kept"),
    [
        ("/stuck", "/stuck"),
        ("/executions/ab?x=1", "/executions/ab?x=1"),
        ("//evil.example", "/"),
        ("https://evil.example", "/"),
        ("\\\\evil", "/"),
        ("/\\evil", "/"),
        (None, "/"),
        ("", "/"),
    ],
)
def test_redirects_stay_on_the_site(target: str | None, kept: str) -> None:
    assert local_path(target, "/") == kept
