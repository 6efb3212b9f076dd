"""`saga run` and `saga definitions` with a user's saga module, through the real CLI."""

from __future__ import annotations

import json
import sqlite3
import textwrap
from contextlib import closing
from pathlib import Path

import pytest
from conftest import SagaCli
from support import assert_one_line_error, wait_for

MODULE = '''
"""A user's saga: effects are rows keyed by idempotency key in SHOP_DB."""
import os
import sqlite3

from pydantic import BaseModel, Field

from saga_cli import BusinessError, Saga, StepContext


class Order(BaseModel):
    sku: str
    qty: int = Field(default=1, gt=0)


def db():
    connection = sqlite3.connect(os.environ["SHOP_DB"], isolation_level=None, timeout=10)
    connection.execute("CREATE TABLE IF NOT EXISTS effect (key TEXT PRIMARY KEY, step TEXT)")
    return connection


def record(ctx: StepContext[Order]):
    assert isinstance(ctx.payload, Order)  # steps get the model, also after a resume
    with db() as connection:
        connection.execute("INSERT OR IGNORE INTO effect VALUES (?, ?)", (ctx.key, ctx.step))
    if ctx.payload.sku == "refuse-" + ctx.step:
        raise BusinessError(ctx.step + " refused")
    return {"step": ctx.step, "qty": ctx.payload.qty}


order = Saga("shop-order", payload=Order, concurrency_key=lambda o: "sku:" + o.sku,
             description="reserve, then charge")
STEPS
'''

ORIGINAL = """
order.step("reserve", compensation=record)(record)
order.step("charge", compensation=record)(record)
order.step("ship", kind="pivot")(record)
"""


def write_module(path: Path, steps: str) -> Path:
    path.write_text(textwrap.dedent(MODULE).replace("STEPS", textwrap.dedent(steps)))
    return path


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    return write_module(tmp_path / "shop.py", ORIGINAL)


@pytest.fixture
def effects_db(tmp_path: Path) -> Path:
    return tmp_path / "effects.db"


def effects(db: Path, execution_id: str) -> dict[str, int]:
    with closing(sqlite3.connect(db)) as connection:
        rows = connection.execute(
            "SELECT key FROM effect WHERE key LIKE ?", (execution_id + ":%",)
        ).fetchall()
    found: dict[str, int] = {}
    for (key,) in rows:
        suffix = key.removeprefix(execution_id + ":")
        found[suffix] = found.get(suffix, 0) + 1
    return found


def test_run_completes_and_prints_like_book(
    migrated: SagaCli, shop: Path, effects_db: Path
) -> None:
    result = migrated(
        "run", f"{shop}:order", "--payload", '{"sku": "A1", "qty": 2}', SHOP_DB=str(effects_db)
    )
    assert result.code == 0, result
    assert "✓ reserve" in result.stdout and "saga completed" in result.stdout
    done = migrated(
        "run", str(shop), "--payload", '{"sku": "A2"}', "--json", SHOP_DB=str(effects_db)
    ).json()
    assert done["status"] == "completed"
    assert done["results"]["charge"] == {"step": "charge", "qty": 1}  # the model's default
    assert effects(effects_db, done["id"]) == {"reserve": 1, "charge": 1, "ship": 1}


def test_a_refused_step_compensates_in_reverse(
    migrated: SagaCli, shop: Path, effects_db: Path
) -> None:
    result = migrated(
        "run", str(shop), "--payload", '{"sku": "refuse-ship"}', "--json", SHOP_DB=str(effects_db)
    )
    assert result.code == 3, result
    outcome = result.json()
    assert outcome["error"] == "ship refused"
    assert effects(effects_db, outcome["id"]) == {
        "reserve": 1,
        "charge": 1,
        "ship": 1,
        "charge:compensate": 1,
        "reserve:compensate": 1,
    }
    show = migrated("show", outcome["id"], "--json").json()
    undone = [e["step"] for e in show["events"] if e["type"] == "compensation_succeeded"]
    assert undone == ["charge", "reserve"]
    injected = migrated(
        "run", str(shop), "--payload", '{"sku": "B"}', "--fail", "charge", SHOP_DB=str(effects_db)
    )
    assert injected.code == 3 and "charge declined (--fail charge)" in injected.stdout


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (
            ["--payload", '{"qty": 0}'],
            [
                "payload of saga 'shop-order' is invalid",
                "sku: Field required",
                "qty: Input should be greater than 0",
            ],
        ),
        (["--payload", "[1, 2]"], ["must be a JSON object"]),
        (["--payload", "{nope"], ["not valid JSON"]),
        ([], ["either --payload JSON or --payload-file FILE"]),
        (["--payload", "{}", "--payload-file", "x.json"], ["either --payload"]),
        (["--payload-file", "/nonexistent/p.json"], ["cannot read --payload-file"]),
        (["--payload", '{"sku": "x"}', "--fail", "nope"], ["unknown step 'nope' in --fail"]),
        (["--payload", '{"sku": "x"}', "--crash-at", "ship:later"], ["must end in :before"]),
        (
            ["--payload", '{"sku": "x"}', "--key-busy", "maybe"],
            ["--key-busy must be refuse or wait"],
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    migrated: SagaCli, shop: Path, args: list[str], fragments: list[str]
) -> None:
    result = migrated("run", str(shop), *args)
    assert_one_line_error(result, 2, *fragments)
    assert migrated("list", "--json").json() == []  # nothing was started


