"""Test doubles for the backup repository: a fake clock, an in-memory BlobStore, and an adapter
that makes a real FileStore stamp objects with the fake clock's time.

The in-memory store is for the pure-logic tests; every repository test also runs over a real
directory through `ClockedFileStore` (see conftest.py).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Sequence

from amber.blobstore.base import BlobInfo, BlobStore
from amber.blobstore.filestore import FileStore
from amber.domain.errors import NotFound, Unavailable


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, start: float = 1_750_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class MemStore:
    """A BlobStore in a dict; mtimes come from the injected clock."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._objects: dict[str, tuple[bytes, float]] = {}
        self._lock = threading.Lock()

    def describe(self) -> str:
        return "memory://test"

    def put(self, key: str, data: bytes) -> None:
        with self._lock:
            self._objects[key] = (bytes(data), self._clock())

    def stage(self, key: str, parts: Sequence[bytes]) -> None:
        self.put(key, b"".join(parts))

    def flush(self) -> None:
        pass

    def _data(self, key: str) -> bytes:
        with self._lock:
            found = self._objects.get(key)
        if found is None:
            raise NotFound(f"object {key!r} does not exist in memory://test")
        return found[0]

    def get(self, key: str) -> bytes:
        return self._data(key)

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        return self._data(key)[offset : offset + length]

    def stat(self, key: str) -> BlobInfo:
        with self._lock:
            found = self._objects.get(key)
        if found is None:
            raise NotFound(f"object {key!r} does not exist in memory://test")
        return BlobInfo(key, len(found[0]), found[1])

    def exists(self, key: str) -> bool:
        with self._lock:
            return key in self._objects

    def delete(self, key: str) -> None:
        with self._lock:
            self._objects.pop(key, None)

    def list(self, prefix: str = "") -> Iterator[BlobInfo]:
        with self._lock:
            items = [(k, v) for k, v in self._objects.items() if k.startswith(prefix)]
        return iter([BlobInfo(k, len(data), mtime) for k, (data, mtime) in items])


class PassThrough:
    """A BlobStore that hands every call to `inner`; test doubles override what they change."""

    def __init__(self, inner: BlobStore) -> None:
        self.inner = inner

    def describe(self) -> str:
        return self.inner.describe()

    def put(self, key: str, data: bytes) -> None:
        self.inner.put(key, data)

    def stage(self, key: str, parts: Sequence[bytes]) -> None:
        self.inner.stage(key, parts)

    def flush(self) -> None:
        self.inner.flush()

    def get(self, key: str) -> bytes:
        return self.inner.get(key)

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        return self.inner.get_range(key, offset, length)

    def stat(self, key: str) -> BlobInfo:
        return self.inner.stat(key)

    def exists(self, key: str) -> bool:
        return self.inner.exists(key)

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def list(self, prefix: str = "") -> Iterator[BlobInfo]:
        return self.inner.list(prefix)


class ClockedFileStore(PassThrough):
    """A real FileStore whose new objects get the fake clock's time as mtime.

    The FileStore stamps real times; re-stamping keeps grace-period tests free of sleeps while
    every byte still goes through the real filesystem code.
    """

    def __init__(self, inner: FileStore, clock: Callable[[], float]) -> None:
        super().__init__(inner)
        self.root = inner.root
        self._clock = clock
        self._staged: list[str] = []

    def put(self, key: str, data: bytes) -> None:
        self.inner.put(key, data)
        self._stamp(key)

    def stage(self, key: str, parts: Sequence[bytes]) -> None:
        self.inner.stage(key, parts)
        self._staged.append(key)

    def flush(self) -> None:
        self.inner.flush()
        for key in self._staged:
            self._stamp(key)
        self._staged.clear()

    def _stamp(self, key: str) -> None:
        now = self._clock()
        os.utime(self.root.joinpath(*key.split("/")), (now, now))


class FailingPuts(PassThrough):
    """Passes everything through until `after` puts under `prefix` succeeded; later ones fail."""

    def __init__(self, inner: BlobStore, prefix: str, after: int) -> None:
        super().__init__(inner)
        self.prefix = prefix
        self.left = after
        self.failed = 0

    def describe(self) -> str:
        return "failing " + self.inner.describe()

    def put(self, key: str, data: bytes) -> None:
        if key.startswith(self.prefix):
            if self.left == 0:
                self.failed += 1
                raise Unavailable(f"put {key}: injected failure")
            self.left -= 1
        self.inner.put(key, data)

    def stage(self, key: str, parts: Sequence[bytes]) -> None:
        self.put(key, b"".join(parts))  # a staged write is a put that can fail the same way


def keys(store: BlobStore, prefix: str) -> list[str]:
    """Sorted keys under `prefix`."""
    return sorted(info.key for info in store.list(prefix))


def overwrite(store: BlobStore, key: str, data: bytes) -> None:
    """Replace an object's content (tests only: the engine never does this)."""
    store.delete(key)
    store.put(key, data)


def flip_byte(store: BlobStore, key: str, position: int) -> None:
    """Invert one byte of a stored object (negative positions count from the end)."""
    data = bytearray(store.get(key))
    data[position] ^= 0xFF
    overwrite(store, key, bytes(data))
