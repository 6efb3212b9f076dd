"""examples/video_pipeline.py through the real `saga run`: completes, compensates, survives SIGKILL.

Every assertion reads the example's own tables (``video_*`` in SAGA_EXAMPLE_DB)
and the files under SAGA_EXAMPLE_FILES directly, never through the example's
helpers, so a bug in those helpers cannot hide a bug in the saga.
"""

from __future__ import annotations

import functools
import json
import signal
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from conftest import CliResult, SagaCli

from saga_cli import StepContext
from saga_cli.loader import load_one
from saga_cli.testing import Scenario, check_crash_points, failing_step, scenario_points

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "video_pipeline.py"
REFERENCE = f"{EXAMPLE}:pipeline"
PAYLOAD = {"slug": "cat-42", "title": "Cat plays piano"}
COMPENSATABLE = ("upload", "transcode", "thumbnails", "metadata")
MEDIA = ("upload", "transcode", "thumbnails")


class Example:
    """Where one test's example keeps its state, and how to read it."""

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.db = root / "video.db"
        self.files = root / "files"

    @property
    def env(self) -> dict[str, str]:
        return {"SAGA_EXAMPLE_DB": str(self.db), "SAGA_EXAMPLE_FILES": str(self.files)}

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if not self.db.exists():
            return []
        with closing(sqlite3.connect(self.db)) as connection:
            return list(connection.execute(sql, params))

    def effects(self, execution_id: str) -> dict[str, int]:
        """The effect journal: how many times each key of the execution took effect."""
        rows = self.rows(
            "SELECT key, COUNT(*) FROM video_effect WHERE execution_id=? GROUP BY key",
            (execution_id,),
        )
        return {str(key): int(count) for key, count in rows}

    def files_of(self, execution_id: str) -> set[str]:
        """Every file (or leftover folder) under the execution's folder, relative to it."""
        folder = self.files / execution_id
        if not folder.exists():
            return set()
        return {p.relative_to(folder).as_posix() for p in folder.rglob("*")} | {"."}

    def cli(self, saga: SagaCli, *args: str) -> CliResult:
        """`saga ARGS` with this example's state in the child's environment."""
        return saga(*args, SAGA_EXAMPLE_DB=str(self.db), SAGA_EXAMPLE_FILES=str(self.files))

    def run(self, saga: SagaCli, payload: dict[str, Any], *args: str) -> tuple[int, Any]:
        result = self.cli(saga, "run", REFERENCE, "--payload", json.dumps(payload), "--json", *args)
        assert "Traceback" not in result.stderr, result.stderr
        return result.code, result.json()


def expected_files(slug: str = "cat-42") -> set[str]:
    """What a completed run with the default resolutions and thumbnail times leaves on disk."""
    return {
        ".",
        "source",
        f"source/{slug}.mp4",
        "renditions",
        f"renditions/{slug}-360p.mp4",
        f"renditions/{slug}-720p.mp4",
        "thumbnails",
        f"thumbnails/{slug}-01.jpg",
        f"thumbnails/{slug}-02.jpg",
    }


@pytest.fixture
def example(tmp_path: Path) -> Example:
    return Example(tmp_path)


def assert_nothing_left(example: Example, execution_id: str) -> None:
    """A compensated execution left no file, no catalogue row, nothing on the CDN."""
    assert example.files_of(execution_id) == set()
    for table in ("video_metadata", "video_cdn", "video_file"):
        rows = example.rows(f"SELECT * FROM {table} WHERE execution_id=?", (execution_id,))
        assert rows == [], (table, rows)


