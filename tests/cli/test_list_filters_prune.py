"""`saga list` filters and cursor paging, and `saga prune`, on logs written straight to SQLite."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from conftest import SagaCli
from support import assert_one_line_error, execute, insert_execution, query

DAY = 86400.0
DEAD = "some-other-host:1:1"  # another host's owner with a lapsed lease: interrupted


def page_through(saga: SagaCli, *args: str) -> list[list[str]]:
    """Every page of `saga list ARGS --json`, following the last row's cursor."""
    pages: list[list[str]] = []
    cursor: list[str] = []
    while True:
        result = saga("list", *args, *cursor, "--json")
        assert result.code == 0, result
        rows = result.json()
        pages.append([row["id"] for row in rows])
        if not rows:
            return pages
        cursor = ["--cursor", rows[-1]["cursor"]]


def test_paging_returns_every_execution_once_while_new_ones_arrive(migrated: SagaCli) -> None:
    base = time.time() - 3600
    # 60 executions over 12 distinct times: ties are broken by id.
    existing = {insert_execution(migrated.db, "completed", base + i // 5) for i in range(60)}
    added: dict[str, float] = {}
    stop = threading.Event()

    def writer() -> None:
        while not stop.is_set():
            at = time.time()
            added[insert_execution(migrated.db, "running", at)] = at
            time.sleep(0.01)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        first = migrated("list", "--limit", "7", "--json").json()
        pages = page_through(migrated, "--limit", "7", "--cursor", first[-1]["cursor"])
    finally:
        stop.set()
        thread.join()

    seen = [row["id"] for row in first] + [i for page in pages for i in page]
    assert len(seen) == len(set(seen)), "an execution came twice"
    top = first[0]["created_at"]
    there_at_first = existing | {i for i, at in added.items() if at <= top}
    assert set(seen) == there_at_first
    # Added after the first page was read: newer than it, so never on a later page.
    later = {i for i, at in added.items() if at > top}
    assert len(later) > 2, "the writer kept writing while the pages were read"
    assert all(len(page) <= 7 for page in pages)


def test_list_pages_are_in_created_then_id_order(migrated: SagaCli) -> None:
    at = time.time() - 60
    ids = [insert_execution(migrated.db, "completed", at) for _ in range(5)]
    ids += [insert_execution(migrated.db, "completed", at - 1) for _ in range(5)]

    pages = page_through(migrated, "--limit", "3")

    expected = sorted(ids[:5], reverse=True) + sorted(ids[5:], reverse=True)
    assert [i for page in pages for i in page] == expected
    assert [len(p) for p in pages] == [3, 3, 3, 1, 0]


def test_list_filters_by_saga_status_and_creation_window(migrated: SagaCli) -> None:
    now = time.time()
    old = insert_execution(migrated.db, "completed", now - 3 * DAY)
    recent = insert_execution(migrated.db, "completed", now - 600)
    other = insert_execution(migrated.db, "completed", now - 500, saga="transfer")
    stuck = insert_execution(migrated.db, "stuck", now - 400, saga="transfer")

    def ids(*args: str) -> list[str]:
        result = migrated("list", *args, "--json")
        assert result.code == 0, result
        return [row["id"] for row in result.json()]

    assert ids("--saga", "transfer") == [stuck, other]
    assert ids("--saga", "transfer", "--status", "completed") == [other]
    assert ids("--saga", "transfer", "--status", "stuck") == [stuck]
    assert ids("--saga", "travel-booking", "--status", "completed") == [recent, old]
    assert ids("--since", "1d") == [stuck, other, recent]
    assert ids("--until", "1d") == [old]
    assert ids("--since", "2h", "--until", "450s") == [other, recent]
    day = time.strftime("%Y-%m-%d", time.gmtime(now - 3 * DAY))
    assert ids("--since", day, "--until", "2d") == [old]


def test_a_full_page_prints_the_next_cursor_on_stderr_unless_quiet(migrated: SagaCli) -> None:
    for _ in range(3):
        insert_execution(migrated.db, "completed", time.time())

    full = migrated("list", "--limit", "2")
    last = migrated("list", "--limit", "3")
    quiet = migrated("--quiet", "list", "--limit", "2")

    assert full.code == 0, full
    assert full.stderr.startswith("next page: --cursor ")
    token = full.stderr.split()[-1]
    assert len(migrated("list", "--cursor", token, "--json").json()) == 1
    assert last.stderr == ""  # a full page with nothing after it: no cursor
    assert quiet.stderr == ""
    assert quiet.stdout == full.stdout


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("--cursor", "not-a-cursor"), "not a cursor"),
        (("--cursor", "MTIz"), "not a cursor"),
        (("--since", "last tuesday"), "neither a duration"),
        (("--status", "finished"), "unknown status 'finished'"),
    ],
)
def test_list_bad_filters_are_one_line_errors(
    migrated: SagaCli, args: tuple[str, ...], fragment: str
) -> None:
    assert_one_line_error(migrated("list", *args), 2, fragment)


