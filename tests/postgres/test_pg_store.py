"""PostgreSQL-only behaviour of the saga log: worker claims, races between processes, migrations."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable, Iterator

import psycopg
import pytest
from conftest import pg_admin
from support import execution_record

from saga_cli.domain import Event, EventType, SagaStatus
from saga_cli.errors import (
    ConcurrencyKeyBusyError,
    ForeignDatabaseError,
    LeaseLostError,
    LogUnavailableError,
    SchemaTooNewError,
    StoreError,
)
from saga_cli.store import Transition, migrate, open_store
from saga_cli.store.postgres import PostgresStore, libpq_url, safe_url

record = execution_record  # the row a test sets up, written by each test itself


FIRST = [Event(1, EventType.SAGA_STARTED, at=1.0), Event(2, EventType.STEP_STARTED, "s0", 1)]


@pytest.fixture
def pg(pg_url: str) -> Iterator[PostgresStore]:
    store = open_store(pg_url)
    assert isinstance(store, PostgresStore)
    try:
        yield store
    finally:
        store.close()


def stores(url: str, count: int) -> list[PostgresStore]:
    opened = [open_store(url) for _ in range(count)]
    assert all(isinstance(s, PostgresStore) for s in opened)
    return opened  # type: ignore[return-value]


def in_threads(calls: list[Callable[[], object]]) -> list[object]:
    """Run the calls at once (a barrier), each in its own thread; exceptions are results."""
    barrier = threading.Barrier(len(calls))
    results: list[object] = [None] * len(calls)

    def run(n: int) -> None:
        barrier.wait()
        try:
            results[n] = calls[n]()
        except Exception as exc:
            results[n] = exc

    threads = [threading.Thread(target=run, args=(n,)) for n in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


# -- claim_ready ---------------------------------------------------------------------


def test_claim_ready_takes_pending_and_expired_oldest_first_never_live_or_finished(
    pg: PostgresStore,
) -> None:
    now = 1000.0
    rows = {
        "a" * 32: record("a" * 32, created_at=3.0),  # pending
        "b" * 32: record(
            "b" * 32, status=SagaStatus.RUNNING, created_at=1.0, owner="w:1", lease_expires_at=10.0
        ),  # expired
        "c" * 32: record(
            "c" * 32, status=SagaStatus.RUNNING, created_at=0.5, owner="w:2", lease_expires_at=2e3
        ),  # live
        "d" * 32: record("d" * 32, status=SagaStatus.COMPENSATING, created_at=2.0),  # no owner
        "e" * 32: record("e" * 32, status=SagaStatus.COMPLETED, created_at=0.1),
        "f" * 32: record("f" * 32, status=SagaStatus.STUCK, created_at=0.2),
        "0" * 32: record("0" * 32, status=SagaStatus.COMPENSATED, created_at=0.3),
    }
    for rec in rows.values():
        pg.create(rec, FIRST)
    taken = pg.claim_ready("me:1", 1030.0, now, limit=10)
    assert [r.id for r in taken] == ["b" * 32, "d" * 32, "a" * 32]
    for rec in taken:
        assert (rec.owner, rec.lease_expires_at, rec.updated_at) == ("me:1", 1030.0, now)
        assert rec.version == 2
        assert pg.get(rec.id) == rec
        last = pg.events(rec.id)[-1]
        assert (last.seq, last.type, last.attempt, last.detail, last.at) == (
            3,
            EventType.SAGA_RESUMED,
            0,
            {"by": "me:1"},
            now,
        )
    for untouched in ("c" * 32, "e" * 32, "f" * 32, "0" * 32):
        assert pg.get(untouched).version == 1
        assert len(pg.events(untouched)) == 2
    # now leased to me, the pending one too: nothing is ready until the leases run out
    assert pg.claim_ready("other:1", 1030.0, now + 1, limit=10) == []
    assert [r.id for r in pg.claim_ready("other:1", 2000.0, 1031.0, limit=10)] == [
        "b" * 32,
        "d" * 32,
        "a" * 32,
    ]


def test_claim_ready_honours_the_limit_and_the_saga_filter(pg: PostgresStore) -> None:
    for n in range(5):
        pg.create(record(f"{n}" * 32, created_at=float(n), saga="trip" if n % 2 else "bank"), FIRST)
    claim = pg.claim_ready
    assert [r.id for r in claim("me", 50.0, 10.0, sagas=["trip"], limit=1)] == ["1" * 32]
    assert [r.id for r in claim("me", 50.0, 10.0, sagas=["trip"], limit=5)] == ["3" * 32]
    assert [r.id for r in pg.claim_ready("me", 50.0, 10.0, limit=2)] == ["0" * 32, "2" * 32]
    assert pg.claim_ready("me", 50.0, 10.0, sagas=[], limit=5) == []


def test_concurrent_workers_never_claim_the_same_execution(pg: PostgresStore) -> None:
    ids = [f"{n:032x}" for n in range(60)]
    for n, execution_id in enumerate(ids):
        pg.create(record(execution_id, created_at=float(n)), FIRST)
    workers = stores(pg.url, 4)
    taken: list[list[str]] = [[] for _ in workers]

    def drain(n: int) -> Callable[[], object]:
        def run() -> None:
            while batch := workers[n].claim_ready(f"w:{n}", 500.0, 10.0, limit=3):
                taken[n].extend(r.id for r in batch)

        return run

    try:
        errors = [r for r in in_threads([drain(n) for n in range(4)]) if r is not None]
    finally:
        for worker in workers:
            worker.close()
    assert errors == []
    everything = [i for got in taken for i in got]
    assert sorted(everything) == ids  # each exactly once
    assert all(pg.get(i).version == 2 and len(pg.events(i)) == 3 for i in ids)


# -- races between processes -------------------------------------------------------------


def test_racing_writers_of_one_version_exactly_one_wins(pg: PostgresStore) -> None:
    pg.create(record("a" * 32, status=SagaStatus.RUNNING, owner="x"), FIRST)
    writers = stores(pg.url, 4)

    def write(n: int) -> Callable[[], object]:
        event = Event(3, EventType.STEP_SUCCEEDED, "s0", 1, {"by": n}, 3.0)
        return lambda: writers[n].append(
            Transition("a" * 32, 1, [event], SagaStatus.RUNNING, "s0", f"w{n}", 9.0, 3.0)
        )

    try:
        results = in_threads([write(n) for n in range(4)])
    finally:
        for writer in writers:
            writer.close()
    assert results.count(2) == 1, results
    assert sum(isinstance(r, LeaseLostError) for r in results) == 3, results
    assert pg.get("a" * 32).version == 2
    assert [e.seq for e in pg.events("a" * 32)] == [1, 2, 3]


def test_racing_creations_with_one_concurrency_key_admit_one(pg: PostgresStore) -> None:
    writers = stores(pg.url, 4)
    calls: list[Callable[[], object]] = [
        lambda n=n: writers[n].create(record(f"{n}" * 32, key="acct-1"), FIRST)  # type: ignore[misc]
        for n in range(4)
    ]
    try:
        results = in_threads(calls)
    finally:
        for writer in writers:
            writer.close()
    assert results.count(None) == 1, results
    assert sum(isinstance(r, ConcurrencyKeyBusyError) for r in results) == 3, results
    winner = str(results.index(None)) * 32
    assert [r.id for r in pg.list_executions()] == [winner]  # the refused wrote nothing


def test_a_busy_key_in_a_batch_leaves_the_other_writes_intact(pg: PostgresStore) -> None:
    from saga_cli.store import Creation

    pg.create(record("a" * 32, key="k"), FIRST)
    results = pg.commit_all(
        [Creation(record("b" * 32, key="k"), FIRST), Creation(record("c" * 32, key="j"), FIRST)]
    )
    assert isinstance(results[0], ConcurrencyKeyBusyError)
    assert results[1] == 1
    assert sorted(r.id for r in pg.list_executions()) == ["a" * 32, "c" * 32]


# -- migrations and opening -----------------------------------------------------------------


def test_processes_migrating_one_empty_database_at_once_serialize(pg_empty_url: str) -> None:
    # Each opens the log (the main line) and then applies the demo's branch.
    script = (
        "import sys; from saga_cli.store import open_store; s = open_store(sys.argv[1]);"
        " s.upgrade_branch('demo'); s.close()"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script, pg_empty_url], stderr=subprocess.PIPE)
        for _ in range(3)
    ]
    outcomes = [(p.wait(timeout=120), p.stderr.read() if p.stderr else b"") for p in procs]
    assert all(code == 0 for code, _ in outcomes), outcomes
    with psycopg.connect(libpq_url(pg_empty_url)) as db:
        assert db.execute(
            "SELECT version_num FROM alembic_version ORDER BY version_num"
        ).fetchall() == [(migrate.HEAD_REVISION,), (migrate.BRANCHES["demo"][-1],)]
        assert db.execute("SELECT COUNT(*) FROM car_resource").fetchone() == (3,)


def test_a_database_with_tables_of_its_own_is_refused_and_untouched(pg_empty_url: str) -> None:
    with psycopg.connect(libpq_url(pg_empty_url)) as db:
        db.execute("CREATE TABLE invoices (id int)")
    with pytest.raises(ForeignDatabaseError, match="no saga schema"):
        open_store(pg_empty_url)
    with psycopg.connect(libpq_url(pg_empty_url)) as db:
        tables = db.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema='public'"
        ).fetchall()
    assert tables == [("invoices",)]


def test_a_newer_schema_is_refused(pg_url: str) -> None:
    with psycopg.connect(libpq_url(pg_url)) as db:
        db.execute(
            "UPDATE alembic_version SET version_num='9999' WHERE version_num=%s",
            (migrate.HEAD_REVISION,),
        )
    with pytest.raises(SchemaTooNewError, match="9999"):
        open_store(pg_url)


def test_an_unreachable_server_is_a_store_error_without_the_password() -> None:
    url = "postgresql+psycopg://saga:hunter2@127.0.0.1:1/saga"
    with pytest.raises(StoreError) as caught:
        open_store(url)
    message = str(caught.value)
    assert "hunter2" not in message
    assert "saga:***@127.0.0.1:1" in message
    assert "\n" not in message
    assert safe_url(url) == "postgresql+psycopg://saga:***@127.0.0.1:1/saga"


def test_a_dropped_connection_fails_one_call_and_both_are_replaced(
    pg: PostgresStore,
) -> None:
    pg.create(record("a" * 32), FIRST)
    pg_admin(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        f" WHERE datname = '{pg.url.rsplit('/', 1)[1]}' AND pid <> pg_backend_pid()"
    )
    with pytest.raises(LogUnavailableError):  # an outage, for those who wait them out
        pg.get("a" * 32)
    # The writer was dropped too: it is replaced before its next use, not failed once more.
    assert pg.append(Transition("a" * 32, 1, [], SagaStatus.RUNNING, None, "me", 5.0, 2.0)) == 2
    assert pg.get("a" * 32).version == 2


def test_held_executions_lists_live_leases_per_owner(pg: PostgresStore) -> None:
    live = dict(status=SagaStatus.RUNNING, lease_expires_at=200.0)
    pg.create(record("a" * 32, owner="w1", created_at=2.0, **live), FIRST)  # type: ignore[arg-type]
    pg.create(record("b" * 32, owner="w1", created_at=1.0, **live), FIRST)  # type: ignore[arg-type]
    pg.create(record("c" * 32, owner="w2", status=SagaStatus.RUNNING, lease_expires_at=50.0), FIRST)
    pg.create(
        record("d" * 32, owner="w2", status=SagaStatus.COMPLETED, lease_expires_at=200.0), FIRST
    )
    assert pg.held_executions(["w1", "w2", "w3"], 100.0) == {
        "w1": ["b" * 32, "a" * 32],
        "w2": [],  # one lease expired, one execution finished
        "w3": [],
    }


def test_claim_ready_leaves_a_refused_candidate_untouched_and_skips_excluded_ones(
    pg: PostgresStore,
) -> None:
    for n in range(3):
        pg.create(record(f"{n}" * 32, created_at=float(n)), FIRST)

    taken = pg.claim_ready(
        "me", 50.0, 10.0, limit=3, exclude=["2" * 32], admit=lambda r: r.id != "0" * 32
    )

    assert [r.id for r in taken] == ["1" * 32]
    for untouched in ("0" * 32, "2" * 32):
        assert (pg.get(untouched).owner, pg.get(untouched).version) == (None, 1)
        assert len(pg.events(untouched)) == len(FIRST)
