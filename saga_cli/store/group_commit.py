"""Group commit: the log writes of concurrent threads share one transaction.

On a durable SQLite log every commit costs an fsync, and SQLite has one
writer at a time. When several executions run in one process, the thread
that finds no commit in progress becomes the leader: it takes every write
queued so far, runs them in one transaction (a savepoint each, so one
refused write does not undo the others), commits once, and only then
releases each waiter. Writes that arrive meanwhile queue up and the first of
them leads the next batch. A lone thread leads every batch of one, so the
sequential path pays no hand-off.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Generic, TypeVar

from saga_cli.store.sql import Rollback

T = TypeVar("T")


class _Write(Generic[T]):
    """One caller's write, waiting for its batch to commit."""

    __slots__ = ("work", "result", "error", "settled", "done", "lead")

    def __init__(self, work: Callable[[sqlite3.Cursor], T]) -> None:
        self.work = work
        self.result: Any = None
        self.error: BaseException | None = None
        self.settled = False  # its transaction committed or failed
        self.done = False  # its waiter may return
        self.lead = False

    def outcome(self) -> T:
        if self.error is not None:
            raise self.error
        result: T = self.result
        return result


class GroupCommitter:
    """Serialises writes to one connection, batching those that arrive together.

    Args:
        connection: an autocommit-mode connection (transactions are explicit).
        file_lock: held around each transaction; every writer of the same file
            in this process takes it, so in-process writers queue here rather
            than in SQLite's busy handler, which sleeps in millisecond steps.
        translate: turns a sqlite3 error into the library's error.
    """

    def __init__(
        self,
        connection: sqlite3.Connection,
        file_lock: AbstractContextManager[Any],
        translate: Callable[[sqlite3.DatabaseError], Exception],
    ) -> None:
        self._db = connection
        self._cursor = connection.cursor()
        self._file_lock = file_lock
        self._translate = translate
        self._cv = threading.Condition(threading.Lock())
        self._queue: list[_Write[Any]] = []
        self._busy = False
        self.batches = 0
        self.writes = 0

    def submit(self, work: Callable[[sqlite3.Cursor], T]) -> T:
        """Run `work` inside a committed transaction and return its result.

        Returns only once the transaction holding `work` has committed (and,
        on a FULL log, is on disk). If `work` raises :class:`Rollback`, its
        writes are rolled back and the Rollback's result is returned.

        Raises:
            Exception: whatever `work` raised (its writes are rolled back), or
                the translated error if the commit itself failed.
        """
        write: _Write[T] = _Write(work)
        with self._cv:
            self._queue.append(write)
            if self._busy:
                while not (write.done or write.lead):
                    self._cv.wait()
                if write.done:
                    return write.outcome()
            else:
                self._busy = True
            batch, self._queue = self._queue, []
        try:
            self._commit(batch)
        finally:
            with self._cv:
                for item in batch:
                    if not item.settled:
                        item.error = RuntimeError("the leader was interrupted before committing")
                    item.done = True
                if self._queue:
                    self._queue[0].lead = True
                else:
                    self._busy = False
                self._cv.notify_all()
        return write.outcome()

    def _commit(self, batch: list[_Write[Any]]) -> None:
        cursor = self._cursor
        with self._file_lock:
            try:
                cursor.execute("BEGIN IMMEDIATE")
                if len(batch) == 1:
                    # The sequential path: no savepoint, the transaction is the write's.
                    only = batch[0]
                    undo = False
                    try:
                        only.result = only.work(cursor)
                    except Rollback as stop:
                        only.result = stop.result
                        undo = True
                    except Exception as exc:
                        only.error = exc
                        undo = True
                    cursor.execute("ROLLBACK" if undo else "COMMIT")
                else:
                    for item in batch:
                        cursor.execute("SAVEPOINT write")
                        try:
                            item.result = item.work(cursor)
                        except Rollback as stop:
                            item.result = stop.result
                            cursor.execute("ROLLBACK TO write")
                        except Exception as exc:
                            item.error = exc
                            cursor.execute("ROLLBACK TO write")
                        cursor.execute("RELEASE write")
                    cursor.execute("COMMIT")
            except sqlite3.DatabaseError as exc:
                if self._db.in_transaction:
                    try:
                        cursor.execute("ROLLBACK")
                    except sqlite3.DatabaseError:
                        pass  # the original error is the one worth reporting
                error = self._translate(exc)
                for item in batch:
                    item.result = None
                    item.error = error
            except BaseException:
                if self._db.in_transaction:
                    cursor.execute("ROLLBACK")
                raise
            finally:
                self.batches += 1
                self.writes += len(batch)
        for item in batch:
            if isinstance(item.error, sqlite3.DatabaseError):
                item.error = self._translate(item.error)
            item.settled = True