def test_a_run_completes_publishes_and_goes_live(migrated: SagaCli, example: Example) -> None:
    code, out = example.run(migrated, PAYLOAD)

    assert code == 0, out
    assert out["status"] == "completed"
    eid = out["id"]
    assert example.files_of(eid) == expected_files()
    source = example.files / eid / "source" / "cat-42.mp4"
    assert source.stat().st_size == 16 * 1024
    assert source.read_bytes().startswith(b"FAKEMP4\n")
    assert example.rows("SELECT execution_id, slug, title, status FROM video_metadata") == [
        (eid, "cat-42", "Cat plays piano", "live")
    ]
    # the CDN got the renditions and thumbnails, byte for byte
    on_disk = sum(p.stat().st_size for p in (example.files / eid).glob("[rt]*/*") if p.is_file())
    assert example.rows("SELECT execution_id, url, bytes FROM video_cdn") == [
        (eid, "https://cdn.example.com/v/cat-42/", on_disk)
    ]
    steps = ("upload", "transcode", "thumbnails", "metadata", "publish_to_cdn", "go_live")
    assert example.effects(eid) == {f"{eid}:{step}": 1 for step in steps}
    assert len(example.rows("SELECT path FROM video_file WHERE execution_id=?", (eid,))) == 5


# What each step's failure leaves compensated: the steps before it, and its
# parallel-group sibling, which ran (and succeeded) alongside it.
UNDONE_WHEN_FAILING = {
    "upload": set(),
    "transcode": {"upload", "thumbnails"},
    "thumbnails": {"upload", "transcode"},
    "metadata": {"upload", "transcode", "thumbnails"},
    "publish_to_cdn": {"upload", "transcode", "thumbnails", "metadata"},
}


@pytest.mark.parametrize("step", list(UNDONE_WHEN_FAILING))
def test_each_step_failing_compensates_the_others(
    migrated: SagaCli, example: Example, step: str
) -> None:
    code, out = example.run(migrated, PAYLOAD, "--fail", step)

    assert code == 3, out
    assert out["status"] == "compensated"
    assert f"{step} declined" in out["error"]
    eid = out["id"]
    assert_nothing_left(example, eid)
    undone = UNDONE_WHEN_FAILING[step]
    # each step that ran took effect once and was undone once; the failing one never ran
    assert example.effects(eid) == {
        **{f"{eid}:{s}": 1 for s in undone},
        **{f"{eid}:{s}:compensate": 1 for s in undone},
    }
    assert example.rows("SELECT state FROM video_request WHERE key=?", (f"{eid}:{step}",)) == []


@pytest.mark.parametrize(
    ("fault", "failed", "message"),
    [
        ({"size_kb": 600}, {"upload"}, "the limit is 512 KB"),
        ({"corrupt": True}, {"transcode"}, "corrupt source"),
        ({"resolutions": ["720p", "8k"]}, {"transcode"}, "unsupported resolution(s) 8k"),
        ({"thumbnails_at": [1, 99]}, {"thumbnails"}, "outside the video's 30.0 s"),
        ({"cdn_quota_kb": 4}, {"publish_to_cdn"}, "CDN quota exceeded"),
    ],
    ids=["upload-too-large", "corrupt-source", "unknown-resolution", "late-thumbnail", "quota"],
)
def test_payload_faults_compensate(
    migrated: SagaCli, example: Example, fault: dict[str, Any], failed: set[str], message: str
) -> None:
    code, out = example.run(migrated, {**PAYLOAD, **fault})

    assert code == 3, out
    assert message in out["error"]
    eid = out["id"]
    assert_nothing_left(example, eid)
    shown = migrated("show", eid, "--json").json()
    status = {s["name"]: s["status"] for s in shown["steps"]}
    for step in failed:
        assert status[step] == "failed", status
    effects = example.effects(eid)
    ran = {k.removeprefix(f"{eid}:") for k in effects if not k.endswith(":compensate")}
    assert ran.isdisjoint(failed)  # a refusal does nothing...
    # ...and whatever did run was undone, exactly once
    assert effects == {
        **{f"{eid}:{s}": 1 for s in ran},
        **{f"{eid}:{s}:compensate": 1 for s in ran},
    }
    if "upload" not in failed:
        assert "upload" in ran  # its file was written, then deleted


