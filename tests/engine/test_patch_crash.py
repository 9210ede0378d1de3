"""kill -9 during a patched incremental (the existing failpoints): the repository stays valid
and the next run completes the backup, which restores byte for byte."""

from __future__ import annotations

import signal

import pytest

from tests.engine.helpers import CHUNK, Cli, random_bytes, write_at
from tests.engine.test_crash import _assert_healthy, _restores

BLOCK = 4096


@pytest.mark.parametrize(
    "failpoint", ["backup.planned", "backup.pack-staged", "backup.uploaded", "backup.committed"]
)
def test_a_killed_patched_incremental_is_completed_by_the_next_run(
    cli: Cli, file_target: str, failpoint: str
) -> None:
    image = cli.volume("v", "32Mi")
    write_at(image, 0, random_bytes(24 * CHUNK, 1))
    cli.snapshot("v", "s1")
    cli.backup("s1", file_target)
    for n in range(12):  # a 4 KiB write in each of 12 chunks: 12 patches
        write_at(image, n * 2 * CHUNK + n * BLOCK, random_bytes(BLOCK, 100 + n))
    snapshot = cli.snapshot("v", "s2")
    crashed = cli.run("backup", "create", "s2", "--target", file_target, crash_at=failpoint)
    assert crashed.returncode == -signal.SIGKILL
    _assert_healthy(cli, file_target)
    again = cli.backup("s2", file_target)
    assert again["mode"] == "extent-map"
    assert again["chunks_patched"] == 12
    assert again["bytes_read"] == 12 * BLOCK
    _restores(cli, again["handle"], snapshot, "r2")
    _assert_healthy(cli, file_target)
