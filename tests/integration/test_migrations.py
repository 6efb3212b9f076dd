"""Schema migrations on real SQLite files: empty -> head, reruns, failures, refusals."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from support import CATALOGUE, LOG_TABLES, table_columns, table_foreign_keys, table_indexes

from saga_cli.errors import (
    InvalidInputError,
    MigrationError,
    NotADatabaseError,
    SchemaTooNewError,
)
from saga_cli.store import migrate, open_store

SERVICE_TABLES = [
    f"{s}_{t}" for s in ("flight", "hotel", "car") for t in ("resource", "reservation")
]
DEMO_TABLES = [*SERVICE_TABLES, "payment_charge", "notification_outbox", "circuit_breaker"]
DEMO_HEAD = migrate.BRANCHES["demo"][-1]


def tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall()
    return {r[0] for r in rows}


def revisions(path: Path) -> set[str]:
    db = sqlite3.connect(path)
    try:
        return {row[0] for row in db.execute("SELECT version_num FROM alembic_version")}
    finally:
        db.close()


def revision(path: Path) -> str | None:
    """The revision of a log without migration branches."""
    found = revisions(path)
    assert len(found) <= 1, "alembic_version must hold one row"
    return next(iter(found), None)


def migrated(path: Path) -> None:
    open_store(str(path)).close()


def migrated_with_demo(path: Path) -> None:
    store = open_store(str(path))
    try:
        store.upgrade_branch("demo")
    finally:
        store.close()


@pytest.fixture(params=["saga", "saga+demo"])
def engine(request: pytest.FixtureRequest, db_path: Path) -> Iterator[Engine]:
    """An engine on a migrated log, without and with the demo's branch (it leaves them alone)."""
    if request.param == "saga":
        migrated(db_path)
    else:
        migrated_with_demo(db_path)
    created = sa.create_engine(f"sqlite:///{db_path}")
    try:
        yield created
    finally:
        created.dispose()


def test_empty_file_is_migrated_to_head_with_the_saga_tables_only(db_path: Path) -> None:
    migrated(db_path)
    assert tables(db_path) == {*LOG_TABLES, "alembic_version"}
    assert revision(db_path) == migrate.HEAD_REVISION


def test_the_demo_branch_adds_the_demo_tables_and_records_its_head(db_path: Path) -> None:
    migrated_with_demo(db_path)
    assert tables(db_path) == {*LOG_TABLES, *DEMO_TABLES, "alembic_version"}
    assert revisions(db_path) == {migrate.HEAD_REVISION, DEMO_HEAD}
    store = open_store(str(db_path))
    try:
        assert store.branches() == ("demo",)
    finally:
        store.close()


def test_an_unknown_branch_label_is_refused_and_changes_nothing(db_path: Path) -> None:
    store = open_store(str(db_path))
    try:
        with pytest.raises(InvalidInputError, match="no migration branch is labelled 'nope'"):
            store.upgrade_branch("nope")
        assert store.branches() == ()
    finally:
        store.close()
    assert tables(db_path) == {*LOG_TABLES, "alembic_version"}


def test_zero_byte_file_is_migrated_like_a_missing_one(db_path: Path) -> None:
    db_path.touch()
    migrated(db_path)
    assert revision(db_path) == migrate.HEAD_REVISION


def test_catalogue_is_seeded_with_full_availability(db_path: Path) -> None:
    migrated_with_demo(db_path)
    with sqlite3.connect(db_path) as db:
        for service, expected in CATALOGUE.items():
            rows = db.execute(
                f"SELECT code, capacity, available FROM {service}_resource"
            ).fetchall()
            assert {code: cap for code, cap, _ in rows} == expected
            assert all(cap == available for _, cap, available in rows)
            assert db.execute(f"SELECT COUNT(*) FROM {service}_reservation").fetchone() == (0,)