def test_a_pending_slug_is_locked_until_its_saga_ends(migrated: SagaCli, example: Example) -> None:
    first = example.cli(
        migrated,
        "run",
        REFERENCE,
        "--payload",
        json.dumps(PAYLOAD),
        "--crash-at",
        "publish_to_cdn:before",
    )
    assert first.code == -signal.SIGKILL, first
    (held,) = example.rows("SELECT execution_id, status FROM video_metadata")
    assert held[1] == "pending"

    code, out = example.run(migrated, {**PAYLOAD, "title": "Another cat"})

    assert code == 3, out
    assert f"slug 'cat-42' is held by execution {held[0]} (pending)" in out["error"]
    assert_nothing_left(example, out["id"])
    resumed = example.cli(migrated, "resume", held[0], "--json")
    assert resumed.code == 0, resumed
    assert example.rows("SELECT execution_id, status FROM video_metadata") == [(held[0], "live")]
    assert example.files_of(held[0]) == expected_files()


def test_a_failing_transcode_undoes_the_thumbnails_made_beside_it(
    migrated: SagaCli, example: Example
) -> None:
    code, out = example.run(migrated, {**PAYLOAD, "resolutions": ["8k"]})

    assert code == 3, out
    eid = out["id"]
    assert_nothing_left(example, eid)
    assert not (example.files / eid).exists()
    events = migrated("show", eid, "--json").json()["events"]
    group = {"transcode", "thumbnails"}

    def seqs(kind: str) -> dict[str, int]:
        return {e["step"]: e["seq"] for e in events if e["type"] == kind and e["step"] in group}

    started = seqs("step_started")
    outcomes = {**seqs("step_succeeded"), **seqs("step_failed")}
    assert started.keys() == group and outcomes.keys() == group
    # both were under way before either answered: they ran as a group
    assert max(started.values()) < min(outcomes.values())
    assert "thumbnails" in seqs("step_succeeded") and "transcode" in seqs("step_failed")
    assert seqs("compensation_succeeded").keys() == {"thumbnails"}
    assert example.effects(eid)[f"{eid}:thumbnails:compensate"] == 1


def test_both_group_members_refusing_compensates_the_upload(
    migrated: SagaCli, example: Example
) -> None:
    result = example.cli(
        migrated,
        "run",
        REFERENCE,
        "--payload",
        json.dumps(PAYLOAD),
        "--json",
        "--fail",
        "transcode",
        "--fail",
        "thumbnails",
    )

    assert result.code == 3, result
    eid = result.json()["id"]
    assert_nothing_left(example, eid)
    assert example.effects(eid) == {f"{eid}:upload": 1, f"{eid}:upload:compensate": 1}


def test_the_group_compensations_run_together(migrated: SagaCli, example: Example) -> None:
    code, out = example.run(migrated, PAYLOAD, "--fail", "metadata")

    assert code == 3, out
    events = migrated("show", out["id"], "--json").json()["events"]
    group = {"transcode", "thumbnails"}
    started = [e["step"] for e in events if e["type"] == "compensation_started"]
    started_group = {
        e["step"]: e["seq"]
        for e in events
        if e["type"] == "compensation_started" and e["step"] in group
    }
    done_group = {
        e["step"]: e["seq"]
        for e in events
        if e["type"] == "compensation_succeeded" and e["step"] in group
    }
    assert started_group.keys() == done_group.keys() == group
    assert max(started_group.values()) < min(done_group.values())
    upload_started = [
        e["seq"] for e in events if e["type"] == "compensation_started" and e["step"] == "upload"
    ]
    assert upload_started and upload_started[0] > max(done_group.values())
    # metadata never ran (it declined), so it has nothing to undo
    assert sorted(started) == ["thumbnails", "transcode", "upload"]


def test_a_flaky_go_live_is_retried_past_the_pivot(migrated: SagaCli, example: Example) -> None:
    code, out = example.run(migrated, PAYLOAD, "--flaky", "go_live:2")

    assert code == 0, out
    assert example.rows("SELECT status FROM video_metadata") == [("live",)]
    assert example.effects(out["id"])[f"{out['id']}:go_live"] == 1


