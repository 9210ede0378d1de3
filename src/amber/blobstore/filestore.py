"""A blob store in a directory: local disk or an NFS mount (`file:///path` targets).

Each key is a relative path under the root (`data/3f/3f9a…` is the file `<root>/data/3f/3f9a…`).
A put writes a temporary file next to its final name, fsyncs it, renames it into place and
fsyncs the directory, so a reader sees the old object, the new one or nothing — never half a
file, even across a crash. A *staged* put (`stage`) writes the temporary file and only asks the
kernel to start writing it back; `flush` later fsyncs each staged file and renames it into
place, so a batch of packs costs the writer one wait for the disk instead of one per pack, and
the same guarantee holds (a crash before the flush leaves only temporary files). Temporary
files start with `TEMP_MARKER`; `list` skips them and no key may look like one. A crash can
leave such files behind: they hold no committed data. `leftovers()` lists them, and the
engine adopts the ones that hold whole packs (`adopt_leftover`: fsync, rename into place) or
removes them (`amber.backup.leftovers` decides which are safe to touch). A flush whose staged
file another process already adopted finds the object in place and carries on.

Every filesystem call runs on a small pool of daemon threads and the caller waits at most
`timeout` seconds: a hard NFS mount that stops answering blocks a worker thread, never the
caller, who gets `Unavailable` naming the path. A call that timed out may still complete later
(a put then lands whole, thanks to the rename); this is the same uncertainty as a lost HTTP
response and is harmless for content-addressed objects.

Key rules (`check_key`) are shared by every store so that a repository can move between
targets: a key valid here is valid on S3, and the other way round.
"""

from __future__ import annotations

import contextlib
import errno
import os
import queue
import re
import secrets
import stat
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, wait
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from amber.blobstore.base import BlobInfo, Leftover, Payload
from amber.domain.errors import (
    AmberError,
    InvalidArgument,
    NotFound,
    OutOfSpace,
    PermissionDenied,
    Unavailable,
)

T = TypeVar("T")

TEMP_MARKER = ".amber-tmp."
KEY_MAX_BYTES = 1024  # S3's limit
SEGMENT_MAX_BYTES = 255  # NAME_MAX of common filesystems
KEY_RULE = (
    "a key is 1 to 1024 bytes of slash-separated, non-empty segments (at most 255 bytes each), "
    "without '.', '..', control characters, backslashes, a leading slash or a "
    f"'{TEMP_MARKER}' segment"
)

_ERRNO_CLASSES: dict[int, type[AmberError]] = {
    errno.ENOENT: NotFound,
    errno.ENOSPC: OutOfSpace,
    errno.EDQUOT: OutOfSpace,
    errno.EFBIG: OutOfSpace,
    errno.EACCES: PermissionDenied,
    errno.EPERM: PermissionDenied,
    errno.EROFS: PermissionDenied,
    errno.ENAMETOOLONG: InvalidArgument,
}
_HINTS: dict[type[AmberError], str] = {
    OutOfSpace: "free space on the target or raise its quota",
    PermissionDenied: "check ownership, permissions and that the target is mounted read-write",
    Unavailable: "check that the target (e.g. the NFS mount) is healthy",
}
_MISSING = (errno.ENOENT, errno.ENOTDIR, errno.EISDIR)
_IOV_MAX = os.sysconf("SC_IOV_MAX")
_TEMP_NAME = re.compile(re.escape(TEMP_MARKER) + r"[0-9a-f]{16}$")

_Entries = list[tuple[str, bool, int, float]]  # (name, is_dir, size, mtime) of a directory
_Leftovers = list[Leftover]


def _bad_key(kind: str, key: str, why: str) -> InvalidArgument:
    shown = key.encode("unicode_escape").decode("ascii")[:200]
    return InvalidArgument(f"invalid blob {kind} {shown!r}: {why}; {KEY_RULE}")


