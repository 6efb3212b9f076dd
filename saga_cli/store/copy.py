"""Move a whole saga log between databases: SQLite to PostgreSQL, or back.

Everything moves: every execution with its events (in-flight ones too, with
their owners and leases, so ``saga resume --all`` on the new log picks them
up once the leases run out), definition versions, concurrency keys, and the
tables of the migration branches the source has (the demo's services and
circuit breakers, if it ran the demo), which the target gets too. The source is read in one snapshot
and the target written in one transaction, which commits only after every
table's row count and checksum read back from the target match the source's;
otherwise it rolls back and the target stays empty.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from saga_cli.errors import InvalidInputError, StoreError
from saga_cli.store import open_store, read_revisions
from saga_cli.store.postgres import is_postgres_url, safe_url

# Parents first: saga_event and saga_key_lock reference saga_execution.
_FIRST = ("saga_execution",)
_BATCH = 1000
_MASK = (1 << 128) - 1


@dataclass(frozen=True, slots=True)
class TableCopy:
    """One table moved: its rows and the checksum both sides agreed on."""

    table: str
    rows: int
    checksum: str


@dataclass(frozen=True, slots=True)
class CopyReport:
    """What ``copy_log`` moved, table by table, verified."""

    source: str
    target: str
    tables: list[TableCopy]

    @property
    def rows(self) -> int:
        """Rows moved in all."""
        return sum(t.rows for t in self.tables)


class _Digest:
    """An order-independent checksum of a table's rows, and their count.

    Each row hashes on its own (SHA-256 of a canonical JSON form: floats by
    their exact repr) and the hashes are summed, so the two databases may
    return rows in any order (their text collations differ) and nothing is
    sorted or held in memory.
    """

    def __init__(self) -> None:
        self.count = 0
        self._sum = 0

    def add(self, row: Sequence[Any]) -> None:
        canonical = json.dumps([_canonical(v) for v in row], separators=(",", ":"))
        digest = int.from_bytes(hashlib.sha256(canonical.encode()).digest()[:16], "big")
        self._sum = (self._sum + digest) & _MASK
        self.count += 1

    @property
    def checksum(self) -> str:
        return f"{self._sum:032x}"


def _canonical(value: Any) -> Any:
    if isinstance(value, float):
        return ["f", repr(value)]
    if isinstance(value, bool):  # not in the schema, but never confuse it with 0/1
        return ["b", value]
    return value


class _Side:
    """One database, spoken to through its DB-API driver."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.postgres = is_postgres_url(url)
        self.mark = "%s" if self.postgres else "?"
        self.name = safe_url(url) if self.postgres else url
        if self.postgres:
            from saga_cli.store.postgres import connect

            self.db: Any = connect(url, autocommit=True)
        else:
            from saga_cli.store.sqlite import SqliteSettings

            self.db = SqliteSettings(url).connect()

    @contextmanager
    def errors(self) -> Iterator[None]:
        if self.postgres:
            from saga_cli.store.postgres import translate_errors
        else:
            from saga_cli.store.sqlite import translate_errors  # type: ignore[assignment]
        with translate_errors(self.name):
            yield

    def tables(self) -> list[str]:
        if self.postgres:
            sql = (
                "SELECT table_name FROM information_schema.tables"
                " WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'"
            )
        else:
            sql = "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'"
        names = {str(row[0]) for row in self.db.execute(sql).fetchall()} - {"alembic_version"}
        return [t for t in _FIRST if t in names] + sorted(names - set(_FIRST))

    def columns(self, table: str) -> list[str]:
        cursor = self.db.execute(f'SELECT * FROM "{table}" LIMIT 0')
        return [str(d[0]) for d in cursor.description]

    def rows(self, table: str, columns: Sequence[str]) -> Iterator[Sequence[Any]]:
        cursor = self.db.cursor()
        cursor.execute(f'SELECT {_names(columns)} FROM "{table}"')
        while batch := cursor.fetchmany(_BATCH):
            yield from batch

    def count(self, table: str) -> int:
        return int(self.db.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()[0])

    def close(self) -> None:
        self.db.close()


def _names(columns: Sequence[str]) -> str:
    return ", ".join(f'"{c}"' for c in columns)


