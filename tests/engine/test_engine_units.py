"""Pure parts of the engine: extent signatures, chunk grids, request coalescing, sparse runs,
handles, the lock waiter and the targets file."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from amber.backup.chunker import ChunkGrid, is_zero
from amber.backup.extents import changed_chunks
from amber.backup.index import IndexEntry
from amber.backup.keeper import acquire, holder
from amber.backup.locks import LockKind
from amber.backup.repository import init_repository
from amber.backup.restorer import DamagedRange, _coalesce, _nonzero_runs, describe_damage
from amber.backup.targets import (
    Target,
    TargetConfig,
    backup_handle,
    credentials,
    parse_backup_ref,
    validate_target_name,
)
from amber.domain.errors import AlreadyExists, Busy, Corrupt, InvalidArgument, NotFound
from amber.system.ioctl import FIEMAP_EXTENT_DELALLOC, FIEMAP_EXTENT_SHARED, Extent
from tests.backup.helpers import FAST_SCRYPT, PASSWORD
from tests.backup.memstore import FakeClock, MemStore

C = 1024
GRID = ChunkGrid(8 * C, C)


def test_same_physical_blocks_are_unchanged_and_moved_ones_are_not() -> None:
    base = [Extent(0, 10_000, 4 * C, 0), Extent(6 * C, 90_000, 2 * C, 0)]
    new = [
        Extent(0, 10_000, C + 512, FIEMAP_EXTENT_SHARED),  # chunk 1 half rewritten
        Extent(C + 512, 50_000, 512, 0),
        Extent(2 * C, 10_000 + 2 * C, 2 * C, FIEMAP_EXTENT_SHARED),
        Extent(6 * C, 90_000, 2 * C, FIEMAP_EXTENT_SHARED),
    ]
    same = changed_chunks(base, new, GRID, GRID.count).same
    # chunk 0 unchanged, 1 changed, 2-3 unchanged, 4-5 holes in both, 6-7 unchanged
    assert list(same) == [1, 0, 1, 1, 1, 1, 1, 1]


def test_extents_split_differently_still_match() -> None:
    base = [Extent(0, 10_000, 4 * C, 0)]
    new = [Extent(0, 10_000, 2 * C + 100, 0), Extent(2 * C + 100, 10_000 + 2 * C + 100, 1948, 0)]
    assert list(changed_chunks(base, new, GRID, GRID.count).same)[:4] == [1, 1, 1, 1]


def test_untrustworthy_new_data_and_flag_changes_are_read() -> None:
    base = [Extent(0, 10_000, 2 * C, 0x800), Extent(2 * C, 20_000, C, 0)]  # unwritten first
    new = [Extent(0, 10_000, 2 * C, 0), Extent(2 * C, 20_000, C, FIEMAP_EXTENT_DELALLOC)]
    same = changed_chunks(base, new, GRID, GRID.count).same
    assert list(same)[:3] == [0, 0, 0]


def test_only_comparable_chunks_are_compared() -> None:
    extents = [Extent(0, 10_000, 8 * C, 0)]
    assert list(changed_chunks(extents, extents, GRID, 5).same) == [1] * 5 + [0] * 3


def test_grid_and_zero_detection() -> None:
    grid = ChunkGrid(10 * C + 7, C)
    assert grid.count == 11
    assert grid.range(10) == (10 * C, 10 * C + 7)
    assert is_zero(bytes(1 << 20))
    assert is_zero(bytes(77))
    assert not is_zero(bytes(1 << 20)[:-1] + b"\x01")
    assert not is_zero(b"\x00" * (3 << 20) + b"\x02")


def _entry(offset: int, length: int) -> tuple[bytes, IndexEntry]:
    return os.urandom(32), IndexEntry(b"p" * 32, offset, length, length, 0)


def test_adjacent_blobs_are_fetched_together_up_to_the_limit() -> None:
    chunks = [_entry(0, 100), _entry(100, 100), _entry(200, 100), _entry(10**6, 50)]
    requests = list(_coalesce(b"p" * 32, chunks, limit=250))
    assert [(r.offset, r.length, len(r.chunks)) for r in requests] == [
        (0, 200, 2),
        (200, 100, 1),
        (10**6, 50, 1),
    ]


def test_nonzero_runs_skip_zero_blocks() -> None:
    block = 64 * 1024
    data = b"a" * block + bytes(2 * block) + b"b" * 10 + bytes(block - 10) + b"c" * 5
    runs = list(_nonzero_runs(data))
    assert [(offset, len(piece)) for offset, piece in runs] == [(0, block), (3 * block, block + 5)]
    assert b"".join(piece for _, piece in runs).count(b"c") == 5
    leading_zero = bytes(1) + b"d" * (block - 1) + bytes(block)  # a data block may start with 0
    assert [(o, bytes(p)) for o, p in _nonzero_runs(leading_zero)] == [(0, leading_zero[:block])]
    # A restore hands in views of its decryption buffer.
    as_view = [(o, bytes(p)) for o, p in _nonzero_runs(memoryview(bytearray(data)))]
    assert as_view == [(o, bytes(p)) for o, p in runs]
    short_tail = memoryview(b"e" * block + bytes(100))  # a last block shorter than 64 KiB
    assert [(o, len(p)) for o, p in _nonzero_runs(short_tail)] == [(0, block)]


def test_damage_is_described_with_byte_ranges() -> None:
    ranges = [DamagedRange(i * 10, i * 10 + 10, "gone") for i in range(7)]
    text = describe_damage(ranges, limit=2)
    assert text.startswith("7 damaged range(s), 70 bytes: bytes 0-10 (gone); bytes 10-20")
    assert text.endswith("and 5 more")


def test_handles_round_trip_and_are_short() -> None:
    handle = backup_handle("nas-1", "a" * 32)
    assert handle == f"amber:v1:backup:nas-1:{'a' * 32}"
    assert len(backup_handle("x" * 63, "a" * 32)) <= 128
    assert parse_backup_ref(handle, None) == ("nas-1", "a" * 32)
    assert parse_backup_ref("b" * 32, "t") == ("t", "b" * 32)
    with pytest.raises(InvalidArgument, match="names target"):
        parse_backup_ref(handle, "other")
    for bad in ("", "UPPER", "-x", "x-", "a:b", "a" * 64):
        with pytest.raises(InvalidArgument):
            validate_target_name(bad)


class _BusyRepo:
    """A repository whose lock table (`locks`) answers Busy `busy_times` times."""

    def __init__(self, busy_times: int) -> None:
        self.busy_times = busy_times
        self.calls = 0
        self.locks = self

    def acquire(
        self, holder: str, kind: object, *, reader: bool = False, purpose: object = None
    ) -> str:
        self.calls += 1
        if self.calls <= self.busy_times:
            raise Busy("exclusive lock held by prune")
        return "lock"

    def active_locks(self) -> list[object]:
        return []


def test_acquire_waits_for_a_busy_repository_then_gives_up() -> None:
    slept: list[float] = []
    now = [0.0]

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    heard: list[str] = []
    repo = _BusyRepo(busy_times=3)
    got = acquire(repo, "me", wait=60, on_wait=heard.append, sleep=sleep, clock=lambda: now[0])  # type: ignore[arg-type]
    assert got == "lock"
    assert slept == [0.5, 1.0, 2.0]
    assert heard == ["exclusive lock held by prune"] * 3
    with pytest.raises(Busy):
        acquire(_BusyRepo(busy_times=100), "me", wait=5, sleep=sleep, clock=lambda: now[0])  # type: ignore[arg-type]


def test_targets_file_is_private_and_resolves_relative_secret_paths(tmp_path: Path) -> None:
    config = TargetConfig(tmp_path / "etc" / "targets.json")
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "nas.password").write_text("pw-123\n")
    config.add(Target("nas", "file:///srv/backup", password_file="nas.password"))
    assert stat.S_IMODE((tmp_path / "etc" / "targets.json").stat().st_mode) == 0o600
    target = config.get("nas")
    assert target.password_file == str(tmp_path / "etc" / "nas.password")
    creds = credentials(target)
    assert creds is not None
    assert "pw-123" not in repr(creds)
    with pytest.raises(AlreadyExists):
        config.add(Target("nas", "file:///srv/other", password_file="x"))
    with pytest.raises(NotFound, match="known: nas"):
        config.get("missing")
    config.remove("nas")
    assert config.load() == {}


def test_target_definitions_are_validated(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="not both"):
        Target("t", "file:///x", password_file="p", key_file="k").validate()
    asked = Target("t", "file:///x")  # no file: the password is asked for at each use
    asked.validate()
    assert asked.asks_password
    assert asked.public()["credential"] == "asked"
    with pytest.raises(InvalidArgument, match="AMBER_PASSWORD"):
        credentials(asked)
    assert credentials(asked, "typed") is not None
    with pytest.raises(InvalidArgument, match="no password"):
        Target("t", "file:///x", encryption="none", password_file="p").validate()
    with pytest.raises(InvalidArgument, match="cannot be stored"):
        Target("t", "s3://b", options={"secret-key": "x"}, password_file="p").validate()
    with pytest.raises(InvalidArgument, match="needs --access-key"):
        Target("t", "s3://b", secret_key_file="/s", password_file="p").validate()
    bad = tmp_path / "targets.json"
    bad.write_text(json.dumps({"version": 1, "targets": {"t": {"url": 3}}}))
    with pytest.raises(Corrupt):
        TargetConfig(bad).load()


def test_locks_of_dead_local_processes_are_removed_not_waited_for() -> None:
    clock = FakeClock()
    repo = init_repository(MemStore(clock), PASSWORD, scrypt=FAST_SCRYPT, clock=clock)
    dead = subprocess.Popen(["true"])
    dead.wait()
    repo.lock(f"other-host pid {os.getpid()}: backup w (s2)")  # another host's: kept
    alive = repo.lock(holder("backup x (s3)"))  # this process: alive, kept
    dead_holder = f"{os.uname().nodename} pid {dead.pid}: prune"
    repo.locks.write_new(dead_holder, LockKind.EXCLUSIVE, 1800)  # a killed prune's lock
    got = acquire(repo, holder("check"), wait=0)
    holders = sorted(info.holder for info in repo.active_locks())
    assert len(holders) == 3
    assert dead_holder not in holders
    got.release()
    alive.release()