def _check_chars(kind: str, key: str) -> None:
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in key):
        raise _bad_key(kind, key, "control characters (including NUL) are not allowed")
    if "\\" in key:
        raise _bad_key(kind, key, "backslashes are not allowed")
    if key.startswith("/"):
        raise _bad_key(kind, key, "keys are relative")
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        raise _bad_key(kind, key, "not valid UTF-8") from None
    if size > KEY_MAX_BYTES:
        raise _bad_key(kind, key, f"{size} bytes is too long")


def _check_segment(kind: str, key: str, segment: str) -> None:
    if not segment:
        raise _bad_key(kind, key, "empty path segment")
    if segment in (".", ".."):
        raise _bad_key(kind, key, f"{segment!r} segments are not allowed")
    if segment.startswith(TEMP_MARKER):
        raise _bad_key(kind, key, "the name is reserved for temporary files")
    if len(segment.encode("utf-8")) > SEGMENT_MAX_BYTES:
        raise _bad_key(kind, key, "a segment is longer than 255 bytes")


def check_key(key: str) -> str:
    """Return `key` if it is a valid blob key for every store, else raise InvalidArgument."""
    if not isinstance(key, str) or not key:
        raise InvalidArgument(f"invalid blob key {key!r}: {KEY_RULE}")
    _check_chars("key", key)
    for segment in key.split("/"):
        _check_segment("key", key, segment)
    return key


def check_prefix(prefix: str) -> str:
    """Return `prefix` if it can start a valid key ('' and 'data/' are fine), else raise.

    Every complete segment follows the key rules; the last, partial segment may be anything
    a key segment could start with.
    """
    if not isinstance(prefix, str):
        raise InvalidArgument(f"invalid blob prefix {prefix!r}: {KEY_RULE}")
    if not prefix:
        return prefix
    _check_chars("prefix", prefix)
    *complete, _partial = prefix.split("/")
    for segment in complete:
        _check_segment("prefix", prefix, segment)
    return prefix


def errno_error(e: OSError, doing: str) -> AmberError:
    """Translate an OSError into the domain error a caller can act on.

    `doing` names the operation and the path (`"reading /mnt/backup/config"`). Errors that no
    retry or user action can classify better (EIO, ESTALE, ETIMEDOUT, ENOTCONN and anything
    unknown) become `Unavailable`, the one class the retry wrapper retries.
    """
    cls = _ERRNO_CLASSES.get(e.errno or 0, Unavailable)
    code = errno.errorcode.get(e.errno or 0, "unknown error")
    message = f"{doing} failed: {e.strerror or e} ({code})"
    hint = _HINTS.get(cls)
    return cls(f"{message}; {hint}" if hint else message)


class _CallRunner:
    """Run blocking calls on daemon worker threads and wait for each at most `timeout` seconds.

    Daemon threads (rather than `concurrent.futures.ThreadPoolExecutor`, whose workers are
    joined at interpreter exit) keep a hung mount from hanging the process when it exits.
    Workers are started on demand up to `max_workers`. A call that times out while running is
    abandoned and its worker counted as stuck until the kernel lets it go; once every worker is
    stuck, calls fail at once instead of queueing (and holding their data) behind them. Either
    way the caller gets an answer within `timeout`.
    """

    def __init__(self, timeout: float, max_workers: int) -> None:
        self._timeout = timeout
        self._max_workers = max_workers
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._workers = 0
        self._idle = 0
        self._pending = 0
        self._abandoned: set[Future[Any]] = set()

    def run(self, fn: Callable[[], T], doing: str) -> T:
        """Return `fn()`, re-raise what it raised, or raise Unavailable after the timeout."""
        future: Future[T] = Future()
        with self._lock:
            if len(self._abandoned) >= self._max_workers:
                raise Unavailable(
                    f"{doing} not attempted: all {self._max_workers} file store workers are "
                    "stuck in earlier calls; the file system appears hung (check the NFS mount)"
                )
            self._pending += 1
            if self._pending > self._idle and self._workers < self._max_workers:
                self._start_worker_locked()
        self._jobs.put((fn, future))
        done, _ = wait([future], timeout=self._timeout)
        if not done:
            self._abandon(future)
            raise Unavailable(
                f"{doing} did not answer within {self._timeout:g} s; the file system may be "
                "hung (check the NFS server and mount)"
            )
        return future.result()

    def _abandon(self, future: Future[Any]) -> None:
        """Give up on a call: a queued one never starts; a running one marks its worker stuck."""
        if future.cancel():
            return
        with self._lock:
            if not future.done():  # else the worker finished in the meantime
                self._abandoned.add(future)

    def _start_worker_locked(self) -> None:
        self._workers += 1
        self._idle += 1
        threading.Thread(target=self._work, name="amber-filestore", daemon=True).start()

    def _work(self) -> None:
        while True:
            fn, future = self._jobs.get()
            with self._lock:
                self._pending -= 1
                self._idle -= 1
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn())
                except BaseException as e:  # handed to the caller, who re-raises it
                    future.set_exception(e)
            with self._lock:
                self._abandoned.discard(future)
                self._idle += 1
            del fn, future  # drop references to big buffers while idle


