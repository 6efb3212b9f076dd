"""redact_url and friends never let a credential through, whatever its characters."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from saga_cli.redact import redact_url, scrub, secrets_of, strip_credentials


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "postgresql+psycopg://postgres:SECRET@h:5432/db",
            "postgresql+psycopg://postgres:***@h:5432/db",
        ),
        (
            "postgresql://postgres:SECRET#PW@127.0.0.1:5432/nope",
            "postgresql://postgres:***@127.0.0.1:5432/nope",
        ),
        ("postgresql://u:p@ss/w?rd@h/db", "postgresql://u:***@h/db"),
        (
            "postgresql://u@h/db?password=SECRET&sslmode=require",
            "postgresql://u@h/db?password=***&sslmode=require",
        ),
        ("http://u:s3cr3t@127.0.0.1:18001", "http://u:***@127.0.0.1:18001"),
        ("http://127.0.0.1:18001/x?token=abc", "http://127.0.0.1:18001/x?token=***"),
        ("saga.db", "saga.db"),
    ],
)
def test_a_url_shows_no_credentials(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_what_is_stored_has_no_credentials_at_all() -> None:
    assert strip_credentials("http://u:s3cr3t@h:1/p?token=t&x=1") == "http://h:1/p?x=1"
    assert strip_credentials("http://h:1") == "http://h:1"


password = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\x00*"),
    min_size=4,
    max_size=30,
)


@given(secret=password)
def test_no_password_survives_redaction_or_scrubbing(secret: str) -> None:
    url = f"postgresql+psycopg://postgres:{secret}@127.0.0.1:5432/test"
    assert redact_url(url) == "postgresql+psycopg://postgres:***@127.0.0.1:5432/test"
    assert secret in secrets_of(url)
    message = f'connection to "{url}" failed: password authentication failed ({secret})'
    assert secret not in scrub(message, [url])
