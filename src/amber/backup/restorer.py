"""Restoring a backup into a new pool volume: parallel, verified, sparse, and honest about loss.

The manifest says which chunk fills each slice of the volume. Holes and zero chunks are never
written: the new image starts sparse, so they read as zeros and take no space. Data chunks are
grouped by pack and adjacent blobs are fetched with one ranged read (up to
`max_request_bytes`), `download_threads` reads at a time. Every chunk is verified on the way
(`BlobCodec.decode`: authenticated decryption, decompression, length, keyed id) before it is
written, and a chunk used at several places of the volume is fetched once. Inside a chunk,
all-zero blocks are skipped too, so the restored image maps about what the original mapped.
A manifest with patches is cut into disjoint *pieces* first (`patches.pieces`: the base
positions minus their patched bytes, plus the patches), so each byte is written once, by the
chunk that holds it; a chunk is still fetched once and then written to each of its pieces.

Damage is found and reported per byte range of the volume: a chunk the index does not know, a
pack that is missing (both found before anything is written), or a blob that fails
verification. By default any damage stops the restore and the half-written volume is removed
(the pool journals the creation); the error lists the damaged ranges. With `allow_partial`, the
rest is restored, the damaged ranges stay zero, and the report lists what was lost. A target that
cannot be reached is never "damage": it fails the restore.

The pool creates the volume (`pool.volumes.create(..., writer=...)`): the image is filled under
the volume's lock with the creation journaled, so a crash mid-restore leaves no half volume.
"""

from __future__ import annotations

import os
import threading
import time
from array import array
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from amber.backup.backuper import LABEL_FS_TYPE, LABEL_MODE
from amber.backup.chunker import is_zero
from amber.backup.crypto import Data
from amber.backup.index import IndexEntry
from amber.backup.keeper import (
    DEFAULT_LOCK_WAIT,
    LockKeeper,
    acquire,
    holder,
    release_quietly,
)
from amber.backup.layout import Clock, check_backup_id, pack_key
from amber.backup.locks import LockPurpose
from amber.backup.manifest import Manifest
from amber.backup.patches import pieces
from amber.backup.progress import NullProgress, Progress
from amber.backup.repository import Repository
from amber.domain.errors import Corrupt, NotFound
from amber.domain.models import SourceKind, VolumeMode
from amber.domain.units import MiB
from amber.pool import Pool, VolumeRequest

SPARSE_BLOCK = 64 * 1024


@dataclass(frozen=True)
class RestoreOptions:
    """How one restore runs."""

    download_threads: int = 8
    """Ranged reads in flight at once (up to twice as many are queued: the memory a restore
    holds in reads is about `2 * download_threads * max_request_bytes`, 64 MiB by default)."""
    max_request_bytes: int = 4 * MiB
    """Largest ranged read (adjacent blobs of one pack are fetched together up to this).

    8 threads of 4 MiB reads, against 4 of 8 MiB before (the same memory): in-process restores
    of the mixed volume's 1.1 GiB, page cache dropped, alternated on a loaded 2-core machine,
    took 2.9-4.8 s against 3.9-6.2 s wall for the same CPU (1.8-1.9 s); 8 threads of 8 MiB
    raised the peak RSS to 167 MB, past the 150 MB bound (docs/benchmarks.md, issue 17)."""
    allow_partial: bool = False
    """Restore what is intact, leave damaged ranges zero and report them."""
    lock_wait: float = DEFAULT_LOCK_WAIT
    """Seconds to wait for a prune holding the repository lock."""


@dataclass(frozen=True)
class DamagedRange:
    """Bytes `[start, end)` of the volume that could not be restored, and why."""

    start: int
    end: int
    reason: str


@dataclass(frozen=True)
class RestoreReport:
    """What one restore did."""

    backup_id: str
    volume: str
    size: int
    source_size: int
    chunks_written: int
    """Pieces written: one per data chunk of a backup without patches; with patches, each
    patch and each part of a chunk that no patch covers count one (`patches.pieces`)."""
    chunks_sparse: int
    """Holes and zero chunks: never written."""
    bytes_downloaded: int
    bytes_written: int
    damaged: tuple[DamagedRange, ...]
    duration_seconds: float

    @property
    def complete(self) -> bool:
        """Whether every byte was restored."""
        return not self.damaged


class _Use(NamedTuple):
    """Volume bytes `[offset, offset + length)` are the chunk's `[chunk_offset, +length)`."""

    offset: int
    chunk_offset: int
    length: int