def _write_all(fd: int, parts: Sequence[Payload]) -> None:
    """Write the concatenation of `parts` with `writev` (at most `IOV_MAX` buffers a call),
    resuming after short writes."""
    views = [memoryview(part) for part in parts if len(part)]
    while views:
        written = os.writev(fd, views[:_IOV_MAX])
        while written and written >= len(views[0]):
            written -= len(views.pop(0))
        if written:
            views[0] = views[0][written:]


def _read_to_end(fd: int, size_hint: int) -> bytes:
    parts = []
    chunk = max(size_hint + 1, 1 << 16)  # +1 so that one more read sees EOF at once
    while part := os.read(fd, chunk):
        parts.append(part)
    return b"".join(parts)


def _pread_exactly(fd: int, offset: int, length: int) -> bytes:
    parts = []
    while length > 0 and (part := os.pread(fd, length, offset)):
        parts.append(part)
        offset += len(part)
        length -= len(part)
    return b"".join(parts)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _start_writeback(fd: int) -> None:
    # Starts writeback now (asynchronously), so the flush finds little left to write.
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


def _remove_quietly(path: Path) -> None:
    # the temp file is garbage either way; the original error matters more
    with contextlib.suppress(OSError):
        os.unlink(path)


def _not_a_file(path: Path) -> FileNotFoundError:
    return FileNotFoundError(errno.ENOENT, "not a regular file", str(path))


