"""The index: which pack holds each chunk, and where.

Index objects (`index/<BLAKE3 of the object>`) are written after the packs they describe and
before any manifest that uses them. Each lists whole packs (id and size) with their entries, and
the index objects it *supersedes*. Plaintext layout before sealing as kind `index`
(little-endian):

```
magic "AMBRIDX1" (8)
superseded count u32 | superseded index object digests, 32 bytes each
pack count u32 | packs:
    pack id (32) | pack size u64 | entry count u32 | entries, 49 bytes each:
    chunk id (32) | offset u64 | stored length u32 | raw length u32 | flags u8
```

`RepositoryIndex` is the union of all index objects in memory, minus superseded ones. Prune and
rebuild replace the index by writing new objects (the last one naming every object it replaces)
before deleting the old ones; a store that brings a deleted object back after a crash (a
filesystem whose deletes are not yet durable) therefore cannot revive entries that point into
deleted packs. Superseded objects still present are carried forward into the next replacement.

In memory the index is a `ChunkTable`: the chunk ids in one byte buffer, the locations in
`array` columns and an open-addressing hash table of row numbers, about 66 bytes per chunk
where a dict of entry objects took about 210 (`bench/index_memory.py --entries 1000000`), so
small chunks and large volumes stay within the memory bound.

A chunk stored in two packs (two backups raced to upload it) keeps the first location seen; both
are valid while both packs exist, and the sweep only ever deletes a pack after writing an index
that no longer points into it. The index is a cache of what the pack headers say:
`Repository.rebuild_index` recreates it.
"""

from __future__ import annotations

import functools
import itertools
import struct
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from amber.backup.crypto import ObjectKind, Sealer, content_hash
from amber.backup.layout import INDEX_PREFIX, index_digest_from_key, index_key
from amber.backup.pack import HEADER_ENTRY, PackEntry
from amber.blobstore.base import BlobStore
from amber.domain.errors import Corrupt, NotFound

INDEX_MAGIC = b"AMBRIDX1"
_COUNT = struct.Struct("<I")
_PACK = struct.Struct("<32sQI")

# Entries per index object before the writer starts another one (about 4 MiB of plaintext).
MAX_ENTRIES_PER_OBJECT = 80_000
READ_THREADS = 8
"""Index objects read at once when a repository is opened (each read is a round trip on S3)."""


@dataclass(frozen=True, slots=True)
class IndexEntry:
    """Where a chunk lives: pack, offset and stored length, raw length, flags."""

    pack_id: bytes
    offset: int
    length: int
    raw_length: int
    flags: int

    def pack_entry(self, chunk_id: bytes) -> PackEntry:
        """The same location as the pack header writes it."""
        return PackEntry(chunk_id, self.offset, self.length, self.raw_length, self.flags)


@dataclass(frozen=True)
class PackRecord:
    """One pack as an index object lists it."""

    pack_id: bytes
    size: int
    entries: tuple[PackEntry, ...]


_ID = 32
_EMPTY_SLOTS = 8


def _slot_array(capacity: int) -> array[int]:
    return array("I", bytes(4 * capacity))


