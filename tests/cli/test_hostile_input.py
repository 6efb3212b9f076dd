"""No input makes a traceback (issue #15): hypothesis drives each command with hostile values.

Each case is a command with one option (or argument) given a generated value
that must be refused: numbers that are NaN, infinite, negative or huge;
strings with escape sequences, lone surrogates or a megabyte of text; files
that never end, nest JSON a thousand levels deep or are not UTF-8; URLs that
carry a password. Whatever the value, the command prints one ``Error:`` line
on stderr, exits 1 or 2, leaves the log as it was, and never shows the password.
Commands run in this process (``support.invoke_saga``), so hundreds of them
take seconds.
"""

from __future__ import annotations

import json
import shutil
import string
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import BOOKING, dump, invoke_saga, query, run_saga

from saga_cli.errors import InvalidInputError
from saga_cli.views import parse_cursor

SECRET = "Hunter2SECRET"
EXAMPLES = settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@dataclass(frozen=True)
class Log:
    """A log with a completed, a stuck and an interrupted execution, and hostile files."""

    db: Path
    stuck: str
    free: str
    files: dict[str, Path]


def _hostile_files(where: Path) -> dict[str, Path]:
    files = {
        "deep": "[" * 5000 + "]" * 5000,
        "deep-object": '{"a": ' * 2000 + "1" + "}" * 2000,
        "nan": '{"x": NaN}',
        "infinity": '{"x": -Infinity}',
        "huge-number": '{"x": 1e999}',
        "not-an-object": "[1, 2]",
        "empty": "",
        "services": "flight=http://u:" + SECRET + "@127.0.0.1:99999\n",
    }
    paths = {name: where / f"{name}.txt" for name in files}
    for name, text in files.items():
        paths[name].write_text(text, encoding="utf-8")
    paths["latin-1"] = where / "latin-1.txt"
    paths["latin-1"].write_bytes(b'{"x": "\xe9\xff"}')
    paths["directory"] = where
    paths["missing"] = where / "missing.json"
    paths["zero"] = Path("/dev/zero")
    paths["big"] = where / "big.json"
    paths["big"].write_text('{"x": "' + "a" * (9 * 2**20) + '"}', encoding="utf-8")
    return paths


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory, migrated_template: Path) -> Log:
    where = tmp_path_factory.mktemp("hostile")
    db = where / "saga.db"
    shutil.copyfile(migrated_template, db)
    assert run_saga(str(db), "book", *BOOKING).code == 0
    assert run_saga(str(db), "book", *BOOKING, "--crash-at", "car:before").code == -9
    stuck = run_saga(
        str(db), "book", *BOOKING, "--fail", "car", "--fail-compensation", "hotel:always", "--json"
    )
    assert stuck.code == 4, stuck
    free = where / "free.py"
    free.write_text(FREE_SAGA, encoding="utf-8")
    return Log(db, stuck.json()["id"], f"{free}:free", _hostile_files(where))


# -- hostile values ---------------------------------------------------------------------

SPECIAL_NUMBERS = ["nan", "NaN", "inf", "-inf", "Infinity", "1e309", "-1", "-0.5", "1e400"]
CONTROL_TEXT = st.lists(
    st.sampled_from(["\x1b", "[2J", "\x1b]0;t\x07", "\x00", "\ud800", "\u202e", "é", "a"]),
    min_size=1,
    max_size=20,
).map("".join)
ANY_TEXT = st.text(max_size=60) | CONTROL_TEXT | st.just("x" * 100_000)


def numbers_outside(low: float, high: float, *, whole: bool = False) -> st.SearchStrategy[str]:
    """Texts that are not a number from `low` to `high` (not a whole one, with `whole`)."""

    def refused(text: str) -> bool:
        try:
            value = float(text) if not whole else int(text)
        except (ValueError, OverflowError):
            return True
        return not low <= value <= high

    return (
        st.sampled_from(SPECIAL_NUMBERS)
        | st.integers(max_value=int(low) - 1).map(str)
        | st.integers(min_value=int(high) + 1).map(str)
        | st.floats(min_value=high, exclude_min=True).map(repr)
        | ANY_TEXT
    ).filter(refused)