# -- prune -----------------------------------------------------------------------------------


def test_prune_deletes_only_old_terminal_executions_and_their_events(migrated: SagaCli) -> None:
    now = time.time()
    old = now - 40 * DAY
    db = migrated.db
    pruned = [insert_execution(db, s, old) for s in ("completed", "completed", "compensated")]
    kept = {
        "recent": insert_execution(db, "completed", now - DAY),
        # created long ago but finished yesterday: not old yet
        "long-running": insert_execution(db, "compensated", old, updated_at=now - DAY),
        "stuck": insert_execution(db, "stuck", old),
        "running": insert_execution(db, "running", old, owner=DEAD, lease_expires_at=old + 30),
        "compensating": insert_execution(db, "compensating", old),
        "pending": insert_execution(db, "pending", old),
    }
    # A concurrency key still recorded for a pruned execution goes with it.
    execute(
        db,
        "INSERT INTO saga_key_lock (key, execution_id, acquired_at) VALUES (?,?,?)",
        ("trip-42", pruned[0], old),
    )

    result = migrated("prune", "--older-than", "30d")

    assert result.code == 0, result
    assert "Deleted 3 execution(s)" in result.stdout
    left = {str(r[0]) for r in query(db, "SELECT id FROM saga_execution")}
    assert left == set(kept.values())
    with_events = {str(r[0]) for r in query(db, "SELECT DISTINCT saga_id FROM saga_event")}
    assert with_events == set(kept.values())
    assert query(db, "SELECT COUNT(*) FROM saga_key_lock") == [(0,)]
    again = migrated("prune", "--older-than", "30d", "--json")
    assert again.json()["deleted"] == 0


def test_prune_status_limits_what_is_deleted(migrated: SagaCli) -> None:
    old = time.time() - 10 * DAY
    completed = insert_execution(migrated.db, "completed", old)
    compensated = insert_execution(migrated.db, "compensated", old)

    result = migrated("prune", "--older-than", "7d", "--status", "compensated", "--json")

    assert result.code == 0, result
    assert result.json()["deleted"] == 1
    assert result.json()["statuses"] == ["compensated"]
    left = [str(r[0]) for r in query(migrated.db, "SELECT id FROM saga_execution")]
    assert left == [completed]
    assert compensated not in left


@pytest.mark.parametrize("status", ["running", "pending", "compensating", "stuck"])
def test_prune_refuses_a_non_terminal_status_and_deletes_nothing(
    migrated: SagaCli, status: str
) -> None:
    execution = insert_execution(migrated.db, status, time.time() - 100 * DAY)

    result = migrated("prune", "--older-than", "1d", "--status", status)

    assert_one_line_error(result, 2, "only completed and compensated", status)
    assert query(migrated.db, "SELECT id FROM saga_execution") == [(execution,)]


def test_prune_in_batches_deletes_more_than_one_batch(migrated: SagaCli, db_path: Path) -> None:
    old = time.time() - 10 * DAY
    execute(
        db_path,
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1203)"
        " INSERT INTO saga_execution (id, saga, payload, status, step, created_at, updated_at,"
        " owner, lease_expires_at, version) SELECT lower(hex(randomblob(16))), 'travel-booking',"
        " '{}', 'completed', 'notify', ?, ?, NULL, NULL, 9 FROM n",
        (old, old),
    )
    execute(
        db_path,
        "INSERT INTO saga_event (saga_id, seq, step, type, attempt, detail, at)"
        " SELECT id, 1, NULL, 'saga_started', 0, NULL, created_at FROM saga_execution",
    )

    result = migrated("prune", "--older-than", "1d", "--json")

    assert result.json()["deleted"] == 1203
    assert query(db_path, "SELECT COUNT(*) FROM saga_execution") == [(0,)]
    assert query(db_path, "SELECT COUNT(*) FROM saga_event") == [(0,)]


def test_prune_needs_older_than(migrated: SagaCli) -> None:
    result = migrated("prune")

    assert result.code == 2
    assert "--older-than" in result.stderr