class ChunkTable(Mapping[bytes, IndexEntry]):
    """`chunk id -> IndexEntry` without one Python object per chunk.

    Row `r` is the chunk id at `ids[32 r : 32 r + 32]` and its location in the columns; pack ids
    are numbered once. `_slots` is an open-addressing hash table (linear probing, at most 3/4
    full) of `row + 1`, 0 marking a free slot. Rows are only ever appended: the first location
    added for a chunk id is the one kept. Lookups return a fresh `IndexEntry`.
    """

    __slots__ = (
        "_flags",
        "_ids",
        "_lengths",
        "_mask",
        "_offsets",
        "_pack_ids",
        "_pack_numbers",
        "_packs",
        "_raw_lengths",
        "_slots",
    )

    def __init__(self, entries: Iterable[tuple[bytes, IndexEntry]] = ()) -> None:
        self._ids = bytearray()
        self._pack_ids: list[bytes] = []
        self._pack_numbers: dict[bytes, int] = {}
        self._packs = array("I")
        self._offsets = array("Q")
        self._lengths = array("I")
        self._raw_lengths = array("I")
        self._flags = bytearray()
        self._slots = _slot_array(_EMPTY_SLOTS)
        self._mask = _EMPTY_SLOTS - 1
        for chunk_id, entry in entries:
            self.add_pack_entries(entry.pack_id, ((chunk_id, entry),))

    def __len__(self) -> int:
        return len(self._flags)

    def __contains__(self, chunk_id: object) -> bool:
        return self._row(chunk_id) >= 0

    def __getitem__(self, chunk_id: bytes) -> IndexEntry:
        row = self._row(chunk_id)
        if row < 0:
            raise KeyError(chunk_id)
        return self._entry(row)

    def __iter__(self) -> Iterator[bytes]:
        ids = self._ids
        for row in range(len(self)):
            yield bytes(ids[row * _ID : row * _ID + _ID])

    def entries(self) -> Iterator[tuple[bytes, IndexEntry]]:
        """Every `(chunk id, entry)`, in the order they were added."""
        for row in range(len(self)):
            yield bytes(self._ids[row * _ID : row * _ID + _ID]), self._entry(row)

    def add(self, chunk_id: bytes, pack_id: bytes, entry: PackEntry) -> bool:
        """Record `chunk_id` at `entry` in `pack_id` unless it is known; True if added."""
        before = len(self)
        self.add_pack_entries(pack_id, ((chunk_id, entry),))
        return len(self) > before

    def add_pack_entries(
        self, pack_id: bytes, entries: Iterable[tuple[bytes, PackEntry | IndexEntry]]
    ) -> None:
        """Record each `(chunk id, location)` in `pack_id`; known chunk ids keep theirs."""
        rows = [(chunk_id, e.offset, e.length, e.raw_length, e.flags) for chunk_id, e in entries]
        if any(len(row[0]) != _ID for row in rows):
            raise ValueError("a chunk id is 32 bytes")
        self._add_rows(pack_id, rows)

    def add_packed_entries(self, pack_id: bytes, packed: bytes) -> None:
        """`add_pack_entries` for entries in their stored layout (`HEADER_ENTRY`, back to
        back), as an index object holds them: the columns are extended in bulk, and the only
        Python per entry is placing its id in the hash table (about a quarter of the time of
        making an entry object per chunk and adding it)."""
        self._add_rows(pack_id, HEADER_ENTRY.iter_unpack(packed))

    def _add_rows(self, pack_id: bytes, rows: Iterable[tuple[Any, ...]]) -> None:
        """Rows of (chunk id, offset, length, raw length, flags): the ids not known yet are
        placed, and their locations appended to the columns."""
        fields: list[Sequence[Any]] = list(zip(*rows, strict=True))
        if not fields:
            return
        skipped = self._place_ids(fields[0])
        if skipped:  # ids known before, or twice in this pack
            kept = sorted(set(range(len(fields[0]))) - set(skipped))
            fields = [[column[i] for i in kept] for column in fields]
        pack = self._pack_number(pack_id)
        self._packs.extend(itertools.repeat(pack, len(fields[0])))
        self._offsets.extend(fields[1])
        self._lengths.extend(fields[2])
        self._raw_lengths.extend(fields[3])
        self._flags.extend(fields[4])

    def _place_ids(self, chunk_ids: Sequence[bytes]) -> list[int]:
        """Append the ids not yet in the table (rows numbered from the current length, as the
        caller then extends the columns); the positions in `chunk_ids` of those skipped."""
        ids, slots, mask = self._ids, self._slots, self._mask
        row, limit = len(self._flags), 3 * len(slots) // 4  # at most 3/4 full
        skipped = []
        for position, chunk_id in enumerate(chunk_ids):
            slot = hash(chunk_id) & mask
            while (stored := slots[slot]) and ids[(stored - 1) * _ID : stored * _ID] != chunk_id:
                slot = (slot + 1) & mask
            if stored:
                skipped.append(position)
                continue
            ids += chunk_id
            row += 1
            slots[slot] = row
            if row > limit:
                self._grow(row)
                slots, mask, limit = self._slots, self._mask, 3 * len(self._slots) // 4
        return skipped

    def _pack_number(self, pack_id: bytes) -> int:
        pack = self._pack_numbers.setdefault(pack_id, len(self._pack_ids))
        if pack == len(self._pack_ids):
            self._pack_ids.append(pack_id)
        return pack

    def _entry(self, row: int) -> IndexEntry:
        return IndexEntry(
            self._pack_ids[self._packs[row]],
            self._offsets[row],
            self._lengths[row],
            self._raw_lengths[row],
            self._flags[row],
        )

    def _row(self, chunk_id: object) -> int:
        if not isinstance(chunk_id, bytes) or len(chunk_id) != _ID:
            return -1
        return self._slots[self._probe(chunk_id)] - 1

    def _probe(self, chunk_id: bytes) -> int:
        """The slot holding `chunk_id`, or the free slot where it would go."""
        slots, ids, mask = self._slots, self._ids, self._mask
        slot = hash(chunk_id) & mask
        while (stored := slots[slot]) and ids[(stored - 1) * _ID : stored * _ID] != chunk_id:
            slot = (slot + 1) & mask
        return slot

    def reserve(self, extra: int) -> None:
        """Size the hash table for `extra` more ids at once: loading an index of n entries
        then rehashes nothing, where doubling as it fills rehashes about n ids in Python."""
        capacity = len(self._slots)
        while 4 * (len(self) + extra) > 3 * capacity:
            capacity *= 2
        if capacity > len(self._slots):
            self._rehash(capacity, len(self))

    def _grow(self, rows: int) -> None:
        """Double the hash table; `rows`: how many ids it holds (more than `len(self)` while
        `_place_ids` runs ahead of the columns)."""
        self._rehash(2 * len(self._slots), rows)

    def _rehash(self, capacity: int, rows: int) -> None:
        slots, mask, ids = _slot_array(capacity), capacity - 1, self._ids
        for row in range(rows):
            slot = hash(bytes(ids[row * _ID : row * _ID + _ID])) & mask
            while slots[slot]:
                slot = (slot + 1) & mask
            slots[slot] = row + 1
        self._slots, self._mask = slots, mask


