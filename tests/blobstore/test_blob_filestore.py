"""FileStore behaviour beyond the shared contract: atomic puts, temp files, hung mounts, errno."""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from amber.blobstore.filestore import TEMP_MARKER, FileStore, check_key, errno_error
from amber.domain.errors import (
    InvalidArgument,
    NotFound,
    OutOfSpace,
    PermissionDenied,
    Unavailable,
)


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir())


def failing_writev_after(limit: int, error: int) -> object:
    """An os.writev that writes at most `limit` bytes in all, then fails with `error`; each
    call writes at most 700 bytes (a short write, which the store must resume)."""
    real_write = os.write
    written = 0

    def writev(fd: int, buffers: list[memoryview]) -> int:
        nonlocal written
        if written >= limit:
            raise OSError(error, os.strerror(error))
        data = b"".join(bytes(b) for b in buffers)[: min(700, limit - written)]
        count = real_write(fd, data)
        written += count
        return count

    return writev


def test_short_writes_are_resumed(file_store: FileStore, monkeypatch: pytest.MonkeyPatch) -> None:
    parts = [b"a" * 1000, b"", bytearray(b"b" * 1500), b"c" * 3]
    monkeypatch.setattr(os, "writev", failing_writev_after(10**9, errno.EIO))  # 700 a call
    file_store.stage("data/ab/short", parts)
    file_store.put("short", bytearray(b"d" * 2000))
    file_store.flush()
    monkeypatch.undo()
    assert file_store.get("data/ab/short") == b"".join(parts)
    assert file_store.get("short") == b"d" * 2000


def test_interrupted_put_leaves_no_visible_object(
    file_store: FileStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "writev", failing_writev_after(1000, errno.ENOSPC))
    with pytest.raises(OutOfSpace, match="data/ab/torn"):
        file_store.put("data/ab/torn", b"z" * 5000)
    monkeypatch.undo()
    assert not file_store.exists("data/ab/torn")
    assert list(file_store.list()) == []
    assert files_under(file_store.root) == []  # the temp file was removed too


