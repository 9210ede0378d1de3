"""Backups of real snapshots on a real pool, to a directory and to a real S3 server process,
through the real `amber` command: round trips, extent-map incrementals, fallbacks, management."""

from __future__ import annotations

from pathlib import Path

from amber.backup.targets import TargetConfig, open_target_repository
from amber.domain.units import MiB
from tests.engine.helpers import CHUNK, Cli, allocated, punch, random_bytes, write_at


def _fill(image: Path) -> None:
    """Data in chunks 0-9 (one of them written with zeros), a hole after, data at 40-43."""
    for i in range(10):
        write_at(image, i * CHUNK, random_bytes(CHUNK, i) if i != 5 else bytes(CHUNK))
    write_at(image, 40 * CHUNK + 4096, b"log line\n" * 300_000)  # compressible, 3 chunks


def _restore_and_compare(cli: Cli, handle: str, snapshot_image: Path, name: str) -> Path:
    report = cli.json("backup", "restore", handle, name)
    assert report["complete"] is True
    restored = Path(cli.json("volume", "show", name)["volume"]["image"])
    assert restored.read_bytes() == snapshot_image.read_bytes()
    assert allocated(restored) <= allocated(snapshot_image)  # sparse: holes and zeros not written
    return restored


def test_backup_and_restore_are_byte_identical_and_incrementals_read_only_changes(
    cli: Cli, target: str
) -> None:
    image = cli.volume("v", "64Mi")
    _fill(image)
    snap1 = cli.snapshot("v", "s1")
    first = cli.backup("s1", target, "--label", "app=db", "--tag", "nightly")
    assert first["mode"] == "full-read"
    assert first["chunks_read"] == 13  # 10 + the 3 chunks the log spans
    assert first["chunks_zero"] == 1
    assert first["chunks_new"] == 12
    assert first["chunks_hole"] == 64 - 13
    assert first["handle"] == f"amber:v1:backup:{target}:{first['backup_id']}"

    write_at(image, 2 * CHUNK + 100, b"changed")  # chunk 2
    write_at(image, 60 * CHUNK, random_bytes(CHUNK, 99))  # chunk 60 (was a hole)
    snap2 = cli.snapshot("v", "s2")
    second = cli.backup("s2", target)
    assert second["mode"] == "extent-map"
    assert second["parent_id"] == first["backup_id"]
    assert second["chunks_read"] == 1  # chunk 60, written whole
    assert second["chunks_patched"] == 1  # chunk 2: only the block "changed" went into is read
    assert second["patches"] == 1
    assert MiB < second["bytes_read"] <= MiB + 64 * 1024
    assert second["chunks_unchanged"] == 12
    assert second["chunks_new"] == 2  # chunk 60 and the patch

    _restore_and_compare(cli, second["handle"], snap2, "r2")
    _restore_and_compare(cli, first["handle"], snap1, "r1")

    listed = cli.json("backup", "list", "--target", target, "--volume", "v")
    assert [b["backup_id"] for b in listed] == [first["backup_id"], second["backup_id"]]
    assert listed[0]["labels"] == {"app": "db"}
    assert listed[0]["tags"] == ["nightly"]
    shown = cli.json("backup", "show", first["backup_id"], "--target", target)
    assert shown["chunks"] == {"total": 64, "data": 12, "distinct": 12, "zero": 1, "hole": 51}
    assert shown["system_labels"]["amber/mode"] == "block"