@dataclass
class RepositoryIndex:
    """All known chunk locations, merged from index objects (or pack headers).

    `object_keys` are the index objects this index was loaded from or written as;
    `superseded_keys` are objects still in the store that a newer object replaced. Prune and
    rebuild supersede both sets. Not thread-safe: the writer serializes its updates.
    """

    chunks: ChunkTable = field(default_factory=ChunkTable)
    pack_sizes: dict[bytes, int] = field(default_factory=dict)
    object_keys: set[str] = field(default_factory=set)
    superseded_keys: set[str] = field(default_factory=set)

    def __contains__(self, chunk_id: object) -> bool:
        return chunk_id in self.chunks

    def __len__(self) -> int:
        return len(self.chunks)

    def lookup(self, chunk_id: bytes) -> IndexEntry | None:
        """Where `chunk_id` is stored, or None."""
        return self.chunks.get(chunk_id)

    def add_pack(self, pack_id: bytes, size: int, entries: Iterable[PackEntry]) -> None:
        """Record a pack and its entries; chunks already known keep their location."""
        self.pack_sizes[pack_id] = size
        self.chunks.add_pack_entries(pack_id, ((e.chunk_id, e) for e in entries))

    def add_packed(self, pack_id: bytes, size: int, packed: bytes) -> None:
        """`add_pack` for entries in their stored layout (`ChunkTable.add_packed_entries`)."""
        self.pack_sizes[pack_id] = size
        self.chunks.add_packed_entries(pack_id, packed)

    def merge(self, other: RepositoryIndex) -> None:
        """Add everything `other` knows (existing locations win)."""
        self.pack_sizes.update(other.pack_sizes)
        for pack_id, entries in other.entries_by_pack().items():
            self.chunks.add_pack_entries(pack_id, entries)
        self.object_keys |= other.object_keys
        self.superseded_keys |= other.superseded_keys

    def records(self, packs: Iterable[bytes] | None = None) -> list[PackRecord]:
        """The index grouped by pack (all packs, or only `packs`), ordered by pack id."""
        wanted = set(self.pack_sizes if packs is None else packs)
        grouped: dict[bytes, list[PackEntry]] = {p: [] for p in wanted if p in self.pack_sizes}
        for chunk_id, entry in self.chunks.entries():
            if entry.pack_id in grouped:
                grouped[entry.pack_id].append(entry.pack_entry(chunk_id))
        return [
            PackRecord(p, self.pack_sizes[p], tuple(sorted(grouped[p], key=lambda e: e.offset)))
            for p in sorted(grouped)
        ]

    def entries_by_pack(self) -> dict[bytes, list[tuple[bytes, IndexEntry]]]:
        """`pack id -> [(chunk id, entry)]` for every indexed pack."""
        grouped: dict[bytes, list[tuple[bytes, IndexEntry]]] = {p: [] for p in self.pack_sizes}
        for chunk_id, entry in self.chunks.entries():
            grouped.setdefault(entry.pack_id, []).append((chunk_id, entry))
        return grouped


