r"""A video-processing saga: upload, transcode, thumbnails, metadata, publish to the CDN.

Steps (kinds in brackets)::

    upload [compensatable]                  writes <files>/<id>/source/<slug>.mp4
    transcode + thumbnails [compensatable]  a parallel group: both read only the upload;
                                            write <id>/renditions/*.mp4 and <id>/thumbnails/*.jpg
    metadata [compensatable]                a catalogue row, status 'pending' (a semantic lock
                                            on the slug: no other video can take it meanwhile)
    publish_to_cdn [pivot]                  the CDN serves the video: no way back after this
    go_live [retriable]                     the catalogue row 'pending' -> 'live' (lock released)

Each compensation deletes exactly the files (or the row) its step made, in
reverse order; transcode's and thumbnails' compensations run concurrently.

The "services" keep their state in SQLite tables prefixed ``video_`` in the
file named by ``SAGA_EXAMPLE_DB`` (default ``./saga-examples.db``) and their
files under ``SAGA_EXAMPLE_FILES`` (default ``./saga-example-files/``), one
folder per execution id. Every action and compensation is idempotent by its
key (``video_request``); a compensation that arrives before its action
leaves a tombstone (state ``canceled``), so the late action is refused and
leaves no file behind. ``video_effect`` journals each effect when it really
happens (once per key), for the crash-point test kit.

Failure injection from the payload (besides ``saga run --fail/--crash-at/...``):

* ``"size_kb": 600``: the upload service refuses sources above 512 KB;
* ``"corrupt": true``: the source is stored with a broken header, so transcode
  refuses to decode it (thumbnails, which only grabs key frames, still succeeds
  and is compensated);
* ``"resolutions": ["8k"]``: transcode refuses a resolution it does not know;
* ``"thumbnails_at": [99]`` past ``duration_s``: thumbnails refuses;
* a ``slug`` that another pending or live video holds: metadata refuses;
* ``"cdn_quota_kb": 4``: the CDN refuses a package above the quota (the pivot
  fails, so everything before it is compensated).

Run::

    saga --db saga.db run examples/video_pipeline.py:pipeline \
        --payload '{"slug": "cat-42", "title": "Cat plays piano"}'
    python examples/video_pipeline.py show          # files, catalogue rows, CDN
    python examples/video_pipeline.py reset         # forget everything this example made
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from saga_cli import BusinessError, RetryPolicy, Saga, StepContext, TransientError

DEFAULT_DB = "saga-examples.db"
DEFAULT_FILES = "saga-example-files"
UPLOAD_LIMIT_KB = 512
# Known output formats: name -> frame height (renditions are sized by it).
RESOLUTIONS = {"240p": 240, "360p": 360, "480p": 480, "720p": 720, "1080p": 1080}
SOURCE_MAGIC = b"FAKEMP4\n"
CDN_BASE = "https://cdn.example.com/v"


class Video(BaseModel):
    """The input of one execution: the video to process and where it should fail."""

    slug: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,39}$")
    title: str
    size_kb: int = Field(default=16, ge=1)
    duration_s: float = Field(default=30.0, gt=0)
    resolutions: list[str] = Field(default_factory=lambda: ["360p", "720p"], min_length=1)
    thumbnails_at: list[float] = Field(default_factory=lambda: [1.0, 10.0], min_length=1)
    corrupt: bool = False
    cdn_quota_kb: int | None = Field(default=None, ge=0)


class UploadRefusedError(BusinessError):
    """Raised when the upload service refuses a source (too large)."""


class DecodeError(BusinessError):
    """Raised when transcode cannot decode the source (a corrupt upload)."""


class UnsupportedResolutionError(BusinessError):
    """Raised when transcode is asked for a resolution it does not know."""


class ThumbnailError(BusinessError):
    """Raised when a thumbnail is asked for past the end of the video."""


class SlugTakenError(BusinessError):
    """Raised when another pending or live video holds the slug (the semantic lock)."""


class QuotaExceededError(BusinessError):
    """Raised when the CDN refuses a package larger than the payload's quota."""


class RequestCanceledError(BusinessError):
    """Raised when an action arrives after its compensation (a tombstone) and is refused."""


