"""The one migration history on PostgreSQL: the models' DDL, older revisions, the catalogue."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from support import CATALOGUE, LOG_TABLES, table_columns, table_foreign_keys, table_indexes

from saga_cli.store import migrate, open_store
from saga_cli.store.postgres import libpq_url, sqlalchemy_url


@pytest.fixture
def engine(pg_url: str) -> Iterator[sa.Engine]:
    created = sa.create_engine(sqlalchemy_url(pg_url), poolclass=sa.pool.NullPool)
    try:
        yield created
    finally:
        created.dispose()


def test_models_match_the_migrated_schema_on_postgres(engine: sa.Engine, pg_empty_url: str) -> None:
    from sqlmodel import SQLModel

    from saga_cli.store import models

    assert models.SagaExecution.__tablename__ in SQLModel.metadata.tables
    model_engine = sa.create_engine(sqlalchemy_url(pg_empty_url), poolclass=sa.pool.NullPool)
    try:
        SQLModel.metadata.create_all(
            model_engine, tables=[SQLModel.metadata.tables[t] for t in LOG_TABLES]
        )
        from_models, from_migrations = sa.inspect(model_engine), sa.inspect(engine)
        for table in LOG_TABLES:
            assert table_columns(from_models, table) == table_columns(from_migrations, table), table
            assert table_indexes(from_models, table) == table_indexes(from_migrations, table), table
            assert table_foreign_keys(from_models, table) == table_foreign_keys(
                from_migrations, table
            )
            assert (
                from_models.get_pk_constraint(table)["constrained_columns"]
                == from_migrations.get_pk_constraint(table)["constrained_columns"]
            )
    finally:
        model_engine.dispose()


def test_floats_are_double_precision_so_times_round_trip_exactly(engine: sa.Engine) -> None:
    columns = {c["name"]: c["type"] for c in sa.inspect(engine).get_columns("saga_execution")}
    assert isinstance(columns["created_at"], sa.Double | sa.Float)
    assert str(columns["created_at"]).upper() in ("DOUBLE PRECISION", "FLOAT", "FLOAT(53)")


def test_an_older_revision_is_upgraded_to_head(pg_empty_url: str) -> None:
    from alembic import command

    eng = sa.create_engine(sqlalchemy_url(pg_empty_url), poolclass=sa.pool.NullPool)
    try:
        with eng.begin() as connection:
            command.upgrade(migrate._alembic_config(connection), migrate.KNOWN_REVISIONS[0])
    finally:
        eng.dispose()
    rows = query(pg_empty_url, "SELECT to_regclass('flight_resource') IS NULL")
    assert rows == [(True,)]
    store = open_store(pg_empty_url)
    try:
        assert query(pg_empty_url, "SELECT version_num FROM alembic_version") == [
            (migrate.HEAD_REVISION,)
        ]
        # 0002 made the demo's tables and 0008 dropped them again, never used
        assert query(pg_empty_url, "SELECT to_regclass('flight_resource') IS NULL") == [(True,)]
        store.upgrade_branch("demo")
    finally:
        store.close()
    for service, expected in CATALOGUE.items():
        found = query(pg_empty_url, f"SELECT code, capacity, available FROM {service}_resource")
        assert {code: cap for code, cap, _ in found} == expected
        assert all(cap == available for _, cap, available in found)


def test_reopening_a_migrated_log_changes_nothing(pg_url: str) -> None:
    before = query(pg_url, "SELECT version_num FROM alembic_version")
    migrate.upgrade_postgres(pg_url)  # an explicit upgrade at head is a no-op
    open_store(pg_url).close()
    assert query(pg_url, "SELECT version_num FROM alembic_version") == before
    assert query(pg_url, "SELECT COUNT(*) FROM flight_resource") == [(3,)]


def query(url: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(libpq_url(url)) as db:
        return db.execute(sql).fetchall()