# What follows STEP: in --flaky STEP:N (and @ in --crash-at): never a count from 1 to 10**6.
COUNTS = st.sampled_from(["0", "-1", "²", "١", "1.5", "nan", "9" * 5000, "1000001"]) | st.integers(
    min_value=10**6 + 1
).map(str)
DURATIONS = (
    st.sampled_from(["1000000d", "3651d", "0s", "-5s", "1e5", "", "nan", "infs", "9" * 400 + "h"])
    | st.integers(min_value=10**9).map(lambda n: f"{n}s")
    | CONTROL_TEXT
)
INSTANTS = DURATIONS | st.sampled_from(["0001-01-01", "1969-12-31", "2026-13-01", "10000-01-01"])
NOT_IDS = ANY_TEXT.filter(lambda text: not set(text) <= set(string.hexdigits))
SECRET_URLS = st.sampled_from(
    [
        f"http://u:{SECRET}@127.0.0.1:99999",
        f"ftp://u:{SECRET}@127.0.0.1:8001",
        f"flight=http://u:{SECRET}@:8001",
        f"bus=http://u:{SECRET}@127.0.0.1:8001",
        f"http://u:{SECRET}#x@127.0.0.1:8001,http://h:1",
    ]
)


def not_a_cursor(text: str) -> bool:
    try:
        parse_cursor(text)
    except InvalidInputError:
        return True
    return False


def files(*names: str) -> Callable[[Log], st.SearchStrategy[str]]:
    return lambda log: st.sampled_from([str(log.files[name]) for name in names])


def values(strategy: st.SearchStrategy[str]) -> Callable[[Log], st.SearchStrategy[str]]:
    return lambda _log: strategy


PAYLOAD_FILES = files(
    "deep", "deep-object", "nan", "infinity", "huge-number", "not-an-object", "empty",
    "latin-1", "directory", "missing", "zero", "big",
)  # fmt: skip
FREE = "{free}"
# A one-step saga without a payload model: any JSON object is its payload.
FREE_SAGA = """
from saga_cli import Saga

free = Saga("free")
free.step("only", kind="pivot")(lambda ctx: None)
"""

# (name, the command with {} for the value, the values)
CASES: list[tuple[str, tuple[str, ...], Callable[[Log], st.SearchStrategy[str]]]] = [
    ("run --payload", ("run", FREE, "--payload", "{}"), values(ANY_TEXT | st.sampled_from(
        ['{"x": NaN}', '{"x": Infinity}', "[" * 3000, '{"x": 1e999}', "[]", '"s"']
    ))),
    ("run --payload-file", ("run", FREE, "--payload-file", "{}"), PAYLOAD_FILES),
    ("run --deadline", ("run", FREE, "--payload", "{}", "--deadline", "{}"), values(DURATIONS)),
    ("book --deadline", ("book", *BOOKING, "--deadline", "{}"), values(DURATIONS)),
    ("book --service-timeout", ("book", *BOOKING, "--service-timeout", "{}"),
     values(numbers_outside(0.001, 3600))),
    ("book --services", ("book", *BOOKING, "--services", "{}"), values(SECRET_URLS)),
    ("book --services FILE", ("book", *BOOKING, "--services", "{}"),
     files("services", "zero", "directory", "latin-1", "big")),
    ("book --flaky", ("book", *BOOKING, "--flaky", "{}"), values(COUNTS.map("car:{}".format))),
    ("book --crash-at", ("book", *BOOKING, "--crash-at", "{}"),
     values(COUNTS.map("car:after@{}".format) | ANY_TEXT)),
    ("run --slow", ("run", FREE, "--payload", "{}", "--slow", "{}"),
     values(numbers_outside(0, 3600).map("only:{}".format))),
    ("resume ID", ("resume", "{}"), values(NOT_IDS)),
    ("resume --concurrency", ("resume", "--all", "--concurrency", "{}"),
     values(numbers_outside(1, 1024, whole=True))),
    ("show ID", ("show", "{}"), values(NOT_IDS)),
    ("list --cursor", ("list", "--cursor", "{}"), values(ANY_TEXT.filter(not_a_cursor))),
    ("list --since", ("list", "--since", "{}"), values(INSTANTS)),
    ("list --limit", ("list", "--limit", "{}"), values(numbers_outside(1, 1e6, whole=True))),
    ("stats --since", ("stats", "--since", "{}"), values(DURATIONS)),
    ("resolve --note", ("resolve", "{stuck}", "--note", "{}"), values(
        CONTROL_TEXT.filter(lambda t: any(c < " " or "\ud800" <= c <= "\udfff" for c in t))
        | st.just(" \n\t ") | st.just("x" * 2001)
    )),
    ("worker --lease", ("worker", "--exit-when-idle", "--lease", "{}"),
     values(numbers_outside(1, 86400))),
    ("worker --poll", ("worker", "--exit-when-idle", "--poll", "{}"),
     values(numbers_outside(0.01, 3600))),
    ("worker --grace", ("worker", "--exit-when-idle", "--grace", "{}"), values(DURATIONS)),
    ("worker --concurrency", ("worker", "--exit-when-idle", "--concurrency", "{}"),
     values(numbers_outside(1, 1024, whole=True))),
    ("serve --delay", ("serve", "flight", "--delay", "{}"), values(numbers_outside(0, 3600))),
    ("serve --port", ("serve", "flight", "--port", "{}"),
     values(numbers_outside(1, 65535, whole=True))),
    ("db copy --to", ("db", "copy", "--to", "{}"), lambda log: st.sampled_from([
        str(log.db), str(log.files["directory"]), str(log.files["zero"]),
        f"postgresql+psycopg://postgres:{SECRET}#x@127.0.0.1:1/none",
        f"postgresql://postgres@127.0.0.1:1/none?password={SECRET}",
        "sqlite:////no/such/directory/x.db",
    ])),
]  # fmt: skip


