"""A whole CLI session with passwords in the URLs never prints them (issue #15).

The password is in the PostgreSQL URL's userinfo (with ``#`` and a
percent-encoded ``@``, which once defeated the masking), or in libpq's
``?password=`` query parameter, and in the services' URLs. Every command of
the session runs with ``-v``; every line it prints, on stdout and on stderr,
errors included, is searched for the secrets, raw and decoded.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from support import BOOKING, run_saga

DB_SECRET = "Pg#Secret%40Word"
SERVICE_SECRET = "SvcS3cret#1"
SECRETS = (DB_SECRET, "Pg#Secret@Word", "Secret%40Word", "Secret@Word", SERVICE_SECRET, "S3cret#1")
SERVICES = ",".join(
    f"{name}=http://ops:{SERVICE_SECRET}@127.0.0.1:1" for name in ("flight", "hotel", "car")
)


def with_password(url: str, form: str) -> str:
    """`url` (``scheme://postgres@host/db``) with the password in userinfo or the query."""
    if form == "userinfo":
        return url.replace("postgres@", f"postgres:{DB_SECRET}@", 1)
    return f"{url}?password={DB_SECRET}&connect_timeout=5"


def session(db: str, tmp_path: Path) -> list[tuple[tuple[str, ...], int, str]]:
    """Run a session of commands on `db`: (arguments, exit code, everything printed)."""
    unreachable = db.replace("127.0.0.1:5432", "127.0.0.1:1")
    missing = db.replace("/saga_test_", "/no_such_db_")
    steps: list[tuple[str, tuple[str, ...]]] = [
        (db, ("db", "upgrade")),
        (db, ("db", "status")),
        (db, ("book", *BOOKING)),
        (db, ("book", *BOOKING, "--fail", "car", "--json")),
        (db, ("book", *BOOKING, "--submit")),
        (db, ("list",)),
        (db, ("list", "--json")),
        (db, ("stats", "--json")),
        (db, ("workers",)),
        (db, ("worker", "--exit-when-idle", "--json")),
        (db, ("definitions", "--json")),
        (db, ("book", *BOOKING, "--services", SERVICES, "--service-timeout", "0.2")),
        (db, ("check", "--services", SERVICES)),
        (db, ("inventory", "--services", SERVICES, "--json")),
        (db, ("show", "0000")),
        (db, ("resume", "--all", "--json")),
        (db, ("list", "--cursor", "bogus")),
        (db, ("db", "copy", "--to", db)),
        (db, ("db", "copy", "--to", unreachable)),
        (db, ("db", "copy", "--to", str(tmp_path / "copy.db"))),
        (db, ("db", "copy", "--to", str(tmp_path / "copy.db"), "--json")),
        (unreachable, ("list",)),
        (missing, ("db", "status")),
        (missing, ("-q", "list")),
    ]
    ran = []
    for url, args in steps:
        verbose = args if args[0] == "-q" else ("-v", *args)
        result = run_saga(url, *verbose, timeout=120)
        ran.append((args, result.code, result.stdout + result.stderr))
    return ran


@pytest.mark.parametrize("form", ["userinfo", "query"])
def test_no_password_in_any_output_of_a_whole_session(
    pg_empty_url: str, tmp_path: Path, form: str
) -> None:
    db = with_password(pg_empty_url, form)

    ran = session(db, tmp_path)

    printed = "\n".join(output for _args, _code, output in ran)
    leaks = [(args, s) for args, _code, output in ran for s in SECRETS if s in output]
    assert not leaks, leaks
    assert "Traceback" not in printed
    # The session did what it says: the log was reached, and each error was one line.
    codes = {args: code for args, code, _output in ran}
    assert codes[("book", *BOOKING)] == 0
    assert codes[("db", "copy", "--to", str(tmp_path / "copy.db"))] == 0
    assert "***" in printed
    for args, code, output in ran:
        if code in (1, 2) and args[0] != "resume":
            errors = [line for line in output.splitlines() if line.startswith("Error: ")]
            assert len(errors) == 1, (args, output)