def test_extent_map_backup_has_the_same_chunk_map_as_a_full_read(
    cli: Cli, file_target: str
) -> None:
    image = cli.volume("v", "64Mi")
    _fill(image)
    cli.snapshot("v", "s1")
    cli.backup("s1", file_target)
    write_at(image, 7 * CHUNK + 5, b"x" * 3000)
    punch(image, 8 * CHUNK, CHUNK)  # a discard turns a data chunk into a hole
    snap2 = cli.snapshot("v", "s2")
    incremental = cli.backup("s2", file_target)
    full = cli.backup("s2", file_target, "--full")
    assert incremental["mode"] == "extent-map"
    assert incremental["chunks_read"] == 0  # chunk 8 is now a hole, never read
    assert incremental["chunks_patched"] == 1  # chunk 7: only the changed block is read
    assert 3000 <= incremental["bytes_read"] <= 64 * 1024
    assert full["mode"] == "full-read"
    assert full["chunks_new"] == 1  # chunk 7 as a whole; the rest deduplicated
    repo = open_target_repository(TargetConfig(cli.config).get(file_target))
    a = repo.load_manifest(incremental["backup_id"])
    b = repo.load_manifest(full["backup_id"])
    assert [p.offset // CHUNK for p in a.patches] == [7]
    assert not b.patches
    assert [x for i, x in enumerate(a.chunk_map) if i != 7] == [
        x for i, x in enumerate(b.chunk_map) if i != 7
    ]
    _restore_and_compare(cli, incremental["handle"], snap2, "r-incremental")


def test_deleting_the_users_snapshot_keeps_change_tracking(cli: Cli, file_target: str) -> None:
    image = cli.volume("v", "64Mi")
    _fill(image)
    cli.snapshot("v", "s1")
    cli.backup("s1", file_target)
    cli.ok("snapshot", "delete", "s1")  # the engine keeps its own reflink base
    write_at(image, 3 * CHUNK, b"new")
    cli.snapshot("v", "s2")
    second = cli.backup("s2", file_target)
    assert second["mode"] == "extent-map"
    assert second["chunks_read"] + second["chunks_patched"] == 1


def test_fallback_when_the_base_is_gone_reads_everything_but_uploads_only_changes(
    cli: Cli, file_target: str
) -> None:
    image = cli.volume("v", "64Mi")
    _fill(image)
    cli.snapshot("v", "s1")
    first = cli.backup("s1", file_target)
    bases = cli.json("backup", "bases")
    assert [(b["volume"], b["target"], b["backup_id"]) for b in bases] == [
        ("v", file_target, first["backup_id"])
    ]
    cli.ok("backup", "bases", "--forget", "v")  # the base image is gone
    assert not Path(bases[0]["image"]).exists()
    write_at(image, 1 * CHUNK, b"changed")
    cli.snapshot("v", "s2")
    second = cli.backup("s2", file_target)
    assert second["mode"] == "full-read"
    assert "no earlier backup" in second["fallback_reason"]
    assert second["chunks_read"] == first["chunks_read"]
    assert second["chunks_new"] == 1

    # The base's backup is deleted by another machine (this pool's `backup delete` would drop
    # the base with it): the base image is still here, its backup is not.
    open_target_repository(TargetConfig(cli.config).get(file_target)).delete_backup(
        second["backup_id"]
    )
    write_at(image, 2 * CHUNK, b"changed again")
    snap3 = cli.snapshot("v", "s3")
    third = cli.backup("s3", file_target)
    assert third["mode"] == "full-read"
    assert "base backup cannot be used" in third["fallback_reason"]
    assert third["chunks_new"] == 1  # chunk 1 is still stored (prune has not run)
    _restore_and_compare(cli, third["handle"], snap3, "r3")


def test_filesystem_volume_restores_as_a_mountable_filesystem(
    cli: Cli, file_target: str, work_dir: Path
) -> None:
    cli.ok("volume", "create", "fsv", "--size", "64Mi")
    mnt = work_dir / "fsv"
    cli.ok("volume", "mount", "fsv", str(mnt))
    (mnt / "hello.txt").write_text("hello from a backup\n")
    cli.snapshot("fsv", "fs1")
    cli.ok("volume", "unmount", "fsv")
    backup = cli.backup("fs1", file_target)
    restored = cli.json("backup", "restore", backup["handle"], "fsv2", "--size", "128Mi")
    assert restored["size"] == 128 * MiB
    volume = cli.json("volume", "show", "fsv2")["volume"]
    assert volume["fs_type"] == "ext4"
    assert volume["source_kind"] == "backup"
    cli.ok("volume", "mount", "fsv2", str(work_dir / "fsv2"))
    assert (work_dir / "fsv2" / "hello.txt").read_text() == "hello from a backup\n"
    cli.ok("volume", "unmount", "fsv2")