def _open_regular(path: Path) -> tuple[int, os.stat_result]:
    """Open a file for reading; a directory or device counts as missing (ENOENT)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
    except BaseException:
        os.close(fd)
        raise
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise _not_a_file(path)
    return fd, st


class FileStore:
    """A `BlobStore` in the directory `root`, which must exist (it is never created here, so
    that an unmounted NFS share is not silently replaced by a local directory).

    `timeout` bounds every filesystem call (see the module docstring); `max_workers` bounds
    the threads that run them.
    """

    def __init__(self, root: Path, *, timeout: float = 60.0, max_workers: int = 16) -> None:
        if not root.is_absolute():
            raise InvalidArgument(f"file store root {str(root)!r} must be an absolute path")
        if timeout <= 0 or max_workers < 1:
            raise InvalidArgument("file store timeout and max_workers must be positive")
        self._root = root
        self._runner = _CallRunner(timeout, max_workers)
        self._staged: list[tuple[str, Path, Path]] = []  # (key, temporary file, final path)
        self._unsynced_dirs: set[Path] = set()  # made for staged objects, fsynced at the flush
        self._staged_lock = threading.Lock()

    @property
    def root(self) -> Path:
        """The directory that holds the objects."""
        return self._root

    def __repr__(self) -> str:
        return f"FileStore({str(self._root)!r})"

    def describe(self) -> str:
        """The target URL, e.g. `file:///mnt/backup`."""
        return f"file://{self._root}"

    def put(self, key: str, data: Payload) -> None:
        """Store `data` under `key` atomically (temp file, fsync, rename, fsync directory)."""
        path = self._path(key)
        self._run(lambda: self._put_sync(path, data), f"writing {path}", key)

    def stage(self, key: str, parts: Sequence[Payload]) -> None:
        """Write the parts to a temporary file (one `writev`) and start its writeback without
        waiting for it; the next `flush` makes it durable and renames it to `key`."""
        path = self._path(key)
        tmp = self._run(lambda: self._stage_sync(path, parts), f"writing {path}", key)
        with self._staged_lock:
            self._staged.append((key, tmp, path))

    def flush(self) -> None:
        """fsync every staged file, rename it into place, then fsync the directories. What a
        failure leaves unpublished stays staged, so a retried flush finishes the job."""
        with self._staged_lock:
            staged, self._staged = self._staged, []
            directories, self._unsynced_dirs = self._unsynced_dirs, set()
        directories |= {path.parent for _, _, path in staged}
        done = 0
        try:
            for key, tmp, path in staged:
                self._run(partial(self._publish_sync, tmp, path), f"writing {path}", key)
                done += 1
            for directory in sorted(directories):
                self._run(partial(_fsync_dir, directory), f"syncing {directory}", "")
        except BaseException:
            with self._staged_lock:
                self._staged[:0] = staged[done:]
                self._unsynced_dirs |= directories
            raise

    def get(self, key: str) -> bytes:
        """Return the whole object."""
        path = self._path(key)
        return self._run(lambda: self._get_sync(path), f"reading {path}", key)

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        """Return `length` bytes from `offset` with pread (fewer only at the end)."""
        if offset < 0 or length < 0:
            raise InvalidArgument(f"invalid range {offset}+{length} of {key!r}")
        path = self._path(key)
        return self._run(lambda: self._get_range_sync(path, offset, length), f"reading {path}", key)

    def stat(self, key: str) -> BlobInfo:
        """Size and modification time of one object."""
        path = self._path(key)
        return self._run(lambda: self._stat_sync(path, key), f"examining {path}", key)

    def exists(self, key: str) -> bool:
        """Whether the object exists (a directory of that name does not count)."""
        try:
            self.stat(key)
        except NotFound:
            return False
        return True

    def delete(self, key: str) -> None:
        """Delete the object; a missing one is fine. Directories are left in place (they are
        shared by other keys and cost nothing); the deletion is not fsynced, so a crash may
        bring the object back, which a mark-and-sweep collector tolerates."""
        path = self._path(key)
        self._run(lambda: self._delete_sync(path), f"deleting {path}", key)

    def list(self, prefix: str = "") -> Iterator[BlobInfo]:
        """Every object whose key starts with `prefix`, walking only the directories that can
        hold such keys. The prefix is checked now; the walk runs as the result is consumed,
        one directory read (with its timeout) at a time."""
        check_prefix(prefix)
        return self._walk(prefix)

    def leftovers(self, prefix: str = "") -> _Leftovers:
        """Every temporary file under the directory `prefix` (e.g. `data/`, or '' for all)."""
        check_prefix(prefix)
        if prefix and not prefix.endswith("/"):
            raise InvalidArgument(f"leftovers are listed by directory, not {prefix!r}")
        found: _Leftovers = []
        pending = [prefix]
        while pending:
            rel = pending.pop()
            directory = self._root / rel
            try:
                entries = self._runner.run(
                    partial(_scan_temps_sync, directory), f"listing {directory}"
                )
            except OSError as e:
                if e.errno in _MISSING:
                    continue
                raise errno_error(e, f"listing {directory}") from e
            for name, is_dir, size, mtime in entries:
                if is_dir:
                    pending.append(f"{rel}{name}/")
                else:
                    found.append(Leftover(f"{rel}{name}", size, mtime))
        return sorted(found, key=lambda leftover: leftover.name)

    def read_leftover(self, name: str) -> bytes:
        """The whole temporary file."""
        path = self._leftover_path(name)
        return self._run(lambda: self._get_sync(path), f"reading {path}", name)

    def adopt_leftover(self, name: str, key: str) -> None:
        """fsync the temporary, rename it to `key`, fsync the directory."""
        tmp, path = self._leftover_path(name), self._path(key)

        def adopt() -> None:
            self._publish_sync(tmp, path)
            _fsync_dir(path.parent)

        self._run(adopt, f"publishing {tmp} as {path}", name)

    def remove_leftover(self, name: str) -> None:
        """Delete a temporary file (a missing one is fine)."""
        path = self._leftover_path(name)
        self._run(lambda: self._delete_sync(path), f"deleting {path}", name)

    # -- internals --------------------------------------------------------------------------

    def _path(self, key: str) -> Path:
        return self._root.joinpath(*check_key(key).split("/"))

    def _leftover_path(self, name: str) -> Path:
        directory, _, base = name.rpartition("/")
        if not _TEMP_NAME.match(base):
            raise InvalidArgument(f"{name!r} is not the name of a temporary file")
        return self._path(directory) / base if directory else self._root / base

    def _run(self, fn: Callable[[], T], doing: str, key: str) -> T:
        try:
            return self._runner.run(fn, doing)
        except OSError as e:
            if e.errno in _MISSING:
                raise self._missing(key) from e
            raise errno_error(e, doing) from e

    def _missing(self, key: str) -> AmberError:
        """NotFound for `key` — unless the root itself is gone, which means an unmounted or
        deleted target, not an empty one."""
        try:
            self._check_root()
        except AmberError as e:
            return e
        return NotFound(f"blob {key!r} not found in {self.describe()}")

    def _check_root(self) -> None:
        doing = f"examining {self._root}"
        try:
            self._runner.run(self._require_root, doing)
        except OSError as e:
            raise errno_error(e, doing) from e

    def _require_root(self) -> None:
        try:
            st = os.stat(self._root)
        except FileNotFoundError:
            st = None
        if st is None or not stat.S_ISDIR(st.st_mode):
            raise Unavailable(
                f"file store root {self._root} is missing or not a directory; "
                "mount the target or create the directory"
            )

    def _put_sync(self, path: Path, data: Payload) -> None:
        tmp = self._write_temp(path, (data,), _fsync_dir, os.fsync)
        try:
            self._rename_into_place(tmp, path)
        except BaseException:
            _remove_quietly(tmp)
            raise
        _fsync_dir(path.parent)

    def _stage_sync(self, path: Path, parts: Sequence[Payload]) -> Path:
        return self._write_temp(path, parts, self._sync_at_flush, _start_writeback)

    def _write_temp(
        self,
        path: Path,
        parts: Sequence[Payload],
        sync_dir: Callable[[Path], None],
        after_write: Callable[[int], None],
    ) -> Path:
        """The concatenated `parts` in a new temporary file next to `path`; `after_write(fd)`
        before it closes (fsync for a put, start writeback for a staged put). A failure leaves
        no file."""
        tmp = path.parent / f"{TEMP_MARKER}{secrets.token_hex(8)}"
        fd = self._create_temp(tmp, sync_dir)
        try:
            _write_all(fd, parts)
            after_write(fd)
        except BaseException:
            _remove_quietly(tmp)
            raise
        finally:
            os.close(fd)
        return tmp

    def _rename_into_place(self, tmp: Path, path: Path) -> None:
        """Rename; a directory where the key's file belongs (or the other way) is a conflict,
        and its temporary file is removed."""
        try:
            os.rename(tmp, path)
        except (IsADirectoryError, NotADirectoryError) as e:
            _remove_quietly(tmp)
            raise self._conflict(path) from e

    def _sync_at_flush(self, directory: Path) -> None:
        with self._staged_lock:
            self._unsynced_dirs.add(directory)

    def _publish_sync(self, tmp: Path, path: Path) -> None:
        try:
            fd = os.open(tmp, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            if path.is_file():
                return  # another process adopted our staged file: it is in place, whole
            raise
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        self._rename_into_place(tmp, path)  # other failures keep it staged for a retried flush

    def _create_temp(self, tmp: Path, sync_dir: Callable[[Path], None] = _fsync_dir) -> int:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        try:
            return os.open(tmp, flags, 0o600)
        except FileNotFoundError:
            self._make_dirs(tmp.parent, sync_dir)
            return os.open(tmp, flags, 0o600)
        except (NotADirectoryError, IsADirectoryError) as e:
            raise self._conflict(tmp.parent) from e

    def _make_dirs(self, directory: Path, sync_dir: Callable[[Path], None]) -> None:
        """Create the missing directories between the root and `directory`, and `sync_dir`
        each parent (fsync now, or later for a staged object) so that the new entries survive
        a crash together with the object."""
        self._require_root()
        current = self._root
        for part in directory.relative_to(self._root).parts:
            parent, current = current, current / part
            try:
                os.mkdir(current, 0o700)
            except FileExistsError:
                if not current.is_dir():
                    raise self._conflict(current) from None
                continue
            except NotADirectoryError as e:
                raise self._conflict(parent) from e
            sync_dir(parent)

    def _conflict(self, path: Path) -> InvalidArgument:
        return InvalidArgument(
            f"{path} is a file where the key needs a directory (or the other way round); a "
            "file store cannot hold both 'a' and 'a/b'"
        )

    def _get_sync(self, path: Path) -> bytes:
        fd, st = _open_regular(path)
        try:
            return _read_to_end(fd, st.st_size)
        finally:
            os.close(fd)

    def _get_range_sync(self, path: Path, offset: int, length: int) -> bytes:
        fd, _ = _open_regular(path)
        try:
            return _pread_exactly(fd, offset, length)
        finally:
            os.close(fd)

    def _stat_sync(self, path: Path, key: str) -> BlobInfo:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise _not_a_file(path)
        return BlobInfo(key=key, size=st.st_size, mtime=st.st_mtime)

    def _delete_sync(self, path: Path) -> None:
        try:
            os.unlink(path)
        except OSError as e:
            if e.errno not in _MISSING:
                raise
            if e.errno == errno.ENOENT:
                self._require_root()  # a missing root is not "already deleted"

    def _walk(self, prefix: str) -> Iterator[BlobInfo]:
        base, _, start = prefix.rpartition("/")
        pending = [(base + "/" if base else "", start)]
        is_base = True
        while pending:
            rel, start = pending.pop()
            entries = self._scan(self._root / rel, is_base=is_base)
            is_base = False
            for name, is_dir, size, mtime in entries:
                if not name.startswith(start):
                    continue
                if is_dir:
                    pending.append((f"{rel}{name}/", ""))
                else:
                    yield BlobInfo(key=rel + name, size=size, mtime=mtime)

    def _scan(self, directory: Path, *, is_base: bool) -> _Entries:
        """Read one directory: (name, is_dir, size, mtime) of every entry a key can name."""
        try:
            return self._runner.run(lambda: _scan_sync(directory), f"listing {directory}")
        except OSError as e:
            if e.errno not in _MISSING:
                raise errno_error(e, f"listing {directory}") from e
        if is_base:
            self._check_root()
        return []  # removed while we walked, or the prefix names no directory


def _scan_sync(directory: Path) -> _Entries:
    found: _Entries = []
    with os.scandir(directory) as entries:
        for entry in entries:
            if not _listable(entry.name):
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    found.append((entry.name, True, 0, 0.0))
                elif entry.is_file(follow_symlinks=False):
                    st = entry.stat(follow_symlinks=False)
                    found.append((entry.name, False, st.st_size, st.st_mtime))
            except FileNotFoundError:
                continue  # deleted while we looked: not part of the listing
    return found


def _scan_temps_sync(directory: Path) -> _Entries:
    """The temporary files and the subdirectories of one directory."""
    found: _Entries = []
    with os.scandir(directory) as entries:
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False) and _listable(entry.name):
                    found.append((entry.name, True, 0, 0.0))
                elif _TEMP_NAME.match(entry.name) and entry.is_file(follow_symlinks=False):
                    st = entry.stat(follow_symlinks=False)
                    found.append((entry.name, False, st.st_size, st.st_mtime))
            except FileNotFoundError:
                continue
    return found


def _listable(name: str) -> bool:
    """Whether a directory entry can be (part of) a key: temp files and odd names are not."""
    try:
        _check_segment("key", name, name)
        _check_chars("key", name)
    except InvalidArgument:
        return False
    return True