@pytest.mark.parametrize(("command", "template", "hostile"), CASES, ids=[c[0] for c in CASES])
@EXAMPLES
@given(data=st.data())
def test_a_hostile_value_is_one_error_line_and_changes_nothing(
    log: Log,
    command: str,
    template: tuple[str, ...],
    hostile: Callable[[Log], st.SearchStrategy[str]],
    data: st.DataObject,
) -> None:
    value = data.draw(hostile(log), label=command)
    args = [
        value if part == "{}" else part.replace("{stuck}", log.stuck).replace("{free}", log.free)
        for part in template
    ]
    before = dump(log.db)

    result = invoke_saga(log.db, *args)

    assert result.code in (1, 2), result
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "\x1b" not in result.stderr and "\x07" not in result.stderr
    assert SECRET not in result.stderr + result.stdout
    assert dump(log.db) == before


def test_closed_and_endless_standard_input_are_refused_in_one_line(log: Log) -> None:
    """Through a real process: stdin closed (``<&-``) and stdin that never ends."""
    import subprocess

    from conftest import cli_env, saga_executable

    command = [saga_executable(), "--db", str(log.db), "run", log.free, "--payload-file", "-"]
    before = dump(log.db)
    closed = subprocess.run(
        ["sh", "-c", 'exec "$@" <&-', "sh", *command],
        capture_output=True, text=True, env=cli_env(), timeout=60,
    )  # fmt: skip
    with open("/dev/zero", "rb") as endless:
        flood = subprocess.run(
            command, stdin=endless, capture_output=True, text=True, env=cli_env(), timeout=60
        )

    for result, fragment in ((closed, "closed"), (flood, "larger than 8 MiB")):
        assert result.returncode == 2, result
        assert result.stderr.count("\n") == 1 and fragment in result.stderr, result.stderr
    assert dump(log.db) == before


def test_show_json_never_prints_nan_even_from_an_old_log(log: Log, tmp_path: Path) -> None:
    """A log written before payloads were checked may hold NaN: --json prints null instead."""
    db = tmp_path / "old.db"
    shutil.copyfile(log.db, db)
    (execution_id,) = query(db, "SELECT id FROM saga_execution WHERE status='completed'")[0]
    from support import execute

    execute(db, "UPDATE saga_execution SET payload=? WHERE id=?", ('{"x": NaN}', execution_id))

    shown = invoke_saga(db, "show", str(execution_id), "--json")

    assert shown.code == 0, shown
    assert "NaN" not in shown.stdout
    json.loads(shown.stdout, parse_constant=lambda name: pytest.fail(f"{name} in the output"))


def test_escape_sequences_in_the_log_never_reach_the_terminal(log: Log, tmp_path: Path) -> None:
    """A log written by an older saga (or by hand) may hold them: show prints them as `?`."""
    from support import execute

    db = tmp_path / "old.db"
    shutil.copyfile(log.db, db)
    hostile = "\x1b]0;owned\x07\x1b[2J\u202egnp.exe"
    execute(db, "UPDATE saga_execution SET saga=? WHERE id=?", (hostile, log.stuck))

    shown = invoke_saga(db, "show", log.stuck)
    listed = invoke_saga(db, "list")

    assert shown.code == 0, shown
    for output in (shown.stdout, listed.stdout):
        assert "\x1b]" not in output and "\x07" not in output and "\u202e" not in output
    assert "?]0;owned" in shown.stdout and "?[2J?gnp.exe" in shown.stdout