class _Uses:
    """Where each chunk goes, in volume order: three int64s per use in one array per chunk
    (a restore of a 64 GiB volume has 262144 uses of 256 KiB chunks; an object per use would
    cost ~4x the memory)."""

    def __init__(self) -> None:
        self._by_chunk: dict[bytes, array[int]] = {}

    def add(self, chunk_id: bytes, use: _Use) -> None:
        uses = self._by_chunk.get(chunk_id)
        if uses is None:
            uses = self._by_chunk[chunk_id] = array("q")
        uses.extend(use)

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._by_chunk)

    def __len__(self) -> int:
        return len(self._by_chunk)

    def of(self, chunk_id: bytes) -> Iterator[_Use]:
        uses = self._by_chunk[chunk_id]
        for i in range(0, len(uses), 3):
            yield _Use(uses[i], uses[i + 1], uses[i + 2])

    def first(self, chunk_id: bytes) -> int:
        """The volume offset of the chunk's first use."""
        return self._by_chunk[chunk_id][0]

    def count(self, chunk_id: bytes) -> int:
        return len(self._by_chunk[chunk_id]) // 3


@dataclass(frozen=True)
class _Request:
    """One ranged read: adjacent blobs of one pack."""

    pack_id: bytes
    offset: int
    length: int
    chunks: tuple[tuple[bytes, IndexEntry], ...]


@dataclass
class _Outcome:
    damaged: dict[bytes, str] = field(default_factory=dict)
    downloaded: int = 0
    written: int = 0
    chunks: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


def restore_backup(
    pool: Pool,
    repo: Repository,
    backup_id: str,
    volume: str,
    *,
    size: int | None = None,
    options: RestoreOptions | None = None,
    progress: Progress | None = None,
    clock: Clock = time.time,
) -> RestoreReport:
    """Restore `backup_id` into a new volume `volume` (at least the backed-up size)."""
    options = options or RestoreOptions()
    progress = progress or NullProgress()
    started = clock()
    check_backup_id(backup_id)
    purpose = LockPurpose.restore(backup_id)
    holder_name = restore_holder(backup_id, volume)
    lock = acquire(repo, holder_name, wait=options.lock_wait, reader=True, purpose=purpose)
    try:
        # Every chunk is verified as it is written, so even a lost lock (a prune that ran
        # meanwhile) cannot produce a wrong volume, only reported damage.
        with LockKeeper(lock):
            manifest = repo.load_manifest(backup_id)
            restorer = Restorer(repo, manifest, options, progress)
            request = _volume_request(manifest, volume, size)
            pool.volumes.create(request, writer=restorer.write_image)
    finally:
        release_quietly(lock)
        progress.done()
    return restorer.report(volume, request.size, clock() - started)


def restore_holder(backup_id: str, volume: str) -> str:
    """The lock holder name under which this process restores `backup_id` into `volume`."""
    return holder(f"restore {backup_id} to {volume}")


def _volume_request(manifest: Manifest, volume: str, size: int | None) -> VolumeRequest:
    mode = VolumeMode(manifest.labels.get(LABEL_MODE, VolumeMode.FILESYSTEM.value))
    fs_type = manifest.labels.get(LABEL_FS_TYPE) if mode is VolumeMode.FILESYSTEM else None
    return VolumeRequest(
        name=volume,
        size=size or manifest.volume_size,
        mode=mode,
        fs_type=fs_type,
        source_kind=SourceKind.BACKUP,
        source_name=manifest.backup_id,
        source_size=manifest.volume_size,
    )