def test_bad_references_are_one_line_and_exit_2(
    migrated: SagaCli, tmp_path: Path, shop: Path
) -> None:
    assert_one_line_error(
        migrated("run", str(tmp_path / "missing.py"), "--payload", "{}"), 2, "no such file"
    )
    assert_one_line_error(
        migrated("run", f"{shop}:nothing", "--payload", "{}"),
        2,
        "has no saga named 'nothing'",
        "order",
    )
    assert_one_line_error(
        migrated("run", "no_such_module_xyz:order", "--payload", "{}"), 2, "no module or file named"
    )
    assert_one_line_error(migrated("run", "", "--payload", "{}"), 2, "MODULE_OR_FILE[:SAGA]")
    assert_one_line_error(migrated("run", str(tmp_path), "--payload", "{}"), 2, "is a directory")
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('boom at import')\n")
    assert_one_line_error(
        migrated("run", str(broken), "--payload", "{}"), 2, "RuntimeError: boom at import"
    )
    twice = tmp_path / "twice.py"
    twice.write_text(
        shop.read_text() + "\nother = Saga('other')\nother.step('x', kind='pivot')(record)\n"
    )
    assert_one_line_error(migrated("run", str(twice), "--payload", "{}"), 2, "several sagas")


def test_resume_after_a_crash_finds_the_saga_from_the_log(
    migrated: SagaCli, shop: Path, effects_db: Path, tmp_path: Path
) -> None:
    crashed = migrated(
        "run",
        str(shop),
        "--payload",
        '{"sku": "C"}',
        "--crash-at",
        "charge:after",
        SHOP_DB=str(effects_db),
    )
    assert crashed.code == -9, crashed
    (row,) = migrated("list", "--json").json()
    assert row["status"] == "running" and row["interrupted"]
    # another directory, no --load: the log recorded where the saga came from
    resumed = migrated("resume", row["id"], "--json", SHOP_DB=str(effects_db))
    assert resumed.code == 0, resumed
    assert effects(effects_db, row["id"]) == {"reserve": 1, "charge": 1, "ship": 1}


def crash_then_change(migrated: SagaCli, shop: Path, effects_db: Path, steps: str) -> str:
    crashed = migrated(
        "run",
        str(shop),
        "--payload",
        '{"sku": "V"}',
        "--crash-at",
        "charge:before",
        SHOP_DB=str(effects_db),
    )
    assert crashed.code == -9, crashed
    (row,) = migrated("list", "--json").json()
    write_module(shop, steps)
    return str(row["id"])


def events_of(migrated: SagaCli, execution_id: str) -> list[dict[str, object]]:
    events: list[dict[str, object]] = migrated("show", execution_id, "--json").json()["events"]
    return events


def test_a_compatible_change_resumes_normally(
    migrated: SagaCli, shop: Path, effects_db: Path
) -> None:
    execution_id = crash_then_change(
        migrated, shop, effects_db, ORIGINAL + 'order.step("email", kind="retriable")(record)\n'
    )
    resumed = migrated("resume", execution_id, "--json", SHOP_DB=str(effects_db))
    assert resumed.code == 0, resumed
    assert effects(effects_db, execution_id) == {"reserve": 1, "charge": 1, "ship": 1, "email": 1}


