"""Bad input: one `Error: …` line on stderr, exit 2, and nothing in the log changed."""

from __future__ import annotations

import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import SagaCli
from support import BOOKING, assert_one_line_error, dump, query


@dataclass(frozen=True)
class Populated:
    """A log of 17 executions (so two ids share a first hex digit) plus an interrupted one."""

    db: Path
    listing: str
    ambiguous: str
    unknown: str
    interrupted: str


@pytest.fixture(scope="module")
def populated(tmp_path_factory: pytest.TempPathFactory, migrated_template: Path) -> Populated:
    db = tmp_path_factory.mktemp("populated") / "saga.db"
    shutil.copyfile(migrated_template, db)
    saga = SagaCli(db)
    assert saga("inventory", "--restock", "100").code == 0
    assert saga("simulate", "--count", "17", "--seed", "5").code == 0
    assert saga("book", *BOOKING, "--crash-at", "hotel:after").code == -9
    ids = [str(row[0]) for row in query(db, "SELECT id FROM saga_execution")]
    (interrupted,) = [
        str(row[0]) for row in query(db, "SELECT id FROM saga_execution WHERE status='running'")
    ]
    first_digits = Counter(i[0] for i in ids)
    ambiguous = next(digit for digit, n in first_digits.items() if n > 1)
    unknown = next(d * 3 for d in "0123456789abcdef" if not any(i.startswith(d * 3) for i in ids))
    listing = saga("list", "--limit", "100", "--json")
    assert listing.code == 0, listing
    assert len(listing.json()) == 18
    return Populated(db, listing.stdout, ambiguous, unknown, interrupted)


@pytest.fixture
def copy(populated: Populated, tmp_path: Path) -> SagaCli:
    """The real `saga` bound to a private copy of the populated log."""
    shutil.copyfile(populated.db, tmp_path / "saga.db")
    return SagaCli(tmp_path / "saga.db")


CASES = [
    pytest.param(("show", "{unknown}"), "no execution matches", id="show-unknown-id"),
    pytest.param(("show", "{unknown}" * 10 + "ab"), "no execution", id="show-unknown-full-id"),
    pytest.param(("show", "not-hex"), "hexadecimal", id="show-non-hex-id"),
    pytest.param(("show", "{ambiguous}"), "more than one execution", id="show-ambiguous-id"),
    pytest.param(("resume", "{ambiguous}"), "more than one execution", id="resume-ambiguous"),
    pytest.param(("resume", "{unknown}"), "no execution matches", id="resume-unknown-id"),
    pytest.param(("compensate", "{ambiguous}"), "more than one", id="compensate-ambiguous"),
    pytest.param(("compensate", "{unknown}"), "no execution matches", id="compensate-unknown"),
    pytest.param(("resume",), "either an execution ID or --all", id="resume-neither"),
    pytest.param(("resume", "{interrupted}", "--all"), "either", id="resume-id-and-all"),
    pytest.param(("book", *BOOKING, "--fail", "bus"), "unknown step 'bus'", id="book-fail-bus"),
    pytest.param(("simulate", "--fail", "bus"), "unknown step 'bus'", id="simulate-fail-bus"),
    pytest.param(
        ("book", *BOOKING, "--crash-at", "bus:before"), "unknown step 'bus'", id="crash-at-bus"
    ),
    pytest.param(
        ("book", *BOOKING, "--crash-at", "compensate-confirm:after"),
        "unknown step 'confirm'",
        id="crash-at-compensate-confirm",
    ),
    pytest.param(
        ("book", *BOOKING, "--crash-at", "car:during"), ":before or :after", id="crash-at-during"
    ),
    pytest.param(("book", *BOOKING, "--crash-at", "car"), ":before or :after", id="crash-at-car"),
    pytest.param(
        ("simulate", "--crash-at", "car;after"), ":before or :after", id="simulate-crash-at"
    ),
    pytest.param(
        ("book", "--flight", "FL999", "--hotel", "GRAND"), "unknown flight 'FL999'", id="flight"
    ),
    pytest.param(
        ("book", "--flight", "FL100", "--hotel", "RITZ"), "unknown hotel 'RITZ'", id="hotel"
    ),
    pytest.param(("book", *BOOKING[:4], "--car", "LIMO"), "unknown car 'LIMO'", id="car"),
    pytest.param(("simulate", "--count", "0"), "1<=x<=10000000", id="count-0"),
    pytest.param(("simulate", "--count", "-3"), "1<=x<=10000000", id="count-neg"),
    pytest.param(("simulate", "--fail-rate", "1.5"), "from 0 to 1", id="fail-rate-1.5"),
    pytest.param(("simulate", "--fail-rate", "-0.1"), "from 0 to 1", id="fail-rate--0.1"),
    pytest.param(("simulate", "--fail-rate=-0.1"), "from 0 to 1", id="fail-rate=-0.1"),
    pytest.param(("list", "--status", "done"), "unknown status 'done'", id="list-status"),
    pytest.param(("inventory", "--restock", "0"), "1<=x", id="restock-0"),
]


@pytest.mark.parametrize(("args", "message"), CASES)
def test_bad_input_is_one_error_line_exit_2_and_changes_nothing(
    populated: Populated, copy: SagaCli, args: tuple[str, ...], message: str
) -> None:
    before = dump(copy.db)
    values = {
        "unknown": populated.unknown,
        "ambiguous": populated.ambiguous,
        "interrupted": populated.interrupted,
    }

    result = copy(*(arg.format(**values) for arg in args))

    assert_one_line_error(result, 2, message)
    assert result.stdout == ""
    after = copy("list", "--limit", "100", "--json")
    assert after.code == 0, after
    assert after.stdout == populated.listing
    assert dump(copy.db) == before


def test_restock_below_what_is_reserved_is_refused(copy: SagaCli) -> None:
    before = dump(copy.db)

    result = copy("inventory", "--restock", "1")

    assert_one_line_error(result, 2, "below the")
    assert dump(copy.db) == before