class IndexObject:
    """The decoded content of one index object: the packs it lists and the index objects it
    supersedes.

    A decoded object keeps each pack's entries as they are stored (49 bytes each) until its
    `records` are asked for: loading the index adds them to the `ChunkTable` in bulk
    (`add_to`), without an entry object per chunk. Python per entry is what made loading a
    large index slow (~4 us per entry: ~16 s for the 4 million chunks of 1 TiB at 256 KiB).
    """

    __slots__ = ("_packed", "_records", "supersedes")

    def __init__(
        self, records: Sequence[PackRecord] = (), supersedes: Sequence[bytes] = ()
    ) -> None:
        self._records: tuple[PackRecord, ...] | None = tuple(records)
        self._packed: tuple[tuple[bytes, int, bytes], ...] = ()
        self.supersedes = tuple(supersedes)

    @classmethod
    def packed(
        cls, packs: Sequence[tuple[bytes, int, bytes]], supersedes: Sequence[bytes]
    ) -> IndexObject:
        """An object of `(pack id, size, entries in their stored layout)` per pack."""
        obj = cls((), supersedes)
        obj._records, obj._packed = None, tuple(packs)
        return obj

    @property
    def records(self) -> tuple[PackRecord, ...]:
        """The packs, each with its entries as `PackEntry` objects."""
        if self._records is None:
            self._records = tuple(
                PackRecord(
                    pack_id,
                    size,
                    tuple(itertools.starmap(PackEntry, HEADER_ENTRY.iter_unpack(packed))),
                )
                for pack_id, size, packed in self._packed
            )
        return self._records

    @property
    def entry_count(self) -> int:
        """How many entries the object lists, over all its packs."""
        if self._records is not None:
            return sum(len(record.entries) for record in self._records)
        return sum(len(packed) for _, _, packed in self._packed) // HEADER_ENTRY.size

    def add_to(self, index: RepositoryIndex) -> None:
        """Add every pack and its entries to `index` (known chunks keep their location)."""
        if self._records is not None:
            for record in self._records:
                index.add_pack(record.pack_id, record.size, record.entries)
            return
        for pack_id, size, packed in self._packed:
            index.add_packed(pack_id, size, packed)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, IndexObject):
            return NotImplemented
        return (self.records, self.supersedes) == (other.records, other.supersedes)

    __hash__ = None  # type: ignore[assignment]  # equal by content, and not immutable

    def __repr__(self) -> str:
        return f"IndexObject(records={self.records!r}, supersedes={self.supersedes!r})"


def encode_index(records: Sequence[PackRecord], supersedes: Sequence[bytes] = ()) -> bytes:
    """The plaintext of an index object listing `records` and replacing `supersedes`."""
    out = bytearray(INDEX_MAGIC + _COUNT.pack(len(supersedes)))
    for digest in supersedes:
        out += digest
    out += _COUNT.pack(len(records))
    for record in records:
        out += _PACK.pack(record.pack_id, record.size, len(record.entries))
        for e in record.entries:
            out += HEADER_ENTRY.pack(e.chunk_id, e.offset, e.length, e.raw_length, e.flags)
    return bytes(out)


class _Reader:
    """Bounds-checked sequential reads over an index object's plaintext."""

    def __init__(self, data: bytes, what: str) -> None:
        self.data = data
        self.pos = 0
        self.what = what

    def take(self, size: int) -> bytes:
        if size < 0 or self.pos + size > len(self.data):
            raise Corrupt(f"{self.what} is truncated")
        self.pos += size
        return self.data[self.pos - size : self.pos]

    def count(self) -> int:
        (value,) = _COUNT.unpack(self.take(_COUNT.size))
        return int(value)


def _read_pack(reader: _Reader) -> tuple[bytes, int, bytes]:
    """(pack id, size, its entries as stored)."""
    pack_id, size, entry_count = _PACK.unpack(reader.take(_PACK.size))
    return pack_id, size, reader.take(entry_count * HEADER_ENTRY.size)


def decode_index(plaintext: bytes, what: str) -> IndexObject:
    """Parse an index object's plaintext; anything malformed is Corrupt."""
    reader = _Reader(plaintext, what)
    if reader.take(len(INDEX_MAGIC)) != INDEX_MAGIC:
        raise Corrupt(f"{what} has a wrong magic")
    superseded = reader.take(reader.count() * 32)
    supersedes = tuple(superseded[i : i + 32] for i in range(0, len(superseded), 32))
    packs = tuple(_read_pack(reader) for _ in range(reader.count()))
    if reader.pos != len(plaintext):
        raise Corrupt(f"{what} has {len(plaintext) - reader.pos} trailing bytes")
    return IndexObject.packed(packs, supersedes)