class Restorer:
    """Writes one backup's content into an image file (the pool's image writer)."""

    def __init__(
        self, repo: Repository, manifest: Manifest, options: RestoreOptions, progress: Progress
    ) -> None:
        self.repo = repo
        self.manifest = manifest
        self.options = options
        self.progress = progress
        self.outcome = _Outcome()
        self._local = threading.local()  # per download thread: the scratch chunks decrypt into
        self.uses = _Uses()
        for piece in pieces(manifest):
            self.uses.add(piece.chunk_id, _Use(piece.offset, piece.chunk_offset, piece.length))

    def write_image(self, path: Path) -> None:
        """Fill `path` (sparse, already `manifest.volume_size` bytes long)."""
        requests = self._requests()
        self._stop_if_damaged()
        total = sum(entry.raw_length for r in requests for _, entry in r.chunks)
        self.progress.phase("downloading", total, "bytes")
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            with _Writeback(fd):
                self._download(fd, requests)
            os.fsync(fd)
        finally:
            os.close(fd)
        self._stop_if_damaged()

    # -- planning -----------------------------------------------------------------------------

    def _requests(self) -> list[_Request]:
        """Locate every chunk; unknown chunks and missing packs are damage."""
        self.progress.phase("locating chunks", len(self.uses), "chunks")
        index = self.repo.locating_index(self.uses)
        stored = self.repo.list_packs()
        by_pack: dict[bytes, list[tuple[bytes, IndexEntry]]] = {}
        for chunk_id in self.uses:
            entry = index.lookup(chunk_id)
            if entry is None:
                self._damage(chunk_id, "the chunk is in no index")
            elif entry.pack_id not in stored:
                self._damage(chunk_id, f"its pack {pack_key(entry.pack_id)} is missing")
            else:
                by_pack.setdefault(entry.pack_id, []).append((chunk_id, entry))
        self.progress.advance(len(self.uses))
        requests: list[_Request] = []
        for pack_id, chunks in by_pack.items():
            requests += _coalesce(pack_id, chunks, self.options.max_request_bytes)
        # In the order of the volume: a backup packs chunks in about the order it read them,
        # so the image fills front to back and writeback stays sequential (pack-id order is
        # random, which fragmented the new image and slowed its writeback).
        requests.sort(key=lambda r: min(self.uses.first(c) for c, _ in r.chunks))
        return requests

    # -- downloading --------------------------------------------------------------------------

    def _download(self, fd: int, requests: Sequence[_Request]) -> None:
        threads = max(1, self.options.download_threads)
        slots = threading.BoundedSemaphore(threads * 2)
        pending: list[Future[None]] = []
        with ThreadPoolExecutor(threads, thread_name_prefix="amber-restore") as pool:
            for request in requests:
                if self._should_stop():
                    break
                slots.acquire()
                future = pool.submit(self._fetch, fd, request)
                future.add_done_callback(lambda _f: slots.release())
                pending.append(future)
                pending = _raise_failures(pending)
            for future in pending:
                future.result()

    def _should_stop(self) -> bool:
        return bool(self.outcome.damaged) and not self.options.allow_partial

    def _fetch(self, fd: int, request: _Request) -> None:
        key = pack_key(request.pack_id)
        try:
            data = self.repo.store.get_range(key, request.offset, request.length)
        except NotFound:
            for chunk_id, _ in request.chunks:
                self._damage(chunk_id, f"its pack {key} disappeared during the restore")
            return
        with self.outcome.lock:
            self.outcome.downloaded += len(data)
        view = memoryview(data)  # blobs are opened in place, not copied out
        scratch = self._scratch(max(entry.length for _, entry in request.chunks))
        for chunk_id, entry in request.chunks:
            start = entry.offset - request.offset
            sealed = view[start : start + entry.length]
            try:
                plaintext = self.repo.codec.decode_into(
                    entry.pack_entry(chunk_id), sealed, key, scratch
                )
            except Corrupt as e:
                self._damage(chunk_id, e.message)
                continue
            self._write(fd, chunk_id, plaintext)
            self.progress.advance(entry.raw_length)

    def _scratch(self, size: int) -> bytearray:
        """This thread's decryption buffer, at least `size` bytes (written before reuse)."""
        scratch: bytearray | None = getattr(self._local, "scratch", None)
        if scratch is None or len(scratch) < size:
            scratch = bytearray(size)
            self._local.scratch = scratch
        return scratch

    def _write(self, fd: int, chunk_id: bytes, plaintext: Data) -> None:
        written = 0
        for use in self.uses.of(chunk_id):
            data = plaintext
            if use.chunk_offset or use.length != len(plaintext):
                data = memoryview(plaintext)[use.chunk_offset : use.chunk_offset + use.length]
            for start, piece in _nonzero_runs(data):
                os.pwrite(fd, piece, use.offset + start)
                written += len(piece)
        with self.outcome.lock:
            self.outcome.written += written
            self.outcome.chunks += self.uses.count(chunk_id)

    # -- damage -------------------------------------------------------------------------------

    def _damage(self, chunk_id: bytes, reason: str) -> None:
        with self.outcome.lock:
            self.outcome.damaged.setdefault(chunk_id, reason)

    def damaged_ranges(self) -> list[DamagedRange]:
        """The damaged byte ranges of the volume, merged where adjacent with the same reason."""
        ranges = sorted(
            (use.offset, use.offset + use.length, reason)
            for chunk_id, reason in self.outcome.damaged.items()
            for use in self.uses.of(chunk_id)
        )
        merged: list[DamagedRange] = []
        for start, end, reason in ranges:
            last = merged[-1] if merged else None
            if last is not None and last.end == start and last.reason == reason:
                merged[-1] = DamagedRange(last.start, end, reason)
            else:
                merged.append(DamagedRange(start, end, reason))
        return merged

    def _stop_if_damaged(self) -> None:
        if self.outcome.damaged and not self.options.allow_partial:
            raise Corrupt(
                f"backup {self.manifest.backup_id} cannot be restored whole: "
                f"{describe_damage(self.damaged_ranges())}; nothing was restored "
                "(restore the rest with --allow-partial; `amber backup check --read-data` "
                "lists all damage)"
            )

    def report(self, volume: str, size: int, duration: float) -> RestoreReport:
        """The summary once `write_image` has run."""
        positions = len(self.manifest.chunk_map)
        data_positions = sum(isinstance(ref, bytes) for ref in self.manifest.chunk_map)
        return RestoreReport(
            backup_id=self.manifest.backup_id,
            volume=volume,
            size=size,
            source_size=self.manifest.volume_size,
            chunks_written=self.outcome.chunks,
            chunks_sparse=positions - data_positions,
            bytes_downloaded=self.outcome.downloaded,
            bytes_written=self.outcome.written,
            damaged=tuple(self.damaged_ranges()),
            duration_seconds=duration,
        )


