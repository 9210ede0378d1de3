"""Recurring jobs on a real pool (XFS reflink loopback), over an injected clock."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from amber.backup.repository import Repository, init_repository
from amber.blobstore.filestore import FileStore
from amber.domain.models import SourceKind, VolumeMode
from amber.domain.units import MiB
from amber.jobs.local import LocalExecutor
from amber.jobs.records import Records, RunOutcome
from amber.jobs.runner import Scheduler
from amber.jobs.spec import JobSpec, parse_job
from amber.pool import Pool, VolumeRequest
from tests.backup.helpers import FAST_SCRYPT, PASSWORD
from tests.jobs.fakes import FakeClock

START = datetime(2026, 6, 1, 0, 0, 30, tzinfo=UTC)


def spec(**fields: Any) -> JobSpec:
    raw: dict[str, Any] = {"name": "snap", "task": "snapshot", "cron": "0 * * * *", "retain": 2}
    raw.update(fields)
    return parse_job(raw)


def block_volume(pool: Pool, name: str) -> None:
    pool.volumes.create(VolumeRequest(name, 8 * MiB, VolumeMode.BLOCK, None, SourceKind.NONE, None))


def write(pool: Pool, name: str, offset: int = 0) -> None:
    """Write to a volume's image as a user of its block device would."""
    fd = os.open(pool.volumes.get(name).image, os.O_WRONLY)
    try:
        os.pwrite(fd, os.urandom(64 * 1024), offset)
        os.fsync(fd)
    finally:
        os.close(fd)


@pytest.fixture
def records(pool_dir: Path) -> Iterator[Records]:
    found = Records.in_pool(pool_dir)
    yield found
    found.close()


def hours(clock: FakeClock, scheduler: Scheduler, count: int, before: Any = None) -> None:
    """Run the scheduler through `count` hourly slots (calling `before()` ahead of each)."""
    scheduler.start()
    for _ in range(count):
        wake = scheduler.next_wake()
        assert wake is not None
        clock.set(wake)
        if before is not None:
            before()
        scheduler.run_due()


def test_snapshot_job_selects_retains_and_skips(pool: Pool, records: Records) -> None:
    for name in ("plain", "other", "web", "idle"):
        block_volume(pool, name)
    pool.volumes.label("other", {"group": "other"})
    pool.volumes.label("web", {"app": "web", "group": "other"})
    pool.volumes.label("idle", {"group": "idle"})
    pool.snapshots.create("plain", "by-hand")
    clock = FakeClock(START)
    job = spec(groups=["default", "idle"], selector={"matchLabels": {"app": "web"}})
    scheduler = Scheduler(clock, LocalExecutor(pool, records), records, jobs=[job])

    def before() -> None:
        write(pool, "plain")
        write(pool, "web", 1 * MiB)

    hours(clock, scheduler, 4, before)
    names = {s.name for s in pool.snapshots.list()}
    plain = sorted(n for n in names if n.startswith("snap-plain-"))
    web = sorted(n for n in names if n.startswith("snap-web-"))
    assert plain == [f"snap-plain-20260601-0{h}0000" for h in (3, 4)]  # the newest two
    assert web == [f"snap-web-20260601-0{h}0000" for h in (3, 4)]
    assert "by-hand" in names  # never the job's to delete
    assert not any(n.startswith("snap-other-") for n in names)  # not selected
    # `idle` was snapshotted at the first slot, then never written: skipped ever after.
    assert [n for n in names if n.startswith("snap-idle-")] == ["snap-idle-20260601-010000"]
    idle = [r for r in records.history("snap", limit=100) if r.subject == "idle"]
    assert [r.outcome for r in idle] == [RunOutcome.SKIPPED] * 3 + [RunOutcome.OK]
    assert idle[0].reason == "unchanged since the job's last run"
    latest_plain = next(r for r in records.history("snap") if r.subject == "plain")
    assert latest_plain.outcome is RunOutcome.OK
    assert latest_plain.created == ("snap-plain-20260601-040000",)
    assert latest_plain.deleted == ("snap-plain-20260601-020000",)


def test_a_snapshot_deleted_by_hand_drops_out_and_the_volume_runs_again(
    pool: Pool, records: Records
) -> None:
    block_volume(pool, "v")
    clock = FakeClock(START)
    executor = LocalExecutor(pool, records)
    job = spec(volumes=["v"])
    first = Scheduler(clock, executor, records).run_job(job, START)
    assert first[0].outcome is RunOutcome.OK
    assert executor.changed_since_last(job, "v") is False
    write(pool, "v", 3 * MiB)
    assert executor.changed_since_last(job, "v") is True
    pool.snapshots.delete(first[0].created[0])
    assert executor.changed_since_last(job, "v") is None  # nothing to compare with: run