def read_index_object(store: BlobStore, sealer: Sealer, key: str) -> IndexObject:
    """Fetch, verify (name = SHA-256 of content) and decode one index object."""
    digest = index_digest_from_key(key)
    if digest is None:
        raise Corrupt(f"{key} is not a valid index object name")
    sealed = store.get(key)
    if content_hash(sealed) != digest:
        raise Corrupt(f"index object {key}: content does not match its name")
    return decode_index(sealer.open(ObjectKind.INDEX, sealed, f"index object {key}"), key)


def index_object_keys(store: BlobStore) -> list[str]:
    """Every key under `index/`, sorted."""
    return sorted(info.key for info in store.list(INDEX_PREFIX))


def merge_objects(objects: Mapping[str, IndexObject]) -> RepositoryIndex:
    """The index that `objects` (key -> content) describe, skipping superseded objects."""
    superseded = {index_key(d) for obj in objects.values() for d in obj.supersedes}
    index = RepositoryIndex()
    live = sorted(key for key in objects if key not in superseded)
    index.chunks.reserve(sum(objects[key].entry_count for key in live))
    for key in live:
        objects[key].add_to(index)
        index.object_keys.add(key)
    index.superseded_keys = superseded & objects.keys()
    return index


REPAIR_HINT = "`amber backup repair` rebuilds the index from the packs"


def load_index(store: BlobStore, sealer: Sealer) -> RepositoryIndex:
    """Merge every index object; an unreadable one is Corrupt (use `check` to list them all)."""
    objects = {}
    for key, read in _read_objects(store, sealer, index_object_keys(store)):
        try:
            objects[key] = read()
        except Corrupt as e:
            raise Corrupt(f"{e.message}; {REPAIR_HINT}") from e
    return merge_objects(objects)


def read_readable_objects(
    store: BlobStore, sealer: Sealer, keys: Iterable[str]
) -> tuple[dict[str, IndexObject], dict[str, str]]:
    """(readable index objects by key, unreadable key -> why); vanished ones are skipped."""
    objects: dict[str, IndexObject] = {}
    unreadable: dict[str, str] = {}
    for key, read in _read_objects(store, sealer, keys):
        try:
            objects[key] = read()
        except NotFound:
            continue
        except Corrupt as e:
            unreadable[key] = e.message
    return objects, unreadable


def _read_objects(
    store: BlobStore, sealer: Sealer, keys: Iterable[str]
) -> Iterator[tuple[str, Callable[[], IndexObject]]]:
    """(key, the object's result) in the order of `keys`, read `READ_THREADS` at a time: on an
    object store each read is a round trip, and a command opening a repository of many index
    objects would otherwise pay them one after the other. Calling a result returns the object
    or raises what reading it raised."""
    keys = list(keys)
    if len(keys) < 2:
        for key in keys:
            yield key, functools.partial(read_index_object, store, sealer, key)
        return
    with ThreadPoolExecutor(min(READ_THREADS, len(keys)), "amber-index") as pool:
        futures = [pool.submit(read_index_object, store, sealer, key) for key in keys]
        try:
            for key, future in zip(keys, futures, strict=True):
                yield key, future.result
        finally:
            for future in futures:
                future.cancel()


def _batches(records: Sequence[PackRecord], limit: int) -> list[list[PackRecord]]:
    batches: list[list[PackRecord]] = [[]]
    entries = 0
    for record in records:
        if batches[-1] and entries + len(record.entries) > limit:
            batches.append([])
            entries = 0
        batches[-1].append(record)
        entries += len(record.entries)
    return batches


def write_index(
    store: BlobStore,
    sealer: Sealer,
    records: Sequence[PackRecord],
    *,
    supersedes: Iterable[str] = (),
    limit: int = MAX_ENTRIES_PER_OBJECT,
) -> list[str]:
    """Write `records` as index objects; the last one names the `supersedes` keys. Nothing is
    written when there are neither records nor objects to supersede."""
    replaced = sorted(d for d in map(index_digest_from_key, supersedes) if d is not None)
    if not records and not replaced:
        return []
    batches = _batches(records, limit)
    keys = []
    for position, batch in enumerate(batches):
        last = position == len(batches) - 1
        plaintext = encode_index(batch, replaced if last else ())
        sealed = sealer.seal(ObjectKind.INDEX, plaintext)
        key = index_key(content_hash(sealed))
        store.put(key, sealed)
        keys.append(key)
    return keys