def test_reopening_a_migrated_log_is_a_no_op(db_path: Path) -> None:
    migrated_with_demo(db_path)

    def snapshot() -> list[Any]:
        with sqlite3.connect(db_path) as db:
            schema = db.execute(
                "SELECT type, name, sql FROM sqlite_master ORDER BY name"
            ).fetchall()
            rows = [
                db.execute(f"SELECT * FROM {s}_resource ORDER BY code").fetchall()
                for s in CATALOGUE
            ]
            versions = db.execute(
                "SELECT version_num FROM alembic_version ORDER BY version_num"
            ).fetchall()
        return [schema, rows, versions]

    before = snapshot()
    for _ in range(3):
        migrated(db_path)
        migrated_with_demo(db_path)
    assert snapshot() == before
    assert revisions(db_path) == {migrate.HEAD_REVISION, DEMO_HEAD}


def test_upgrade_of_a_log_at_head_changes_nothing(db_path: Path) -> None:
    migrated_with_demo(db_path)
    with sqlite3.connect(db_path) as db:
        before = db.execute("SELECT COUNT(*) FROM flight_resource").fetchone()
    migrate.upgrade(str(db_path))
    migrate.upgrade(str(db_path), branches=["demo"])
    with sqlite3.connect(db_path) as db:
        assert db.execute("SELECT COUNT(*) FROM flight_resource").fetchone() == before
    assert revisions(db_path) == {migrate.HEAD_REVISION, DEMO_HEAD}


def test_known_revisions_equal_the_migration_scripts() -> None:
    assert list(migrate.KNOWN_REVISIONS) == migrate.script_revisions()
    assert migrate.HEAD_REVISION == migrate.script_revisions()[-1]
    for label, line in migrate.BRANCHES.items():
        assert list(line) == migrate.script_revisions(label), label


def upgraded_by_alembic(path: Path, target: str) -> None:
    """Migrate the log at `path` to `target` with the scripts alone, as an older saga did."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(migrate.migrations_dir()))
    config.set_main_option("sqlalchemy.url", f"sqlite:///{path}")
    eng = sa.create_engine(f"sqlite:///{path}")
    try:
        with eng.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, target)
    finally:
        eng.dispose()


def test_log_at_an_older_revision_is_upgraded_to_head(db_path: Path) -> None:
    upgraded_by_alembic(db_path, migrate.KNOWN_REVISIONS[0])
    assert revision(db_path) == migrate.KNOWN_REVISIONS[0]
    assert "flight_resource" not in tables(db_path)
    migrated(db_path)
    assert revision(db_path) == migrate.HEAD_REVISION
    # 0002 made the demo's tables and 0008 dropped them again, never used
    assert tables(db_path) == {*LOG_TABLES, "alembic_version"}
    migrated_with_demo(db_path)
    assert "flight_resource" in tables(db_path)


# -- the models are the schema of record ---------------------------------------------------


@pytest.mark.parametrize("table", LOG_TABLES)
def test_models_match_the_migrated_schema(table: str, engine: Engine, tmp_path: Path) -> None:
    from sqlmodel import SQLModel

    from saga_cli.store import models

    # The models' own DDL, on a scratch file, is what the migrations must match.
    metadata = SQLModel.metadata
    assert {models.SagaExecution.__tablename__, models.SagaEvent.__tablename__} <= set(
        metadata.tables
    )
    model_engine = sa.create_engine(f"sqlite:///{tmp_path / 'models.db'}")
    try:
        metadata.create_all(model_engine, tables=[metadata.tables[t] for t in LOG_TABLES])
        from_models = sa.inspect(model_engine)
        from_migrations = sa.inspect(engine)
        assert table_columns(from_models, table) == table_columns(from_migrations, table)
        assert [c["name"] for c in from_models.get_columns(table)] == [
            c["name"] for c in from_migrations.get_columns(table)
        ]
        assert (
            from_models.get_pk_constraint(table)["constrained_columns"]
            == from_migrations.get_pk_constraint(table)["constrained_columns"]
        )
        assert table_indexes(from_models, table) == table_indexes(from_migrations, table)
        assert table_foreign_keys(from_models, table) == table_foreign_keys(from_migrations, table)
    finally:
        model_engine.dispose()


def test_migrated_schema_has_the_expected_keys_and_indexes(engine: Engine) -> None:
    inspector = sa.inspect(engine)
    assert inspector.get_pk_constraint("saga_execution")["constrained_columns"] == ["id"]
    assert inspector.get_pk_constraint("saga_event")["constrained_columns"] == ["saga_id", "seq"]
    assert table_indexes(inspector, "saga_execution") == {
        "ix_saga_execution_created": (("created_at", "id"), False),
        "ix_saga_execution_status_created": (("status", "created_at", "id"), False),
        "ix_saga_execution_saga_created": (("saga", "created_at", "id"), False),
    }
    nullable = {c["name"]: c["nullable"] for c in inspector.get_columns("saga_execution")}
    assert {n for n, v in nullable.items() if v} == {
        "step",
        "owner",
        "lease_expires_at",
        "definition_version",
        "concurrency_key",
    }
    assert inspector.get_pk_constraint("saga_key_lock")["constrained_columns"] == ["key"]
    assert inspector.get_pk_constraint("saga_definition")["constrained_columns"] == [
        "name",
        "version",
    ]


# -- failures and refusals ---------------------------------------------------------------------

BOGUS_REVISION = '''"""A revision that fails halfway.

