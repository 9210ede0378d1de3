"""The BlobStore protocol every backup target implements.

Keys are relative, slash-separated names such as `data/3f/3f9a…` or `config`. Objects are
written whole and atomically: a reader sees either nothing or the complete object. Stores never
modify an object in place; the backup engine only ever creates and deletes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeAlias, runtime_checkable

Payload: TypeAlias = bytes | bytearray
"""What stores write: bytes, or a bytearray (the engine seals chunks in place into one)."""


@dataclass(frozen=True)
class BlobInfo:
    """One object as listed by a store."""

    key: str
    size: int
    mtime: float  # seconds since the epoch, as the store reports it


@runtime_checkable
class BlobStore(Protocol):
    """A flat store of immutable named objects.

    Errors: a missing key raises `amber.domain.errors.NotFound`; an unreachable store or a call
    that timed out raises `Unavailable`; bad credentials raise `PermissionDenied`; a full store
    raises `OutOfSpace`; a key that breaks the key rules (`amber.blobstore.filestore.check_key`:
    relative, slash-separated, no empty, '.' or '..' segments, no control characters or
    backslashes) raises `InvalidArgument` before any I/O. No other exception type escapes an
    implementation. Only `Unavailable` is worth retrying (see `amber.blobstore.retry`).
    """

    def describe(self) -> str:
        """A human description without secrets, e.g. `s3://bucket/prefix at http://host:9000`."""
        ...

    def put(self, key: str, data: Payload) -> None:
        """Store `data` under `key` atomically, replacing nothing: an existing key is overwritten
        only with identical content by the engine's own rules (content-addressed names)."""
        ...

    def stage(self, key: str, parts: Sequence[Payload]) -> None:
        """Like `put` of the concatenation of `parts`, but without waiting for durability: the
        object becomes visible (whole) and durable at the next `flush()`, and a crash before
        that loses it (never exposes part of it). Lets a writer overlap the disk's flushing
        with its own work and pay for it once per batch; stores whose puts are durable on
        return (S3) simply put. The parts are not joined where the store can avoid it (a file
        target writes them with `writev`): a pack is many sealed chunks."""
        ...

    def flush(self) -> None:
        """Make every object staged on this store object so far visible and durable."""
        ...

    def get(self, key: str) -> bytes:
        """Return the whole object."""
        ...

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        """Return `length` bytes from `offset` (fewer only at the end of the object)."""
        ...

    def stat(self, key: str) -> BlobInfo:
        """Size and time of one object."""
        ...

    def exists(self, key: str) -> bool:
        """Whether the object exists."""
        ...

    def delete(self, key: str) -> None:
        """Delete the object; deleting a missing object is not an error."""
        ...

    def list(self, prefix: str = "") -> Iterator[BlobInfo]:
        """Every object whose key starts with `prefix`, in no particular order."""
        ...


@dataclass(frozen=True)
class Leftover:
    """A temporary object an interrupted write left behind; it never shows up as a key."""

    name: str
    """Its path relative to the store, e.g. `data/3f/.amber-tmp.0123456789abcdef`."""
    size: int
    mtime: float


@runtime_checkable
class LeftoverStore(Protocol):
    """A store whose interrupted writes can leave temporaries (a file target: a staged pack
    whose writer was killed before `flush`). S3 puts are single requests that land whole or
    not at all, so an S3 store has none and does not implement this.

    Names come from `leftovers()` only; any other name is InvalidArgument.
    """

    def leftovers(self, prefix: str = "") -> list[Leftover]:
        """Every temporary under the directory `prefix` ('' for all, or e.g. 'data/')."""
        ...

    def read_leftover(self, name: str) -> bytes:
        """The whole content of a temporary (NotFound if it is gone)."""
        ...

    def adopt_leftover(self, name: str, key: str) -> None:
        """Make the temporary durable and publish it as `key` (the caller has verified that
        its content is what `key` names)."""
        ...

    def remove_leftover(self, name: str) -> None:
        """Delete a temporary; a missing one is fine."""
        ...


def leftover_store(store: BlobStore) -> LeftoverStore | None:
    """The store under `store`'s wrappers (each exposing `inner`) that keeps temporaries, or
    None when it has none (S3)."""
    current: object = store
    for _ in range(8):
        if isinstance(current, LeftoverStore):
            return current
        current = getattr(current, "inner", None)
        if current is None:
            return None
    return None