def test_a_late_upload_after_its_compensation_is_refused(
    migrated: SagaCli, example: Example
) -> None:
    """A compensation that runs first leaves a tombstone; the late action writes nothing."""
    first = example.cli(
        migrated,
        "run",
        REFERENCE,
        "--payload",
        '{"slug": "late", "title": "t"}',
        "--crash-at",
        "upload:before",
    )
    assert first.code == -signal.SIGKILL, first
    with closing(sqlite3.connect(migrated.db)) as log:
        (eid,) = log.execute("SELECT id FROM saga_execution").fetchone()
    undone = example.cli(migrated, "compensate", eid, "--json")
    assert undone.code == 3, undone
    assert example.rows("SELECT state FROM video_request WHERE key=?", (f"{eid}:upload",)) == [
        ("canceled",)
    ]
    # the late action, as the upload service would receive it
    definition = load_one(REFERENCE)
    upload = definition.steps[definition.index["upload"]]
    assert definition.payload is not None
    payload = definition.payload.model_validate({"slug": "late", "title": "t"})
    context = StepContext(eid, "upload", f"{eid}:upload", f"{eid}:upload", 2, payload, {})
    with pytest.MonkeyPatch.context() as patch:
        for name, value in example.env.items():
            patch.setenv(name, value)
        with pytest.raises(Exception, match="compensated before it arrived"):
            upload.action(context)
    assert example.files_of(eid) == set()
    assert example.effects(eid) == {f"{eid}:upload:compensate": 1}


# -- every crash point -------------------------------------------------------------------


def disk_effects(example: Example, execution_id: str) -> dict[str, int]:
    """The journal's counts, plus a problem key for any file that disagrees with it.

    A media step's files must be on disk exactly while its action took
    effect and its compensation did not; the kit reports any other key as an
    effect that names no step.
    """
    counts = example.effects(execution_id)
    on_disk = example.files_of(execution_id)
    for step, folder in zip(MEDIA, ("source", "renditions", "thumbnails"), strict=True):
        done = counts.get(f"{execution_id}:{step}", 0)
        undone = counts.get(f"{execution_id}:{step}:compensate", 0)
        present = {f for f in on_disk if f.startswith(f"{folder}/")}
        if done and not undone and len(present) != (1 if step == "upload" else 2):
            counts[f"disk-missing-{step}"] = 1
        if (undone or not done) and present:
            counts[f"disk-stray-{step}"] = len(present)
    return counts


@pytest.mark.slow
def test_every_crash_point_then_resume_ends_consistent(tmp_path: Path) -> None:
    definition = load_one(REFERENCE)
    plan = scenario_points(definition, failing_step(definition))
    assert failing_step(definition) == "publish_to_cdn"
    # before/after each of the 6 steps, then each of the 4 compensations
    assert len(plan) == 6 * 2 + 4 * 2
    scenarios: list[Scenario] = []
    examples: list[Example] = []
    for number, (point, _fail) in enumerate(plan):
        # One example state per point: a completed scenario keeps its slug
        # live, which would (rightly) refuse the next scenario's metadata.
        example = Example(tmp_path / f"point-{number:02d}")
        report = check_crash_points(
            REFERENCE,
            payload=PAYLOAD,
            effects=functools.partial(disk_effects, example),
            workdir=tmp_path / "logs" / f"point-{number:02d}",
            env=example.env,
            points=[str(point)],
        )
        assert report.ok, report.summary()
        scenarios += report.scenarios
        examples += [example] * len(report.scenarios)
    assert len(scenarios) == len(plan)
    for scenario, example in zip(scenarios, examples, strict=True):
        assert scenario.execution_id is not None
        eid = scenario.execution_id
        if scenario.point.startswith("compensate-"):
            assert scenario.status == "compensated", scenario
            assert_nothing_left(example, eid)
            assert not (example.files / eid).exists()
        else:
            assert scenario.status == "completed", scenario
            assert example.files_of(eid) == expected_files()
            assert example.rows("SELECT status FROM video_metadata") == [("live",)]
            assert len(example.rows("SELECT * FROM video_cdn")) == 1
        # nothing half-written survives a kill: no temporaries anywhere
        assert not list(example.files.rglob("*.tmp-*"))
