"""Scripted fault injection around any BlobStore, for tests (after kopia's FaultyStorage).

A script is a list of `Fault`s. Each call looks for the first fault, in script order, that
still has firings left, names the called method and whose `key_prefix` starts the call's key
(for `list`, its prefix); if there is one, the fault fires instead of (or, for
`partial_write` and `corrupt_read`, around) the inner call. A test ends with
`assert_all_fired()`, so a script that no longer matches what the code does fails loudly
instead of testing nothing.

Kinds:
- `error`: the service answered with a 5xx → Unavailable; the inner store is not called.
- `timeout`: the call hung → `on_timeout(method, key)` runs (e.g. to advance a fake clock),
  then Unavailable; the inner store is not called.
- `reset`: the connection was reset → Unavailable; the inner store is not called.
- `partial_write` (put only): the first half of the data is stored under the key in the inner
  store, then Unavailable — a torn upload on a store without atomic puts.
- `corrupt_read` (get, get_range): the inner data comes back with its middle byte inverted
  (an empty result gains one byte), and no error is raised.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

from amber.blobstore.base import BlobInfo, BlobStore, Payload
from amber.domain.errors import InvalidArgument, Unavailable

FaultKind = Literal["error", "timeout", "reset", "partial_write", "corrupt_read"]
Method = Literal["put", "get", "get_range", "stat", "exists", "delete", "list", "flush"]

_KIND_METHODS: dict[str, tuple[str, ...]] = {
    "partial_write": ("put",),
    "corrupt_read": ("get", "get_range"),
}
_MESSAGES: dict[str, str] = {
    "error": "the service answered HTTP 503 (injected fault)",
    "timeout": "no answer before the timeout (injected fault)",
    "reset": "connection reset by peer (injected fault)",
    "partial_write": "connection lost after half the upload (injected fault)",
}


@dataclass(frozen=True)
class Fault:
    """One scripted failure: fires on the next `times` calls of `method` whose key starts
    with `key_prefix`."""

    method: Method
    key_prefix: str = ""
    times: int = 1
    kind: FaultKind = "error"

    def __post_init__(self) -> None:
        if self.method not in get_args(Method):
            raise InvalidArgument(f"no BlobStore method {self.method!r} to fault")
        if self.kind not in get_args(FaultKind):
            raise InvalidArgument(f"unknown fault kind {self.kind!r}")
        if self.method not in _KIND_METHODS.get(self.kind, (self.method,)):
            raise InvalidArgument(f"a {self.kind} fault cannot apply to {self.method}")
        if self.times < 1:
            raise InvalidArgument("a fault must fire at least once")


def _corrupt(data: bytes) -> bytes:
    if not data:
        return b"\xff"
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]


class FaultyStore:
    """A BlobStore that plays `script` over `inner` (thread-safe).

    `fired` records `(method, key, kind)` for every fault that fired, in order.
    """

    def __init__(
        self,
        inner: BlobStore,
        script: Sequence[Fault],
        on_timeout: Callable[[str, str], None] | None = None,
    ) -> None:
        self._inner = inner
        self._script = list(script)
        self._left = [fault.times for fault in self._script]
        self._on_timeout = on_timeout
        self._lock = threading.Lock()
        self.fired: list[tuple[str, str, str]] = []

    @property
    def inner(self) -> BlobStore:
        """The wrapped store."""
        return self._inner

    def describe(self) -> str:
        """The inner store's description, marked as faulty."""
        return f"faulty {self._inner.describe()}"

    def put(self, key: str, data: Payload) -> None:
        """Put, or fail as scripted (a torn write stores half the data first)."""
        self._write(self._inner.put, key, data)

    def stage(self, key: str, parts: Sequence[Payload]) -> None:
        """Stage, or fail as scripted for `put` (a staged write is a put whose durability
        waits for the flush; a torn write stages half the data first)."""
        self._write(lambda k, data: self._inner.stage(k, (data,)), key, b"".join(parts))

    def _write(self, write: Callable[[str, Payload], None], key: str, data: Payload) -> None:
        fault = self._take("put", key)
        if fault is not None and fault.kind == "partial_write":
            write(key, data[: len(data) // 2])
        self._fail(fault, key)
        write(key, data)

    def flush(self) -> None:
        """Flush, or fail as scripted (operation `flush`, key "")."""
        self._fail(self._take("flush", ""), "")
        self._inner.flush()

    def get(self, key: str) -> bytes:
        """Get, or fail or corrupt as scripted."""
        fault = self._take("get", key)
        return self._read(fault, key, lambda: self._inner.get(key))

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        """Get a range, or fail or corrupt as scripted."""
        fault = self._take("get_range", key)
        return self._read(fault, key, lambda: self._inner.get_range(key, offset, length))

    def stat(self, key: str) -> BlobInfo:
        """Stat, or fail as scripted."""
        self._fail(self._take("stat", key), key)
        return self._inner.stat(key)

    def exists(self, key: str) -> bool:
        """Exists, or fail as scripted."""
        self._fail(self._take("exists", key), key)
        return self._inner.exists(key)

    def delete(self, key: str) -> None:
        """Delete, or fail as scripted."""
        self._fail(self._take("delete", key), key)
        self._inner.delete(key)

    def list(self, prefix: str = "") -> Iterator[BlobInfo]:
        """List, or fail as scripted (when called, before any key is returned)."""
        self._fail(self._take("list", prefix), prefix)
        return self._inner.list(prefix)

    def assert_all_fired(self) -> None:
        """Raise AssertionError naming every fault with firings left."""
        with self._lock:
            unfired = [
                f"{fault} fired {fault.times - left} of {fault.times} times"
                for fault, left in zip(self._script, self._left, strict=True)
                if left
            ]
        if unfired:
            raise AssertionError("faults that did not fire: " + "; ".join(unfired))

    # -- internals --------------------------------------------------------------------------

    def _take(self, method: str, key: str) -> Fault | None:
        with self._lock:
            for index, fault in enumerate(self._script):
                if (
                    self._left[index]
                    and fault.method == method
                    and key.startswith(fault.key_prefix)
                ):
                    self._left[index] -= 1
                    self.fired.append((method, key, fault.kind))
                    return fault
        return None

    def _fail(self, fault: Fault | None, key: str) -> None:
        """Raise the failure `fault` stands for (nothing for no fault or a corrupt read)."""
        if fault is None or fault.kind == "corrupt_read":
            return
        if fault.kind == "timeout" and self._on_timeout is not None:
            self._on_timeout(fault.method, key)
        raise Unavailable(f"{fault.method} {key!r} on {self.describe()}: {_MESSAGES[fault.kind]}")

    def _read(self, fault: Fault | None, key: str, read: Callable[[], bytes]) -> bytes:
        self._fail(fault, key)
        data = read()
        return _corrupt(data) if fault is not None else data