# -- where things live --------------------------------------------------------------


def db_path() -> str:
    """The services' SQLite file (``SAGA_EXAMPLE_DB``, read at each call)."""
    return os.environ.get("SAGA_EXAMPLE_DB", DEFAULT_DB)


def files_root() -> Path:
    """The directory holding one folder of files per execution (``SAGA_EXAMPLE_FILES``)."""
    return Path(os.environ.get("SAGA_EXAMPLE_FILES", DEFAULT_FILES))


def planned_files(step: str, execution_id: str, video: Video) -> list[str]:
    """The files `step` makes for an execution, relative to :func:`files_root`.

    A pure function of the execution and its payload, so that a compensation
    knows what to delete even if the action wrote files but died before
    recording them.
    """
    base = f"{execution_id}/{STEP_DIRS[step]}"
    if step == "upload":
        return [f"{base}/{video.slug}.mp4"]
    if step == "transcode":
        return [f"{base}/{video.slug}-{r}.mp4" for r in video.resolutions]
    if step == "thumbnails":
        return [f"{base}/{video.slug}-{n:02d}.jpg" for n in range(1, len(video.thumbnails_at) + 1)]
    raise ValueError(f"step {step!r} makes no files")


STEP_DIRS = {"upload": "source", "transcode": "renditions", "thumbnails": "thumbnails"}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS video_request (
    key TEXT PRIMARY KEY,
    execution_id TEXT NOT NULL,
    step TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('done', 'canceled')),
    result TEXT,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS video_effect (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    execution_id TEXT NOT NULL,
    step TEXT NOT NULL,
    what TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS video_effect_execution ON video_effect (execution_id);
CREATE TABLE IF NOT EXISTS video_file (
    path TEXT PRIMARY KEY,
    key TEXT NOT NULL,
    execution_id TEXT NOT NULL,
    step TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS video_metadata (
    key TEXT PRIMARY KEY,
    execution_id TEXT NOT NULL,
    slug TEXT NOT NULL,
    title TEXT NOT NULL,
    renditions TEXT NOT NULL,
    thumbnails INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'live')),
    updated_at REAL NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS video_metadata_slug ON video_metadata (slug);
CREATE TABLE IF NOT EXISTS video_cdn (
    key TEXT PRIMARY KEY,
    execution_id TEXT NOT NULL,
    slug TEXT NOT NULL,
    url TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    published_at REAL NOT NULL
);
"""

TABLES = ("video_request", "video_effect", "video_file", "video_metadata", "video_cdn")


# -- the services ----------------------------------------------------------------------


class Tables:
    """The example's SQLite tables: a connection per thread, one short transaction per call."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._local = threading.local()

    def _db(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            # isolation_level=None: we issue BEGIN IMMEDIATE ourselves, so a
            # writer takes the lock up front instead of failing on upgrade.
            db = sqlite3.connect(self.path, isolation_level=None, timeout=10)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA busy_timeout=10000")
            db.executescript(_SCHEMA)
            self._local.db = db
        return db

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE ... COMMIT, rolled back on any error)."""
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def read(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Rows of one query."""
        return list(self._db().execute(sql, params))

    def close(self) -> None:
        """Close this thread's connection."""
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None


def _request(db: sqlite3.Connection, key: str) -> tuple[str, Any] | None:
    """The state and stored result of the call made under `key`, if any."""
    row = db.execute("SELECT state, result FROM video_request WHERE key=?", (key,)).fetchone()
    if row is None:
        return None
    return row[0], None if row[1] is None else json.loads(row[1])


def _done(
    db: sqlite3.Connection, key: str, execution_id: str, step: str, what: str, result: Any
) -> None:
    """Record the call under `key` as done and journal its effect (in the caller's transaction)."""
    now = time.time()
    db.execute(
        "INSERT INTO video_request (key, execution_id, step, state, result, at)"
        " VALUES (?,?,?,'done',?,?)",
        (key, execution_id, step, json.dumps(result), now),
    )
    db.execute(
        "INSERT INTO video_effect (key, execution_id, step, what, at) VALUES (?,?,?,?,?)",
        (key, execution_id, step, what, now),
    )


def _cancel(db: sqlite3.Connection, action_key: str, execution_id: str, step: str) -> None:
    """Mark the action under `action_key` canceled; a tombstone if it never arrived."""
    db.execute(
        "INSERT INTO video_request (key, execution_id, step, state, result, at)"
        " VALUES (?,?,?,'canceled',NULL,?)"
        " ON CONFLICT (key) DO UPDATE SET state='canceled'",
        (action_key, execution_id, step, time.time()),
    )


def _refuse_canceled(key: str) -> RequestCanceledError:
    return RequestCanceledError(f"{key} was compensated before it arrived; refused")


def _write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary name, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f"{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    with open(temp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)


def _sweep_stale_temporaries(path: Path) -> None:
    """Delete temporaries of `path` left by writers that were killed (their pid is gone)."""
    if not path.parent.is_dir():
        return
    for temp in path.parent.glob(f"{path.name}.tmp-*"):
        pid = int(temp.name.rsplit(".tmp-", 1)[1].split("-")[0])
        try:
            os.kill(pid, 0)  # signal 0: only asks whether the process exists
            continue  # a live writer (this process or another) owns it
        except ProcessLookupError:
            pass
        except PermissionError:
            continue  # alive, someone else's
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()


def _remove_files(root: Path, relative: list[str]) -> int:
    """Delete these files and their leftover temporaries; prune emptied folders. Idempotent."""
    removed = 0
    folders: set[Path] = set()
    for name in relative:
        path = root / name
        folders.add(path.parent)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed += 1
        # A process killed inside _write_atomic leaves its temporary behind.
        if path.parent.is_dir():
            for temp in path.parent.glob(f"{path.name}.tmp-*"):
                with contextlib.suppress(FileNotFoundError):
                    temp.unlink()
    for folder in folders:
        # The step's own folder, then the execution's folder once it is empty.
        for candidate in (folder, folder.parent):
            with contextlib.suppress(OSError):  # not empty (a sibling's files), or gone
                candidate.rmdir()
    return removed


class MediaStore:
    """The upload, transcoding and thumbnail services: files on disk plus a manifest."""

    def __init__(self, tables: Tables, root: Path) -> None:
        self.tables = tables
        self.root = root

    def produce(
        self, key: str, execution_id: str, step: str, files: Mapping[str, bytes]
    ) -> dict[str, Any]:
        """Write `files` (relative path -> content) under `key`, once.

        A repeated key returns the first result without writing again.

        Raises:
            RequestCanceledError: the step was compensated before (a tombstone).
        """
        with self.tables.transaction() as db:
            known = _request(db, key)
        if known is not None:
            if known[0] == "canceled":
                raise _refuse_canceled(key)
            return dict(known[1])
        # Files first, the record second: a crash in between leaves files that
        # the retried call overwrites (same names) or the compensation deletes
        # (it computes the names from the payload, not from this record).
        for name, data in files.items():
            # A writer killed mid-file (SIGKILL) left its temporary behind.
            _sweep_stale_temporaries(self.root / name)
            _write_atomic(self.root / name, data)
        result = {"files": sorted(files), "bytes": sum(len(d) for d in files.values())}
        with self.tables.transaction() as db:
            known = _request(db, key)
            if known is None:
                now = time.time()
                db.executemany(
                    "INSERT INTO video_file (path, key, execution_id, step, bytes, at)"
                    " VALUES (?,?,?,?,?,?) ON CONFLICT (path) DO UPDATE SET key=excluded.key",
                    [(n, key, execution_id, step, len(d), now) for n, d in files.items()],
                )
                _done(db, key, execution_id, step, f"wrote {len(files)} file(s)", result)
                return result
        if known[0] == "canceled":
            # The compensation ran while we were writing: undo our own files.
            _remove_files(self.root, list(files))
            raise _refuse_canceled(key)
        return dict(known[1])

    def remove(
        self, key: str, action_key: str, execution_id: str, step: str, planned: list[str]
    ) -> dict[str, Any]:
        """Delete the files the action under `action_key` made, once; tombstone it first."""
        with self.tables.transaction() as db:
            known = _request(db, key)
            if known is not None:
                return dict(known[1])
            # The tombstone commits before any file goes, so an action still in
            # flight either sees it (and cleans up after itself) or committed
            # first (and its files are in `recorded` or `planned` below).
            _cancel(db, action_key, execution_id, step)
            recorded = [
                row[0]
                for row in db.execute("SELECT path FROM video_file WHERE key=?", (action_key,))
            ]
        removed = _remove_files(self.root, sorted({*recorded, *planned}))
        result = {"removed": removed}
        with self.tables.transaction() as db:
            known = _request(db, key)
            if known is not None:
                return dict(known[1])
            db.execute("DELETE FROM video_file WHERE key=?", (action_key,))
            _done(db, key, execution_id, step, f"deleted {removed} file(s)", result)
        return result


class Catalogue:
    """The metadata service: one row per video, 'pending' until the saga goes live."""

    def __init__(self, tables: Tables) -> None:
        self.tables = tables

    def create(self, key: str, execution_id: str, video: Video, info: dict[str, Any]) -> Any:
        """Add the video's row as 'pending' under `key`, once.

        Raises:
            RequestCanceledError: compensated before it arrived.
            SlugTakenError: another video holds the slug.
        """
        with self.tables.transaction() as db:
            known = _request(db, key)
            if known is not None:
                if known[0] == "canceled":
                    raise _refuse_canceled(key)
                return known[1]
            holder = db.execute(
                "SELECT execution_id, status FROM video_metadata WHERE slug=?", (video.slug,)
            ).fetchone()
            if holder is not None:
                raise SlugTakenError(
                    f"slug {video.slug!r} is held by execution {holder[0]} ({holder[1]})"
                )
            db.execute(
                "INSERT INTO video_metadata (key, execution_id, slug, title, renditions,"
                " thumbnails, status, updated_at) VALUES (?,?,?,?,?,?,'pending',?)",
                (
                    key,
                    execution_id,
                    video.slug,
                    video.title,
                    json.dumps(info["renditions"]),
                    info["thumbnails"],
                    time.time(),
                ),
            )
            result = {"key": key, "slug": video.slug, "status": "pending"}
            _done(db, key, execution_id, "metadata", "row added (pending)", result)
        return result

    def remove(self, key: str, action_key: str, execution_id: str) -> Any:
        """Delete the row made under `action_key`, once; tombstone it if it never arrived.

        Raises:
            TransientError: the row is already live (cannot happen before the
                pivot; surfaced rather than deleting a published video).
        """
        with self.tables.transaction() as db:
            known = _request(db, key)
            if known is not None:
                return known[1]
            row = db.execute(
                "SELECT status FROM video_metadata WHERE key=?", (action_key,)
            ).fetchone()
            if row is not None and row[0] == "live":
                raise TransientError(f"metadata {action_key} is live; refusing to delete it")
            deleted = db.execute("DELETE FROM video_metadata WHERE key=?", (action_key,)).rowcount
            _cancel(db, action_key, execution_id, "metadata")
            result = {"deleted": deleted}
            _done(db, key, execution_id, "metadata", f"deleted {deleted} row(s)", result)
        return result

    def go_live(self, key: str, execution_id: str, metadata_key: str) -> Any:
        """Turn the row 'pending' -> 'live' (the semantic lock released), once.

        Raises:
            TransientError: the row is missing (retried; an operator must look).
        """
        with self.tables.transaction() as db:
            known = _request(db, key)
            if known is not None:
                return known[1]
            changed = db.execute(
                "UPDATE video_metadata SET status='live', updated_at=?"
                " WHERE key=? AND status='pending'",
                (time.time(), metadata_key),
            ).rowcount
            if not changed:
                raise TransientError(f"metadata {metadata_key} is not pending")
            result = {"status": "live"}
            _done(db, key, execution_id, "go_live", "row live", result)
        return result


class Cdn:
    """The CDN: what it publishes, it serves for good (the saga's pivot)."""

    def __init__(self, tables: Tables) -> None:
        self.tables = tables

    def publish(
        self, key: str, execution_id: str, slug: str, size: int, quota_kb: int | None
    ) -> Any:
        """Publish `size` bytes of video `slug` under `key`, once.

        Raises:
            QuotaExceededError: `size` is above `quota_kb`; nothing is published.
        """
        with self.tables.transaction() as db:
            known = _request(db, key)
            if known is not None:
                return known[1]
            if quota_kb is not None and size > quota_kb * 1024:
                raise QuotaExceededError(
                    f"CDN quota exceeded: {size} bytes to publish, quota {quota_kb} KB"
                )
            url = f"{CDN_BASE}/{slug}/"
            db.execute(
                "INSERT INTO video_cdn (key, execution_id, slug, url, bytes, published_at)"
                " VALUES (?,?,?,?,?,?)",
                (key, execution_id, slug, url, size, time.time()),
            )
            result = {"url": url, "bytes": size}
            _done(db, key, execution_id, "publish_to_cdn", f"published {url}", result)
        return result


@dataclass(frozen=True, slots=True)
class Services:
    """The example's services over one SQLite file and one files directory."""

    tables: Tables
    media: MediaStore
    catalogue: Catalogue
    cdn: Cdn


_services: dict[tuple[str, str], Services] = {}
_services_lock = threading.Lock()


def services() -> Services:
    """The services for the current ``SAGA_EXAMPLE_DB`` and ``SAGA_EXAMPLE_FILES``."""
    where = (db_path(), str(files_root()))
    with _services_lock:
        found = _services.get(where)
        if found is None:
            tables = Tables(where[0])
            found = Services(
                tables, MediaStore(tables, Path(where[1])), Catalogue(tables), Cdn(tables)
            )
            _services[where] = found
        return found


# -- fake media ----------------------------------------------------------------------


def _fake_bytes(header: bytes, size: int) -> bytes:
    """`size` bytes (at least the header) starting with `header`."""
    filler = b"\x00" * max(0, size - len(header))
    return header + filler


def _decoded_source(ctx: StepContext[Video]) -> Path:
    """The uploaded source, checked to be a video we can decode.

    Raises:
        DecodeError: its header is not a video's.
    """
    path: Path = services().media.root / str(ctx.results["upload"]["files"][0])
    with open(path, "rb") as handle:
        if handle.read(len(SOURCE_MAGIC)) != SOURCE_MAGIC:
            raise DecodeError(f"cannot decode {path.name}: corrupt source")
    return path


# -- the saga ------------------------------------------------------------------------

pipeline = Saga(
    "video-pipeline",
    payload=Video,
    description="upload, transcode + thumbnails, metadata, publish to the CDN (pivot), go live",
)

# Transient failures (a busy database, a full disk that frees up) are retried
# a few times, quickly; business refusals are not.
QUICK_RETRY = RetryPolicy(max_attempts=3, initial_delay=0.02, max_delay=0.2)


@pipeline.step(retry=QUICK_RETRY)
def upload(ctx: StepContext[Video]) -> dict[str, Any]:
    """Store the source video."""
    video = ctx.payload
    if video.size_kb > UPLOAD_LIMIT_KB:
        raise UploadRefusedError(f"source is {video.size_kb} KB; the limit is {UPLOAD_LIMIT_KB} KB")
    header = b"CORRUPT\n" if video.corrupt else SOURCE_MAGIC
    (name,) = planned_files("upload", ctx.execution_id, video)
    data = _fake_bytes(header + video.title.encode() + b"\n", video.size_kb * 1024)
    return services().media.produce(ctx.key, ctx.execution_id, "upload", {name: data})


@upload.compensation
def delete_upload(ctx: StepContext[Video]) -> dict[str, Any]:
    """Delete the source (and the execution's folder once empty)."""
    planned = planned_files("upload", ctx.execution_id, ctx.payload)
    return services().media.remove(ctx.key, ctx.action_key, ctx.execution_id, "upload", planned)


with pipeline.parallel("media"):

    @pipeline.step(retry=QUICK_RETRY)
    def transcode(ctx: StepContext[Video]) -> dict[str, Any]:
        """Write one rendition per requested resolution."""
        video = ctx.payload
        unknown = [r for r in video.resolutions if r not in RESOLUTIONS]
        if unknown:
            raise UnsupportedResolutionError(
                f"unsupported resolution(s) {', '.join(unknown)}; known: {', '.join(RESOLUTIONS)}"
            )
        source = _decoded_source(ctx)
        size = source.stat().st_size
        names = planned_files("transcode", ctx.execution_id, video)
        files = {
            name: _fake_bytes(f"FAKEMP4 {r}\n".encode(), max(1024, size * RESOLUTIONS[r] // 1080))
            for name, r in zip(names, video.resolutions, strict=True)
        }
        return services().media.produce(ctx.key, ctx.execution_id, "transcode", files)

    @transcode.compensation
    def delete_renditions(ctx: StepContext[Video]) -> dict[str, Any]:
        """Delete the renditions."""
        planned = planned_files("transcode", ctx.execution_id, ctx.payload)
        return services().media.remove(
            ctx.key, ctx.action_key, ctx.execution_id, "transcode", planned
        )

    @pipeline.step(retry=QUICK_RETRY)
    def thumbnails(ctx: StepContext[Video]) -> dict[str, Any]:
        """Write one thumbnail per requested time (key frames only: the source is not decoded)."""
        video = ctx.payload
        late = [t for t in video.thumbnails_at if not 0 <= t <= video.duration_s]
        if late:
            raise ThumbnailError(
                f"thumbnail time(s) {', '.join(map(str, late))} outside the video's "
                f"{video.duration_s} s"
            )
        source = services().media.root / str(ctx.results["upload"]["files"][0])
        if not source.is_file():
            raise TransientError(f"source {source.name} is not there (yet)")
        names = planned_files("thumbnails", ctx.execution_id, video)
        files = {
            name: _fake_bytes(f"FAKEJPG {t}s\n".encode(), 1024)
            for name, t in zip(names, video.thumbnails_at, strict=True)
        }
        return services().media.produce(ctx.key, ctx.execution_id, "thumbnails", files)

    @thumbnails.compensation
    def delete_thumbnails(ctx: StepContext[Video]) -> dict[str, Any]:
        """Delete the thumbnails."""
        planned = planned_files("thumbnails", ctx.execution_id, ctx.payload)
        return services().media.remove(
            ctx.key, ctx.action_key, ctx.execution_id, "thumbnails", planned
        )


@pipeline.step(retry=QUICK_RETRY)
def metadata(ctx: StepContext[Video]) -> Any:
    """Add the catalogue row, 'pending' (a semantic lock on the slug)."""
    info = {
        "renditions": ctx.payload.resolutions,
        "thumbnails": len(ctx.results["thumbnails"]["files"]),
    }
    return services().catalogue.create(ctx.key, ctx.execution_id, ctx.payload, info)


@metadata.compensation
def remove_metadata(ctx: StepContext[Video]) -> Any:
    """Delete the catalogue row (a tombstone if it never arrived)."""
    return services().catalogue.remove(ctx.key, ctx.action_key, ctx.execution_id)


@pipeline.step(kind="pivot", retry=QUICK_RETRY)
def publish_to_cdn(ctx: StepContext[Video]) -> Any:
    """Publish the renditions and thumbnails: the point of no return."""
    size = ctx.results["transcode"]["bytes"] + ctx.results["thumbnails"]["bytes"]
    return services().cdn.publish(
        ctx.key, ctx.execution_id, ctx.payload.slug, size, ctx.payload.cdn_quota_kb
    )


@pipeline.step(kind="retriable")
def go_live(ctx: StepContext[Video]) -> Any:
    """Make the catalogue row live (releases the semantic lock)."""
    return services().catalogue.go_live(ctx.key, ctx.execution_id, ctx.results["metadata"]["key"])


# -- looking at the state (used by the tests and the CLI below) -------------------------


def effect_counts(execution_id: str) -> dict[str, int]:
    """How many times each effect of `execution_id` happened, by idempotency key."""
    rows = services().tables.read(
        "SELECT key, COUNT(*) FROM video_effect WHERE execution_id=? GROUP BY key",
        (execution_id,),
    )
    return {key: count for key, count in rows}


def files_on_disk(execution_id: str | None = None) -> list[str]:
    """Every file under the files root (or one execution's folder), relative, sorted."""
    root = files_root()
    top = root / execution_id if execution_id else root
    if not top.is_dir():
        return []
    return sorted(p.relative_to(root).as_posix() for p in top.rglob("*") if p.is_file())


def catalogue_rows() -> list[tuple[str, str, str, str]]:
    """Every catalogue row as (execution id, slug, title, status)."""
    return [
        (str(e), str(s), str(t), str(st))
        for e, s, t, st in services().tables.read(
            "SELECT execution_id, slug, title, status FROM video_metadata ORDER BY updated_at"
        )
    ]


def published() -> list[tuple[str, str, int]]:
    """Everything the CDN published as (execution id, url, bytes)."""
    return [
        (str(e), str(u), int(b))
        for e, u, b in services().tables.read(
            "SELECT execution_id, url, bytes FROM video_cdn ORDER BY published_at"
        )
    ]


_EXECUTION_DIR = re.compile(r"^[0-9a-f]{32}$")


def show(execution_id: str | None = None) -> str:
    """A readable account of the example's state: per execution, files, row and CDN."""
    rows = {e: (s, t, st) for e, s, t, st in catalogue_rows()}
    cdn = {e: (u, b) for e, u, b in published()}
    root = files_root()
    folders = {p.name for p in root.iterdir() if p.is_dir()} if root.is_dir() else set()
    ids = sorted(folders | rows.keys() | cdn.keys())
    if execution_id is not None:
        ids = [i for i in ids if i.startswith(execution_id)]
    if not ids:
        if execution_id is not None:
            return f"nothing for {execution_id}: no files, no catalogue row, nothing on the CDN"
        return "no videos"
    lines = []
    for eid in ids:
        slug, title, status = rows.get(eid, ("-", "-", "-"))
        lines.append(f"{eid}  {slug}  {title!r}" if slug != "-" else eid)
        lines.append(f"  metadata  {status}")
        url, size = cdn.get(eid, ("-", 0))
        lines.append(f"  cdn       {url}" + (f"  ({size} bytes)" if size else ""))
        files = files_on_disk(eid)
        lines.append(f"  files     {len(files)}")
        for name in files:
            lines.append(f"    {name.partition('/')[2]:<40} {(root / name).stat().st_size:>7} B")
    return "\n".join(lines)


def reset() -> str:
    """Empty the example's tables and delete every execution's folder of files."""
    tables = services().tables
    with tables.transaction() as db:
        for table in TABLES:
            db.execute(f"DELETE FROM {table}")
    tables.close()
    root = files_root()
    removed = 0
    if root.is_dir():
        for folder in root.iterdir():
            # Only folders this example made (named by an execution id).
            if folder.is_dir() and _EXECUTION_DIR.match(folder.name):
                shutil.rmtree(folder)
                removed += 1
    return f"reset: tables emptied in {db_path()}, {removed} folder(s) removed from {root}"


def main(argv: list[str] | None = None) -> None:
    """``python examples/video_pipeline.py show [ID] | reset``."""
    parser = argparse.ArgumentParser(description="Show or reset the video pipeline's state.")
    parser.add_argument(
        "--db", help=f"services' SQLite file (default $SAGA_EXAMPLE_DB or {DEFAULT_DB})"
    )
    parser.add_argument(
        "--files", help=f"files directory (default $SAGA_EXAMPLE_FILES or {DEFAULT_FILES})"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    shown = commands.add_parser("show", help="files on disk, catalogue rows, CDN, per execution")
    shown.add_argument("execution", nargs="?", help="an execution id (or prefix)")
    commands.add_parser("reset", help="empty the video_ tables and delete the files")
    args = parser.parse_args(argv)
    if args.db:
        os.environ["SAGA_EXAMPLE_DB"] = args.db
    if args.files:
        os.environ["SAGA_EXAMPLE_FILES"] = args.files
    print(show(args.execution) if args.command == "show" else reset())


if __name__ == "__main__":
    main()