def make_repo(tmp_path: Path) -> Repository:
    root = tmp_path / "repo"
    root.mkdir()
    return init_repository(FileStore(root), PASSWORD, scrypt=FAST_SCRYPT)


def test_backup_job_keeps_one_local_snapshot_and_three_backups(
    pool: Pool, records: Records, tmp_path: Path
) -> None:
    block_volume(pool, "db")
    repo = make_repo(tmp_path)
    executor = LocalExecutor(pool, records, lambda name, create=False: repo)
    job = spec(
        name="nightly",
        task="backup",
        target="t",
        retain=3,
        retainLocal=1,
        volumes=["db"],
        labels={"tier": "gold"},
    )
    clock = FakeClock(START)
    scheduler = Scheduler(clock, executor, records, jobs=[job])
    hours(clock, scheduler, 5, lambda: write(pool, "db", 2 * MiB))
    runs = records.history("nightly", limit=10)
    assert [r.outcome for r in runs] == [RunOutcome.OK] * 5
    local = [s.name for s in pool.snapshots.list("db")]
    assert local == ["nightly-db-20260601-050000"]
    backups = {m.backup_id: m for m in repo.load_manifests()}
    assert len(backups) == 3
    assert set(runs[0].created) - {local[0]} <= set(backups)
    assert {m.source_snapshot for m in backups.values()} == {
        f"nightly-db-20260601-0{h}0000" for h in (3, 4, 5)
    }
    assert all(m.labels.get("tier") == "gold" for m in backups.values())
    assert runs[0].bytes > 0
    # Unchanged since the last backup: skipped, even once the local snapshot is gone (the
    # target's incremental base tells).
    for snap in pool.snapshots.list("db"):
        pool.snapshots.delete(snap.name)
    assert executor.changed_since_last(job, "db") is False
    skipped = scheduler.run_job(job, START + timedelta(hours=6))
    assert [r.outcome for r in skipped] == [RunOutcome.SKIPPED]


def test_filesystem_volume_unchanged_then_written_through_its_mount(
    pool: Pool, records: Records, work_dir: Path
) -> None:
    pool.volumes.create(
        VolumeRequest("fs", 64 * MiB, VolumeMode.FILESYSTEM, "ext4", SourceKind.NONE, None)
    )
    executor = LocalExecutor(pool, records)
    scheduler = Scheduler(FakeClock(START), executor, records)
    job = spec(volumes=["fs"])
    outcomes = [scheduler.run_job(job, START)[0].outcome]
    # A fresh ext4 image has preallocated extents its snapshot does not share: still unchanged.
    outcomes.append(scheduler.run_job(job, START + timedelta(hours=1))[0].outcome)
    mount = work_dir / "fs"
    pool.attachments.mount("volume", "fs", mount, create_target=True)
    outcomes.append(scheduler.run_job(job, START + timedelta(hours=2))[0].outcome)
    (mount / "data").write_bytes(os.urandom(256 * 1024))  # in the page cache, not yet on disk
    outcomes.append(scheduler.run_job(job, START + timedelta(hours=3))[0].outcome)
    assert outcomes == [RunOutcome.OK, RunOutcome.SKIPPED, RunOutcome.OK, RunOutcome.OK]


def test_concurrent_snapshots_and_a_snapshot_in_use_is_kept(
    pool: Pool, records: Records, work_dir: Path
) -> None:
    for i in range(4):
        block_volume(pool, f"v{i}")
    executor = LocalExecutor(pool, records)
    scheduler = Scheduler(FakeClock(START), executor, records, node_limit=3)
    job = spec(volumes=[f"v{i}" for i in range(4)], retain=1, concurrency=3, skipUnchanged=False)
    first = scheduler.run_job(job, START)
    assert [r.outcome for r in first] == [RunOutcome.OK] * 4
    in_use = first[0].created[0]
    pool.attachments.expose("snapshot", in_use, None, read_only=True)
    second = scheduler.run_job(job, START + timedelta(hours=1))
    assert [r.outcome for r in second] == [RunOutcome.OK] * 4
    assert second[0].deleted == ()
    assert second[0].reason.startswith(f"kept {in_use}: ")
    assert [r.deleted for r in second[1:]] == [r.created for r in first[1:]]
    pool.attachments.release("snapshot", in_use)
    third = scheduler.run_job(job, START + timedelta(hours=2))
    assert set(third[0].deleted) == {in_use, second[0].created[0]}