class _Writeback:
    """Starts the kernel writing back what the restore wrote, every `period` seconds, from a
    thread of its own, and drops the written pages from the cache.

    Without it the final fsync would write the whole volume at once, after the downloads; with
    a `POSIX_FADV_DONTNEED` per chunk from the download threads (an earlier design) each
    thread paid for starting writeback of its megabyte and the restore took twice as long
    (3.6-5.4 s against 2.5-2.6 s for the benchmark's 1.9 GiB, in-process, measured while it
    was developed; `bench/engine_parts.py` times the restore as it is now). DONTNEED starts
    asynchronous writeback of the dirty pages in the range and drops the clean ones, which
    also keeps a restore from pushing the node's hot data out of the page cache.
    """

    def __init__(self, fd: int, period: float = 0.2) -> None:
        self._fd = fd
        self._period = period
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="amber-writeback", daemon=True)

    def __enter__(self) -> _Writeback:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self._period):
            os.posix_fadvise(self._fd, 0, 0, os.POSIX_FADV_DONTNEED)


def describe_damage(ranges: Sequence[DamagedRange], limit: int = 5) -> str:
    """`N damaged range(s) (X bytes): bytes a-b (reason); …` for messages."""
    total = sum(r.end - r.start for r in ranges)
    shown = "; ".join(f"bytes {r.start}-{r.end} ({r.reason})" for r in ranges[:limit])
    more = f"; and {len(ranges) - limit} more" if len(ranges) > limit else ""
    return f"{len(ranges)} damaged range(s), {total} bytes: {shown}{more}"


def _raise_failures(pending: list[Future[None]]) -> list[Future[None]]:
    """Re-raise the first failed download (e.g. the target became unreachable); drop finished
    ones."""
    still = []
    for future in pending:
        if future.done():
            future.result()
        else:
            still.append(future)
    return still


def _coalesce(
    pack_id: bytes, chunks: list[tuple[bytes, IndexEntry]], limit: int
) -> Iterator[_Request]:
    """Adjacent blobs of one pack (in offset order) as ranged reads of at most `limit` bytes;
    a gap of up to 64 KiB is read through rather than split."""
    chunks = sorted(chunks, key=lambda c: c[1].offset)
    group: list[tuple[bytes, IndexEntry]] = []
    for chunk in chunks:
        entry = chunk[1]
        if group:
            start = group[0][1].offset
            gap = entry.offset - (group[-1][1].offset + group[-1][1].length)
            if gap > SPARSE_BLOCK or entry.offset + entry.length - start > limit:
                yield _request(pack_id, group)
                group = []
        group.append(chunk)
    if group:
        yield _request(pack_id, group)


def _request(pack_id: bytes, group: list[tuple[bytes, IndexEntry]]) -> _Request:
    start = group[0][1].offset
    end = group[-1][1].offset + group[-1][1].length
    return _Request(pack_id, start, end - start, tuple(group))


def _nonzero_runs(data: Data) -> Iterator[tuple[int, memoryview]]:
    """(offset, view) of the runs of `SPARSE_BLOCK` blocks that are not all zero.

    Views, not copies: a chunk is written without copying it again. A block is compared with
    zeros only when its first byte is zero (data blocks rarely start with one), and then as
    bytes: comparing a memoryview with bytes goes element by element (~50x slower than the
    copy and memcmp)."""
    view = memoryview(data)
    run_start = None
    for offset in range(0, len(view), SPARSE_BLOCK):
        zero = view[offset] == 0 and is_zero(view[offset : offset + SPARSE_BLOCK].tobytes())
        if zero and run_start is not None:
            yield run_start, view[run_start:offset]
            run_start = None
        elif not zero and run_start is None:
            run_start = offset
    if run_start is not None:
        yield run_start, view[run_start:]