Revision ID: {rev}
Revises: {down}
"""

import sqlalchemy as sa
from alembic import op

revision = "{rev}"
down_revision = "{down}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("half_done", sa.Column("id", sa.Integer(), primary_key=True))
    op.execute("INSERT INTO half_done (id) VALUES (1)")
    raise RuntimeError("revision {rev} failed on purpose")


def downgrade() -> None:
    pass
'''


@pytest.fixture
def bogus_migrations(tmp_path: Path) -> Path:
    """A copy of the real migrations plus a next revision that creates a table, then raises."""
    copy = tmp_path / "migrations"
    shutil.copytree(migrate.migrations_dir(), copy, ignore=shutil.ignore_patterns("__pycache__"))
    head = migrate.HEAD_REVISION
    bogus = f"{int(head) + 1:04d}"
    script = BOGUS_REVISION.format(rev=bogus, down=head)
    (copy / "versions" / f"{bogus}_bogus.py").write_text(script)
    return copy


def test_failing_revision_leaves_the_version_unchanged(
    db_path: Path, bogus_migrations: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    migrated(db_path)
    before = tables(db_path)
    monkeypatch.setattr(migrate, "migrations_dir", lambda: bogus_migrations)
    with pytest.raises(MigrationError, match="failed on purpose"):
        migrate.upgrade(str(db_path))
    assert revision(db_path) == migrate.HEAD_REVISION
    assert tables(db_path) == before
    assert "half_done" not in tables(db_path)


def test_failing_revision_on_an_empty_log_leaves_it_empty(
    db_path: Path, bogus_migrations: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(migrate, "migrations_dir", lambda: bogus_migrations)
    with pytest.raises(MigrationError, match="failed on purpose"):
        open_store(str(db_path))
    # every revision ran in the one transaction that was rolled back
    assert tables(db_path) == set()


def test_log_of_a_newer_saga_is_refused_and_not_modified(db_path: Path) -> None:
    migrated(db_path)
    with sqlite3.connect(db_path) as db:
        db.execute("UPDATE alembic_version SET version_num='9999'")
    before = db_path.read_bytes()
    with pytest.raises(SchemaTooNewError, match="9999"):
        open_store(str(db_path))
    assert revision(db_path) == "9999"
    assert db_path.read_bytes() == before


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"id,name\n1,alice\n" * 50, id="csv"),
        pytest.param(b"\x00\x01\x02", id="short-binary"),
        pytest.param(b"SQLite format 2\x00" + b"\x00" * 4080, id="almost-sqlite-header"),
    ],
)
def test_non_sqlite_file_is_refused_and_left_byte_for_byte(db_path: Path, content: bytes) -> None:
    db_path.write_bytes(content)
    with pytest.raises(NotADatabaseError):
        open_store(str(db_path))
    assert db_path.read_bytes() == content
    assert sorted(p.name for p in db_path.parent.iterdir()) == [db_path.name]


def test_corrupt_file_with_a_sqlite_header_is_refused_and_left_untouched(db_path: Path) -> None:
    content = b"SQLite format 3\x00" + bytes(range(256)) * 16
    db_path.write_bytes(content)
    with pytest.raises(NotADatabaseError):
        open_store(str(db_path))
    assert db_path.read_bytes() == content
    assert sorted(p.name for p in db_path.parent.iterdir()) == [db_path.name]