def copy_log(source_url: str, target_url: str) -> CopyReport:
    """Copy the whole saga log at `source_url` into the empty log at `target_url`.

    The target is created (SQLite) and migrated if needed; both must then be
    at the same schema revision. Stop writers of the source first: the copy
    is the source as of one moment, and later writes stay behind.

    Args:
        source_url: the log to copy (a path, sqlite:/// or postgresql URL).
        target_url: where to copy it; must hold no executions, events,
            definitions, breakers or service records (the demo's seeded
            catalogue is replaced by the source's).

    Returns:
        Per table, the rows moved and the checksum verified on both sides.

    Raises:
        InvalidInputError: the target is the source, or is not empty.
        StoreError: a database failed, or the verification did not match
            (the target is rolled back, left empty).
    """
    if source_url == target_url:
        raise InvalidInputError("the copy's target is its source; give another --to")
    opened = open_store(source_url, create=False)  # migrates the source to head
    try:
        branches = opened.branches()
    finally:
        opened.close()
    opened = open_store(target_url)  # creates and migrates the target
    try:
        for label in branches:  # and gives it the source's application tables (the demo's)
            opened.upgrade_branch(label)
    finally:
        opened.close()
    source_name, source_revisions = read_revisions(source_url)
    target_name, target_revisions = read_revisions(target_url)
    if sorted(source_revisions) != sorted(target_revisions):
        raise StoreError(
            f"{source_name} is at schema revision {', '.join(sorted(source_revisions))} but "
            f"{target_name} at {', '.join(sorted(target_revisions))}; run `saga db upgrade` on "
            "both with the same saga version"
        )
    source, target = _Side(source_url), _Side(target_url)
    try:
        return _copy(source, target)
    finally:
        source.close()
        target.close()


def _copy(source: _Side, target: _Side) -> CopyReport:
    with source.errors(), target.errors():
        tables = source.tables()
        if set(tables) != set(target.tables()):
            raise StoreError(
                f"{source.name} and {target.name} hold different tables: "
                f"{sorted(set(tables) ^ set(target.tables()))}"
            )
        # The target's write transaction starts, and locks its tables, before
        # the emptiness check: two copies into one target cannot both find
        # it empty; the second waits, then finds the first one's rows.
        target.db.execute("BEGIN" if target.postgres else "BEGIN IMMEDIATE")
        try:
            if target.postgres:
                names = ", ".join(f'"{t}"' for t in tables)
                target.db.execute(f"LOCK TABLE {names} IN EXCLUSIVE MODE")
            _refuse_unless_empty(target, tables)
            # One snapshot of the source: a read transaction that sees every
            # table as of the same moment.
            source.db.execute(
                "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY" if source.postgres else "BEGIN"
            )
            try:
                report = [_copy_table(source, target, table) for table in tables]
            finally:
                source.db.execute("ROLLBACK")
        except BaseException:
            target.db.execute("ROLLBACK")
            raise
        target.db.execute("COMMIT")
    return CopyReport(source.name, target.name, report)


def _refuse_unless_empty(target: _Side, tables: Sequence[str]) -> None:
    for table in tables:
        if table.endswith("_resource"):
            continue  # seeded by the migrations: replaced by the copy
        found = target.count(table)
        if found:
            raise InvalidInputError(
                f"{target.name} is not empty ({table} has {found} rows); copy into a new, empty log"
            )


def _copy_table(source: _Side, target: _Side, table: str) -> TableCopy:
    # Sorted: the checksum is over the same column order on both sides.
    columns = sorted(source.columns(table))
    if columns != sorted(target.columns(table)):
        raise StoreError(f"{table} has different columns in {source.name} and {target.name}")
    if table.endswith("_resource"):
        target.db.execute(f'DELETE FROM "{table}"')
    insert = (
        f'INSERT INTO "{table}" ({_names(columns)})'
        f" VALUES ({', '.join([target.mark] * len(columns))})"
    )
    sent = _Digest()
    batch: list[Sequence[Any]] = []
    cursor = target.db.cursor()
    for row in source.rows(table, columns):
        sent.add(row)
        batch.append(tuple(row))
        if len(batch) >= _BATCH:
            cursor.executemany(insert, batch)
            batch = []
    if batch:
        cursor.executemany(insert, batch)
    # Read back what the target now holds, in its own transaction.
    landed = _Digest()
    for row in target.rows(table, columns):
        landed.add(row)
    if (landed.count, landed.checksum) != (sent.count, sent.checksum):
        raise StoreError(
            f"verification of {table} failed: {sent.count} rows (checksum {sent.checksum}) "
            f"sent, {landed.count} (checksum {landed.checksum}) landed; the target was "
            "rolled back"
        )
    return TableCopy(table, sent.count, sent.checksum)


def table_digests(url: str) -> dict[str, tuple[int, str]]:
    """(row count, checksum) of every table of the log at `url`, as copy_log computes them."""
    side = _Side(url)
    try:
        with side.errors():
            found: dict[str, tuple[int, str]] = {}
            for table in side.tables():
                digest = _Digest()
                for row in side.rows(table, sorted(side.columns(table))):
                    digest.add(row)
                found[table] = (digest.count, digest.checksum)
            return found
    finally:
        side.close()