def test_interrupted_overwrite_keeps_the_old_object(
    file_store: FileStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    file_store.put("config", b"old and whole")
    monkeypatch.setattr(os, "writev", failing_writev_after(3, errno.EIO))
    with pytest.raises(Unavailable):
        file_store.put("config", b"new but torn")
    monkeypatch.undo()
    assert file_store.get("config") == b"old and whole"
    assert files_under(file_store.root) == ["config"]


def test_failed_fsync_fails_the_put(file_store: FileStore, monkeypatch: pytest.MonkeyPatch) -> None:
    def fsync(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(Unavailable, match="EIO"):
        file_store.put("k", b"data")
    monkeypatch.undo()
    assert not file_store.exists("k")
    assert files_under(file_store.root) == []


def test_a_staged_object_stays_invisible_until_the_flush(file_store: FileStore) -> None:
    file_store.stage("data/3f/3f9a", [b"payload"])
    assert not file_store.exists("data/3f/3f9a")
    assert list(file_store.list()) == []
    [temp] = files_under(file_store.root)
    assert temp.startswith(f"data/3f/{TEMP_MARKER}")  # a crash now leaves only a temp file
    file_store.flush()
    assert file_store.get("data/3f/3f9a") == b"payload"
    assert files_under(file_store.root) == ["data/3f/3f9a"]


def test_a_failed_flush_keeps_the_rest_staged_for_a_retry(
    file_store: FileStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("a", "b", "c"):
        file_store.stage(f"data/{name}", [name.encode() * 10])
    real_fsync, calls = os.fsync, []

    def fsync(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 2:
            raise OSError(errno.EIO, "Input/output error")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(Unavailable, match="EIO"):
        file_store.flush()
    assert [info.key for info in file_store.list("data/")] == ["data/a"]
    file_store.flush()
    assert sorted(info.key for info in file_store.list("data/")) == ["data/a", "data/b", "data/c"]
    assert file_store.get("data/c") == b"c" * 10
    assert all(TEMP_MARKER not in name for name in files_under(file_store.root))


def test_a_torn_staged_write_leaves_nothing(
    file_store: FileStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "writev", failing_writev_after(1000, errno.ENOSPC))
    with pytest.raises(OutOfSpace, match="data/ab/torn"):
        file_store.stage("data/ab/torn", [b"z" * 5000])
    monkeypatch.undo()
    file_store.flush()
    assert not file_store.exists("data/ab/torn")
    assert files_under(file_store.root) == []


def test_put_writes_the_final_name_only(file_store: FileStore) -> None:
    file_store.put("data/3f/3f9a", b"payload")
    assert (file_store.root / "data" / "3f" / "3f9a").read_bytes() == b"payload"
    assert files_under(file_store.root) == ["data/3f/3f9a"]


def test_list_ignores_temp_files_and_foreign_names(file_store: FileStore) -> None:
    file_store.put("data/real", b"r")
    (file_store.root / "data" / f"{TEMP_MARKER}0123abcd").write_bytes(b"half")
    (file_store.root / f"{TEMP_MARKER}feed").write_bytes(b"half")
    (file_store.root / "data" / "back\\slash").write_bytes(b"foreign")
    (file_store.root / "data" / "link").symlink_to(file_store.root / "data" / "real")
    assert [info.key for info in file_store.list()] == ["data/real"]
    assert [info.key for info in file_store.list("data/")] == ["data/real"]


def test_a_directory_is_not_an_object(file_store: FileStore) -> None:
    file_store.put("dir/child", b"c")
    assert not file_store.exists("dir")
    with pytest.raises(NotFound):
        file_store.get("dir")
    with pytest.raises(NotFound):
        file_store.get_range("dir", 0, 1)
    file_store.delete("dir")  # nothing to delete: the key names no object
    assert file_store.get("dir/child") == b"c"


@pytest.mark.parametrize(("first", "second"), [("a", "a/b"), ("x/y", "x")])
def test_a_key_cannot_be_both_file_and_directory(
    file_store: FileStore, first: str, second: str
) -> None:
    file_store.put(first, b"1")
    with pytest.raises(InvalidArgument, match="cannot hold both"):
        file_store.put(second, b"2")
    assert file_store.get(first) == b"1"
    assert TEMP_MARKER not in "".join(files_under(file_store.root))


def test_missing_root_is_unavailable_not_empty(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "not-mounted", timeout=5.0)
    with pytest.raises(Unavailable, match="not-mounted"):
        store.get("config")
    with pytest.raises(Unavailable):
        store.exists("config")
    with pytest.raises(Unavailable):
        list(store.list("data/"))
    with pytest.raises(Unavailable):
        store.put("data/x", b"x")
    with pytest.raises(Unavailable):
        store.delete("data/x")
    assert not (tmp_path / "not-mounted").exists()  # never created behind the user's back


def test_root_must_be_absolute() -> None:
    with pytest.raises(InvalidArgument, match="absolute"):
        FileStore(Path("relative/dir"))


def test_describe_is_a_file_url(file_store: FileStore) -> None:
    assert file_store.describe() == f"file://{file_store.root}"


@pytest.fixture
def fifo(tmp_path: Path) -> Iterator[Path]:
    """A key whose open() blocks like a hung NFS server; released at the end of the test."""
    root = tmp_path / "hung"
    root.mkdir()
    path = root / "hung"
    os.mkfifo(path)
    yield path
    for _ in range(4):  # wake every reader still blocked in open()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            break  # ENXIO: no reader is waiting any more
        os.close(fd)
        time.sleep(0.01)


def test_a_hung_call_times_out_and_names_the_path(fifo: Path) -> None:
    store = FileStore(fifo.parent, timeout=0.3)
    store.put("fine", b"ok")
    started = time.monotonic()
    with pytest.raises(Unavailable, match=str(fifo)) as caught:
        store.get("hung")
    assert time.monotonic() - started < 2.0
    assert "did not answer within 0.3 s" in str(caught.value)
    assert store.get("fine") == b"ok"  # a fresh worker serves the next call


def test_a_busy_pool_still_answers_in_time(fifo: Path) -> None:
    store = FileStore(fifo.parent, timeout=0.2, max_workers=2)
    store.put("fine", b"ok")
    with pytest.raises(Unavailable):
        store.get("hung")  # one worker is now stuck in open()
    assert store.get("fine") == b"ok"  # the other one still serves


def test_a_fully_stuck_pool_fails_at_once(fifo: Path) -> None:
    store = FileStore(fifo.parent, timeout=0.2, max_workers=1)
    with pytest.raises(Unavailable, match="did not answer"):
        store.get("hung")  # the only worker is now stuck in open()
    started = time.monotonic()
    with pytest.raises(Unavailable, match="workers are stuck"):
        store.exists("anything")
    assert time.monotonic() - started < 0.1  # not queued behind the stuck call
    fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # the server comes back
    os.close(fd)
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        try:
            assert not store.exists("anything")
            break
        except Unavailable:
            time.sleep(0.01)  # the worker is finishing its old call
    else:
        pytest.fail("the store did not recover after the hung call returned")


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (errno.ENOENT, NotFound),
        (errno.ENOSPC, OutOfSpace),
        (errno.EDQUOT, OutOfSpace),
        (errno.EACCES, PermissionDenied),
        (errno.EPERM, PermissionDenied),
        (errno.EROFS, PermissionDenied),
        (errno.ETIMEDOUT, Unavailable),
        (errno.EIO, Unavailable),
        (errno.ESTALE, Unavailable),
        (errno.ENOTCONN, Unavailable),
        (errno.EMFILE, Unavailable),
    ],
)
def test_errno_mapping(code: int, expected: type[Exception]) -> None:
    error = errno_error(OSError(code, os.strerror(code)), "reading /mnt/b/config")
    assert type(error) is expected
    assert "reading /mnt/b/config" in str(error)
    assert errno.errorcode[code] in str(error)


def test_read_only_target_is_permission_denied(
    file_store: FileStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open = os.open

    def read_only_open(path: object, flags: int, *args: int, **kwargs: object) -> int:
        if flags & (os.O_WRONLY | os.O_RDWR):
            raise OSError(errno.EROFS, "Read-only file system")
        return real_open(path, flags, *args, **kwargs)  # type: ignore[arg-type]

    file_store.put("before", b"b")
    monkeypatch.setattr(os, "open", read_only_open)
    with pytest.raises(PermissionDenied, match="EROFS"):
        file_store.put("after", b"a")
    assert file_store.get("before") == b"b"


@given(st.text(max_size=40))
def test_accepted_keys_stay_inside_the_root(key: str) -> None:
    root = Path("/srv/store")
    try:
        check_key(key)
    except InvalidArgument:
        return
    path = root.joinpath(*key.split("/"))
    assert os.path.normpath(path) == str(path)  # nothing to collapse: no '.', '..' or '//'
    assert path.is_relative_to(root)
    assert path != root
    assert not any(part.startswith(TEMP_MARKER) for part in path.parts)