@pytest.mark.parametrize(
    ("steps", "change"),
    [
        (
            'order.step("reserve", compensation=record)(record)\n'
            'order.step("ship", kind="pivot")(record)\n',
            "step(s) removed: charge",
        ),
        (
            'order.step("charge", compensation=record)(record)\n'
            'order.step("reserve", compensation=record)(record)\n'
            'order.step("ship", kind="pivot")(record)\n',
            "steps reordered (was reserve > charge > ship",
        ),
        (
            'order.step("reserve", compensation=record)(record)\n'
            'order.step("charge", kind="pivot")(record)\n'
            'order.step("ship", kind="retriable")(record)\n',
            "step 'charge' changed from compensatable to pivot",
        ),
    ],
)
def test_an_incompatible_change_is_refused_unless_forced(
    migrated: SagaCli, shop: Path, effects_db: Path, steps: str, change: str
) -> None:
    execution_id = crash_then_change(migrated, shop, effects_db, steps)
    before = events_of(migrated, execution_id)
    refused = migrated("resume", execution_id, SHOP_DB=str(effects_db))
    assert_one_line_error(
        refused, 1, "saga 'shop-order' changed since execution", change, "--force"
    )
    assert events_of(migrated, execution_id) == before  # nothing written
    all_refused = migrated("resume", "--all", "--json", SHOP_DB=str(effects_db))
    assert all_refused.code == 1 and change in all_refused.json()["failed"][execution_id]
    forced = migrated("resume", execution_id, "--force", SHOP_DB=str(effects_db))
    assert "changed since execution" not in forced.stderr
    assert len(events_of(migrated, execution_id)) > len(before) or forced.code == 1


def test_a_busy_concurrency_key_is_refused_or_waited_for(
    migrated: SagaCli, shop: Path, effects_db: Path
) -> None:
    slow = migrated.popen(
        "run",
        str(shop),
        "--payload",
        '{"sku": "K"}',
        "--slow",
        "reserve:5",  # long enough to outlast a loaded machine's process start-ups
        "--json",
        SHOP_DB=str(effects_db),
    )
    # an execution is written with its concurrency key, in one transaction
    wait_for(lambda: migrated("list", "--json").json(), "the run holding key sku:K")
    refused = migrated("run", str(shop), "--payload", '{"sku": "K"}', SHOP_DB=str(effects_db))
    assert_one_line_error(refused, 1, "concurrency key 'sku:K' is held by unfinished execution")
    other_key = migrated("run", str(shop), "--payload", '{"sku": "L"}', SHOP_DB=str(effects_db))
    assert other_key.code == 0, other_key
    waited = migrated(
        "run",
        str(shop),
        "--payload",
        '{"sku": "K"}',
        "--key-busy",
        "wait",
        "--json",
        SHOP_DB=str(effects_db),
    )
    first, _ = slow.communicate(timeout=30)
    assert slow.returncode == 0 and waited.code == 0, waited
    rows = {r["id"]: r for r in migrated("list", "--json").json()}
    first_id, second_id = (json.loads(first)["id"], waited.json()["id"])
    # the waiting execution started only once the first had finished
    assert rows[second_id]["created_at"] >= rows[first_id]["updated_at"]
    timed_out = migrated.popen(
        "run",
        str(shop),
        "--payload",
        '{"sku": "M"}',
        "--slow",
        "reserve:2",
        SHOP_DB=str(effects_db),
    )
    wait_for(
        lambda: {row["id"] for row in migrated("list", "--json").json()} - set(rows),
        "the run holding key sku:M",
    )
    gave_up = migrated(
        "run",
        str(shop),
        "--payload",
        '{"sku": "M"}',
        "--key-busy",
        "wait",
        "--key-timeout",
        "200ms",
        SHOP_DB=str(effects_db),
    )
    assert_one_line_error(gave_up, 1, "concurrency key 'sku:M'")
    timed_out.communicate(timeout=30)


def test_definitions_lists_loaded_and_logged_sagas(
    migrated: SagaCli, shop: Path, effects_db: Path
) -> None:
    assert (
        migrated("run", str(shop), "--payload", '{"sku": "D"}', SHOP_DB=str(effects_db)).code == 0
    )
    listed = migrated("definitions", "--json").json()
    mine = next(row for row in listed if row["saga"] == "shop-order")
    assert mine["loaded"] is False and mine["source"] == f"{shop.resolve()}:order"
    assert [s["name"] for s in mine["steps"]] == ["reserve", "charge", "ship"]
    loaded = migrated("--load", str(shop), "definitions", "--json").json()
    mine = next(row for row in loaded if row["saga"] == "shop-order")
    assert mine["loaded"] is True and mine["concurrency_key"] is True
    assert mine["description"] == "reserve, then charge"
    assert [(s["name"], s["kind"], s["retry"]["max_attempts"]) for s in mine["steps"]] == [
        ("reserve", "compensatable", 1),
        ("charge", "compensatable", 1),
        ("ship", "pivot", 1),
    ]
    assert {row["saga"] for row in loaded} >= {"travel-booking", "travel-booking-basic"}
    table = migrated("--load", str(shop), "definitions")
    assert table.code == 0 and "shop-order" in table.stdout and "pivot" in table.stdout
