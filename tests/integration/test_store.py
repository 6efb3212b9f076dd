"""The saga log on SQLite and PostgreSQL: CAS writes, claims, id prefixes, listing, locking."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import BACKENDS

from saga_cli.domain import Event, EventType, SagaStatus
from saga_cli.errors import (
    AmbiguousIdError,
    DatabaseLockedError,
    ExecutionBusyError,
    InvalidInputError,
    LeaseLostError,
    StoreError,
    UnknownExecutionError,
)
from saga_cli.store import ExecutionRecord, Participant, SagaStore, Transition, open_store


def record(
    execution_id: str,
    *,
    status: SagaStatus = SagaStatus.RUNNING,
    created_at: float = 100.0,
    owner: str | None = "me:1:1",
    saga: str = "trip",
) -> ExecutionRecord:
    return ExecutionRecord(
        id=execution_id,
        saga=saga,
        payload='{"n":1}',
        status=status,
        step="s0",
        created_at=created_at,
        updated_at=created_at,
        owner=owner,
        lease_expires_at=created_at + 30,
        version=1,
    )


def started_events() -> list[Event]:
    return [
        Event(1, EventType.SAGA_STARTED, at=1.0),
        Event(2, EventType.STEP_STARTED, "s0", 1, at=2.0),
    ]


def make(store: SagaStore, execution_id: str, **kwargs: object) -> ExecutionRecord:
    rec = record(execution_id, **kwargs)  # type: ignore[arg-type]
    store.create(rec, started_events())
    return rec


def transition(
    execution_id: str, expected_version: int, seq: int, status: SagaStatus = SagaStatus.RUNNING
) -> Transition:
    return Transition(
        execution_id,
        expected_version,
        [Event(seq, EventType.STEP_SUCCEEDED, "s0", 1, {"result": {"ok": True}}, at=3.0)],
        status,
        "s0",
        "me:1:1",
        500.0,
        3.0,
    )


ID = "ab" * 16


@pytest.fixture
def store(any_store: SagaStore) -> SagaStore:
    """Every contract test here runs on SQLite and on PostgreSQL."""
    return any_store


def test_create_stores_the_row_and_its_events(store: SagaStore) -> None:
    rec = make(store, ID)
    assert store.get(ID) == rec
    assert store.events(ID) == started_events()


def test_event_detail_round_trips_as_json(store: SagaStore) -> None:
    make(store, ID)
    store.append(transition(ID, 1, 3))
    last = store.events(ID)[-1]
    assert last.detail == {"result": {"ok": True}}
    assert last.type is EventType.STEP_SUCCEEDED


def test_append_with_the_current_version_bumps_it_and_updates_the_row(store: SagaStore) -> None:
    make(store, ID)
    assert store.append(transition(ID, 1, 3, SagaStatus.COMPENSATING)) == 2
    row = store.get(ID)
    assert row.version == 2
    assert row.status is SagaStatus.COMPENSATING
    assert row.updated_at == 3.0 and row.lease_expires_at == 500.0
    assert [e.seq for e in store.events(ID)] == [1, 2, 3]


def test_append_with_a_stale_version_raises_lease_lost_and_writes_nothing(
    store: SagaStore,
) -> None:
    make(store, ID)
    store.append(transition(ID, 1, 3))
    before_row, before_events = store.get(ID), store.events(ID)
    with pytest.raises(LeaseLostError, match=ID):
        store.append(transition(ID, 1, 4, SagaStatus.COMPLETED))
    assert store.get(ID) == before_row
    assert store.events(ID) == before_events


def test_append_to_an_unknown_execution_raises_lease_lost(store: SagaStore) -> None:
    with pytest.raises(LeaseLostError):
        store.append(transition(ID, 1, 3))
    assert store.events(ID) == []


def test_duplicate_event_sequence_is_refused_and_the_row_is_unchanged(store: SagaStore) -> None:
    make(store, ID)
    before = store.get(ID)
    with pytest.raises(StoreError, match="(?i)unique"):
        store.append(transition(ID, 1, 2))  # seq 2 exists
    assert store.get(ID) == before
    assert store.events(ID) == started_events()


def test_claim_takes_the_lease_and_records_why(store: SagaStore) -> None:
    make(store, ID)
    event = Event(3, EventType.SAGA_RESUMED, at=9.0)
    assert store.claim(ID, 1, "other:2:2", 999.0, event, 9.0) == 2
    row = store.get(ID)
    assert (row.owner, row.lease_expires_at, row.version, row.updated_at) == (
        "other:2:2",
        999.0,
        2,
        9.0,
    )
    assert store.events(ID)[-1] == event


def test_claim_with_a_stale_version_is_refused_and_writes_nothing(store: SagaStore) -> None:
    make(store, ID)
    store.claim(ID, 1, "first:1:1", 999.0, Event(3, EventType.SAGA_RESUMED, at=9.0), 9.0)
    before_row, before_events = store.get(ID), store.events(ID)
    with pytest.raises(ExecutionBusyError):
        store.claim(ID, 1, "second:2:2", 999.0, Event(3, EventType.SAGA_RESUMED, at=9.0), 9.0)
    assert store.get(ID) == before_row
    assert store.events(ID) == before_events


def test_a_claim_fences_the_previous_owner(store: SagaStore) -> None:
    make(store, ID)
    store.claim(ID, 1, "thief:2:2", 999.0, None, 5.0)
    with pytest.raises(LeaseLostError):
        store.append(transition(ID, 1, 3))
    assert store.get(ID).owner == "thief:2:2"
    assert len(store.events(ID)) == 2


def test_get_of_an_unknown_id_raises(store: SagaStore) -> None:
    with pytest.raises(UnknownExecutionError, match="f" * 32):
        store.get("f" * 32)


# -- id prefixes ------------------------------------------------------------------------


@pytest.fixture
def three(store: SagaStore) -> SagaStore:
    for execution_id in ("abc1" + "0" * 28, "abc2" + "0" * 28, "def0" + "0" * 28):
        make(store, execution_id)
    return store


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        ("abc1", "abc1" + "0" * 28),
        ("d", "def0" + "0" * 28),
        ("ABC2", "abc2" + "0" * 28),
        ("  def0  ", "def0" + "0" * 28),
        ("abc1" + "0" * 28, "abc1" + "0" * 28),
    ],
)
def test_unique_prefix_resolves_to_the_full_id(
    three: SagaStore, prefix: str, expected: str
) -> None:
    assert three.resolve_id(prefix) == expected


def test_ambiguous_prefix_is_refused(three: SagaStore) -> None:
    with pytest.raises(AmbiguousIdError, match="abc"):
        three.resolve_id("abc")


@pytest.mark.parametrize(
    "prefix",
    [
        pytest.param("abc3", id="unknown"),
        pytest.param("0", id="no-match"),
        pytest.param("xyz", id="non-hex"),
        pytest.param("ab%", id="like-wildcard"),
        pytest.param("", id="empty"),
        pytest.param("abc1" + "0" * 29, id="too-long"),
    ],
)
def test_unknown_or_malformed_prefix_is_refused(three: SagaStore, prefix: str) -> None:
    with pytest.raises(UnknownExecutionError):
        three.resolve_id(prefix)


# -- listing ---------------------------------------------------------------------------------


def test_list_is_newest_first_with_ties_broken_by_id(store: SagaStore) -> None:
    make(store, "1" * 32, created_at=10.0)
    make(store, "3" * 32, created_at=30.0)
    make(store, "2" * 32, created_at=20.0)
    make(store, "4" * 32, created_at=20.0)
    ids = [r.id for r in store.list_executions()]
    assert ids == ["3" * 32, "4" * 32, "2" * 32, "1" * 32]
    assert [r.id for r in store.list_executions(limit=2)] == ["3" * 32, "4" * 32]


def test_list_filters_by_status(store: SagaStore) -> None:
    make(store, "1" * 32, status=SagaStatus.COMPLETED, created_at=1.0)
    make(store, "2" * 32, status=SagaStatus.STUCK, created_at=2.0)
    make(store, "3" * 32, status=SagaStatus.COMPLETED, created_at=3.0)
    done = store.list_executions(status=SagaStatus.COMPLETED)
    assert [r.id for r in done] == ["3" * 32, "1" * 32]
    assert [r.id for r in store.list_executions(status=SagaStatus.STUCK)] == ["2" * 32]
    assert store.list_executions(status=SagaStatus.COMPENSATING) == []


def test_unfinished_lists_pending_running_and_compensating_oldest_first(store: SagaStore) -> None:
    statuses = [
        SagaStatus.COMPENSATING,
        SagaStatus.COMPLETED,
        SagaStatus.RUNNING,
        SagaStatus.STUCK,
        SagaStatus.PENDING,
        SagaStatus.COMPENSATED,
    ]
    for n, status in enumerate(statuses):
        make(store, f"{n}" * 32, status=status, created_at=100.0 - n)
    unfinished = store.unfinished()
    assert [(r.id, r.status) for r in unfinished] == [
        ("4" * 32, SagaStatus.PENDING),
        ("2" * 32, SagaStatus.RUNNING),
        ("0" * 32, SagaStatus.COMPENSATING),
    ]


def test_executions_of_one_saga(store: SagaStore) -> None:
    make(store, "1" * 32, saga="trip")
    make(store, "2" * 32, saga="transfer", status=SagaStatus.COMPLETED)
    assert store.executions_of("transfer") == [("2" * 32, SagaStatus.COMPLETED, '{"n":1}')]
    assert store.executions_of("nothing") == []


def test_a_second_store_on_the_same_log_sees_committed_writes(store: SagaStore) -> None:
    other = open_store(store.url)
    try:
        make(store, ID)
        assert other.get(ID).version == 1
        other.append(transition(ID, 1, 3))
        assert store.get(ID).version == 2
        assert len(store.events(ID)) == 3
    finally:
        other.close()


# -- the extension point: an application's tables in the log's database ---------------------


@pytest.fixture
def demo(store: SagaStore) -> SagaStore:
    """The store with the demo's migration branch applied (its tables are the test's)."""
    store.upgrade_branch("demo")
    return store


def suv_available(db: Participant) -> int:
    (row,) = db.query("SELECT available FROM car_resource WHERE code=?", ("SUV",))
    return int(row[0])


@pytest.fixture(params=BACKENDS)
def new_log(request: pytest.FixtureRequest, db_path: Path) -> str:
    """The URL of a log that does not exist yet (SQLite) or an empty database (PostgreSQL)."""
    return (
        str(db_path) if request.param == "sqlite" else str(request.getfixturevalue("pg_empty_url"))
    )


def test_upgrade_branch_applies_a_branch_once_and_branches_lists_it(new_log: str) -> None:
    store = open_store(new_log)
    try:
        assert store.branches() == ()
        store.upgrade_branch("demo")
        store.upgrade_branch("demo")
        assert store.branches() == ("demo",)
        other = open_store(new_log)
        try:
            assert other.branches() == ("demo",)
            other.upgrade_branch("demo")  # already at its head: nothing to do
        finally:
            other.close()
        with pytest.raises(InvalidInputError, match="no migration branch"):
            store.upgrade_branch("nope")
    finally:
        store.close()


def test_a_participant_reads_and_writes_with_question_marks_and_literal_percents(
    demo: SagaStore,
) -> None:
    db = demo.participant()
    try:
        assert db.execute("UPDATE car_resource SET name=? WHERE code=?", ("SUV 100%", "SUV")) == 1
        assert db.query("SELECT name FROM car_resource WHERE code=?", ("SUV",)) == [("SUV 100%",)]
        assert db.query("SELECT COUNT(*) FROM car_resource WHERE name LIKE '%100%%'") == [(1,)]
        assert db.execute("UPDATE car_resource SET name='x' WHERE code=?", ("nothing",)) == 0
    finally:
        db.close()


def test_a_participant_transaction_commits_at_the_end_and_rolls_back_if_it_raises(
    demo: SagaStore,
) -> None:
    db, other = demo.participant(), demo.participant()
    try:
        with db.transaction() as cursor:
            assert (
                cursor.execute(
                    "UPDATE car_resource SET available=available-1 WHERE code=?", ("SUV",)
                ).rowcount
                == 1
            )
            assert cursor.execute(
                "SELECT available FROM car_resource WHERE code=?", ("SUV",)
            ).fetchone() == (0,)
        assert suv_available(other) == 0
        with pytest.raises(ZeroDivisionError), db.transaction() as cursor:
            cursor.execute("UPDATE car_resource SET available=1 WHERE code=?", ("SUV",))
            raise ZeroDivisionError
        assert suv_available(other) == 0
        assert suv_available(db) == 0  # the connection is usable after a rollback
    finally:
        db.close()
        other.close()


def test_participant_transactions_on_one_database_run_one_at_a_time(demo: SagaStore) -> None:
    first, second = demo.participant(), demo.participant()
    inside, release, entered = threading.Event(), threading.Event(), threading.Event()

    def hold() -> None:
        with first.transaction() as cursor:
            cursor.execute("UPDATE car_resource SET available=0 WHERE code=?", ("SUV",))
            inside.set()
            release.wait(30)

    def follow() -> None:
        with second.transaction() as cursor:
            entered.set()
            # it sees the first transaction's committed write, never its middle
            assert cursor.execute(
                "SELECT available FROM car_resource WHERE code=?", ("SUV",)
            ).fetchone() == (0,)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert inside.wait(30)
        follower = threading.Thread(target=follow)
        follower.start()
        assert not entered.wait(0.3), "a second transaction began while the first was open"
    finally:
        release.set()
        holder.join(30)
    follower.join(30)
    assert entered.is_set()
    first.close()
    second.close()


def test_a_participant_reports_the_databases_errors_as_store_errors(demo: SagaStore) -> None:
    db = demo.participant()
    try:
        with pytest.raises(StoreError, match="(?i)check"):
            db.execute("UPDATE car_resource SET available=-1 WHERE code=?", ("SUV",))
        with pytest.raises(StoreError, match="no_such_table"):
            db.query("SELECT * FROM no_such_table")
        with pytest.raises(StoreError), db.transaction() as cursor:
            cursor.execute("INSERT INTO car_resource (code) VALUES (?)", ("NEW",))
        assert suv_available(db) == 1
    finally:
        db.close()


def test_a_participant_connection_shares_nothing_with_the_store(demo: SagaStore) -> None:
    url = demo.url
    own = open_store(url)
    own.upgrade_branch("demo")
    own.close()
    db = own.participant()  # opened after its store was closed
    try:
        assert suv_available(db) == 1
    finally:
        db.close()


# -- locking ----------------------------------------------------------------------------------


@pytest.fixture
def locked(db_path: Path) -> Iterator[sqlite3.Connection]:
    """Another connection holding the write lock (BEGIN IMMEDIATE) on a migrated log."""
    open_store(str(db_path)).close()
    holder = sqlite3.connect(db_path, isolation_level=None)
    try:
        yield holder
    finally:
        holder.close()


def test_write_to_a_locked_log_raises_database_locked_and_loses_nothing(
    db_path: Path, locked: sqlite3.Connection
) -> None:
    store = open_store(f"sqlite:///{db_path}?busy_timeout=100")
    try:
        make(store, ID)
        locked.execute("BEGIN IMMEDIATE")
        with pytest.raises(DatabaseLockedError, match="busy_timeout"):
            store.append(transition(ID, 1, 3))
        with pytest.raises(DatabaseLockedError):
            make(store, "c" * 32)
        # reads still work while a writer holds the lock (WAL)
        assert store.get(ID).version == 1
        locked.execute("ROLLBACK")
        assert store.events(ID) == started_events()
        with pytest.raises(UnknownExecutionError):
            store.get("c" * 32)
        # nothing was half-written: the same writes now succeed
        assert store.append(transition(ID, 1, 3)) == 2
        make(store, "c" * 32)
        assert [e.seq for e in store.events(ID)] == [1, 2, 3]
    finally:
        store.close()


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("sqlite:///{path}?journal=wal", id="unknown-setting"),
        pytest.param("sqlite:///{path}?synchronous=SOMETIMES", id="bad-synchronous"),
        pytest.param("sqlite:///{path}?busy_timeout=soon", id="bad-busy-timeout"),
        pytest.param("mysql://localhost/saga", id="other-backend"),
        pytest.param(":memory:", id="in-memory"),
    ],
)
def test_malformed_urls_are_refused_before_touching_anything(db_path: Path, url: str) -> None:
    with pytest.raises(InvalidInputError):
        open_store(url.format(path=db_path))
    assert not db_path.exists()


def test_missing_file_is_not_created_when_creation_is_off(db_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="does not exist"):
        open_store(str(db_path), create=False)
    assert not db_path.exists()
