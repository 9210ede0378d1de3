"""Backing up a snapshot: plan by extent maps, then read, hash, compress and upload in threads.

**Plan.** The snapshot image is cut into the repository's aligned chunks (`chunker`). Chunks
that overlap no mapped range (SEEK_DATA) are holes and are never read. If the pair (volume,
target) has a usable *base* (`state`: the last backup's manifest and a reflink copy of the
snapshot it read), the extent maps of the base image and the new snapshot are compared
(`extents`): a chunk mapped to the same physical blocks is unchanged, and its id is taken from
the base manifest without reading a byte. A changed chunk whose changed bytes are few is
*patched*: only its changed ranges are read and stored, as patches over the base's chunk
(`patches`, manifest format version 2); the others are read whole. Without a usable base
(first backup, base image or base backup gone, another repository, a re-created volume, a pool
without reflink, a different chunk size) every data chunk is read and hashed, and deduplication
against the repository index uploads only what is new: the fallback costs reading time, never
upload.

**Pipeline.** One reader thread preads the chunks to read, in order, into a bounded queue,
while a prefetcher asks the kernel for the chunks (or patch ranges) ahead of it (`read_ahead`);
`hash_threads` workers take them, drop all-zero chunks, compute the keyed chunk id, skip chunks
the repository (or this backup) already holds, and compress + seal the rest; the writer packs
them. The worker whose chunk fills a pack takes it out of the writer and uploads it (or hands it
to `upload_threads` upload threads) while the other workers go on hashing into the next pack.
Every stage blocks when the next is full, so memory is bounded by the queue (`queue_chunks`
chunks), a chunk per worker and `hash_threads + upload_threads + 1` packs, whatever the volume
size. pread, BLAKE3, zstd and the store's writes release the GIL (AES-GCM holds it, briefly),
so the threads really run in parallel. (On 2 cores, 3 workers that write the packs they fill:
a sampling profile showed 2 workers waiting on the queue and on their pack writes for a
quarter of the time; separate upload threads cost a pack of memory each for no gain, see
docs/backup.md.)

**Commit and crash safety.** Packs, then index objects (every `index_every_packs` packs), then
the manifest (`amber.backup.writer`). Only after the manifest exists does the base move to the
new snapshot. A run that dies leaves a marker in the state store; the next run of the pair then
*adopts* what it left: on a file target it first publishes the staged packs the killed run never
flushed (`amber.backup.leftovers`), then it reads the headers of the packs no index lists and
indexes them, so everything a killed backup uploaded is reused, not only what had been indexed.
A run that fails cleanly indexes what it uploaded before it gives up; if even that fails (the
target went away), the marker stays and the next run adopts.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from amber.backup.chunker import ChunkGrid, chunks_with_data, is_zero, read_exactly
from amber.backup.extents import Changes, changed_chunks
from amber.backup.keeper import (
    DEFAULT_LOCK_WAIT,
    LockKeeper,
    acquire,
    holder,
    release_quietly,
    remove_dead_local_locks,
)
from amber.backup.layout import Clock
from amber.backup.leftovers import adopt_leftover_packs, adopt_unindexed_packs
from amber.backup.locks import BACKUP, LockPurpose
from amber.backup.manifest import HOLE, ZERO, ChunkRef, Manifest, Patch
from amber.backup.patches import (
    ByteRange,
    PatchPolicy,
    by_position,
    coalesce,
    overlay,
    should_patch,
    subtract,
)
from amber.backup.progress import NullProgress, Progress
from amber.backup.repository import Repository
from amber.backup.state import BackupState, BaseRecord
from amber.backup.writer import BackupWriter, ManifestDraft
from amber.domain.errors import AmberError, Corrupt, InvalidArgument, NotFound
from amber.domain.models import Snapshot
from amber.pool import Pool
from amber.system.ioctl import fiemap

SYSTEM_LABEL_PREFIX = "amber/"
LABEL_MODE = "amber/mode"
LABEL_FS_TYPE = "amber/fs-type"
LABEL_VOLUME_UID = "amber/volume-uid"

log = logging.getLogger(__name__)

MODE_EXTENT_MAP = "extent-map"
MODE_FULL_READ = "full-read"


def no_failpoint(_name: str) -> None:
    """The production failpoint: does nothing."""


@dataclass(frozen=True)
class BackupOptions:
    """How one backup runs (defaults suit a 2-core node)."""

    labels: Mapping[str, str] = field(default_factory=dict)
    """User labels stored in the manifest (keys starting with `amber/` are reserved)."""
    tags: Sequence[str] = ()
    """Tags stored in the manifest (prune can keep tagged backups)."""
    hash_threads: int = 3
    """Workers that hash, compress and encrypt chunks (and upload the packs they fill). One
    more than the 2 cores Amber targets: a worker waits while it writes the pack it filled,
    and the third keeps both cores compressing meanwhile."""
    upload_threads: int = 0
    """Extra upload threads; 0 = the worker that fills a pack uploads it, while the others go
    on hashing. Each extra thread lets one more pack (16 MiB) wait in memory."""
    queue_chunks: int = 8
    """Chunks read ahead of the workers (the disk's pauses are absorbed here)."""
    index_every_packs: int = 16
    """Write an index object every this many packs, so a killed run leaves them reusable."""
    use_extent_map: bool = True
    """Compare extent maps with the base; False always reads every data chunk."""
    lock_wait: float = DEFAULT_LOCK_WAIT
    """Seconds to wait for a prune holding the repository lock."""
    backup_id: str | None = None
    """Commit under this id (32 hex digits) instead of a random one; AlreadyExists if taken."""
    patch_policy: PatchPolicy = field(default_factory=PatchPolicy)
    """When an extent-map incremental stores a changed chunk's changed bytes as patches
    instead of reading the whole chunk."""


@dataclass(frozen=True)
class BackupReport:
    """What one backup did."""

    backup_id: str
    target: str
    volume: str
    snapshot: str
    size: int
    mode: str
    """`extent-map` (only changed chunks read) or `full-read`."""
    fallback_reason: str | None
    """Why the extent map could not be used (None in extent-map mode)."""
    parent_id: str | None
    chunks_total: int
    chunks_hole: int
    chunks_unchanged: int
    """Chunks skipped by the extent map (never read)."""
    chunks_read: int
    chunks_zero: int
    chunks_deduplicated: int
    chunks_new: int
    bytes_read: int
    bytes_new: int
    bytes_stored: int
    packs_written: int
    packs_adopted: int
    """Packs left by an interrupted run that this run indexed and reused."""
    duration_seconds: float
    chunks_patched: int = 0
    """Changed chunks of which only the changed ranges were read (stored as patches)."""
    patches: int = 0
    """Patches in the new manifest (this run's and those carried from the base)."""


class _Read(NamedTuple):
    """Bytes `[start, end)` of the image for chunk `position`: the whole chunk, or a patch."""

    position: int
    start: int
    end: int
    whole: bool


@dataclass
class _Base:
    record: BaseRecord
    manifest: Manifest


@dataclass
class _Plan:
    grid: ChunkGrid
    refs: list[ChunkRef | None]
    reads: list[_Read]
    mode: str
    reason: str | None
    parent_id: str | None
    holes: int = 0
    unchanged: int = 0
    patched: int = 0
    kept: dict[int, list[Patch]] = field(default_factory=dict)
    """Per position: the base's patches that stay visible."""
    patch_ranges: dict[int, list[ByteRange]] = field(default_factory=dict)
    """Per patched position: the ranges this run reads and stores as patches."""
    patch_ids: dict[int, bytes] = field(default_factory=dict)
    """Start of each patch range -> the chunk id the pipeline stored it as."""
    _final: list[Patch] | None = None

    def final_patches(self) -> list[Patch]:
        """The new manifest's patches (once the pipeline has run)."""
        if self._final is not None:
            return self._final
        result: list[Patch] = []
        for index in sorted(self.kept.keys() | self.patch_ranges.keys()):
            new = [
                Patch(start, end - start, self.patch_ids[start])
                for start, end in self.patch_ranges.get(index, ())
            ]
            result += overlay(self.kept.get(index, ()), new)
        self._final = result
        return result


@dataclass(frozen=True)
class _PlanInput:
    base_map: Sequence[ChunkRef]
    old_patches: dict[int, list[Patch]]
    changes: Changes
    has_data: bytearray
    writer: BackupWriter


def reading_phase(mode: str) -> str:
    """What the reading phase is called: only an incremental reads *changed* chunks."""
    if mode == MODE_EXTENT_MAP:
        return "reading changed chunks"
    return "reading every chunk (full backup)"


@dataclass
class _Counters:
    read: int = 0
    zero: int = 0
    dedup: int = 0
    bytes_read: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, *, read: int = 0, zero: int = 0, dedup: int = 0, nbytes: int = 0) -> None:
        with self.lock:
            self.read += read
            self.zero += zero
            self.dedup += dedup
            self.bytes_read += nbytes


def check_labels(labels: Mapping[str, str]) -> None:
    """User labels must not use the reserved `amber/` prefix."""
    reserved = sorted(k for k in labels if k.startswith(SYSTEM_LABEL_PREFIX))
    if reserved:
        raise InvalidArgument(
            f"label(s) {', '.join(reserved)} use the reserved prefix {SYSTEM_LABEL_PREFIX!r}"
        )


def backup_snapshot(
    pool: Pool,
    repo: Repository,
    target: str,
    snapshot_name: str,
    *,
    options: BackupOptions | None = None,
    progress: Progress | None = None,
    clock: Clock = time.time,
    failpoint: Callable[[str], None] = no_failpoint,
) -> BackupReport:
    """Back up one pool snapshot to an open repository; return what it did."""
    options = options or BackupOptions()
    progress = progress or NullProgress()
    check_labels(options.labels)
    snapshot = pool.snapshots.get(snapshot_name)
    with BackupState(pool, clock) as state, state.hold(snapshot.volume_name, target):
        name = holder(f"backup {snapshot.volume_name} ({snapshot.name})")
        lock = acquire(
            repo,
            name,
            wait=options.lock_wait,
            on_wait=_waiting(progress),
            purpose=LockPurpose(BACKUP),
        )
        try:
            with LockKeeper(lock) as keeper:
                job = _Job(
                    pool=pool,
                    repo=repo,
                    state=state,
                    target=target,
                    snapshot=snapshot,
                    options=options,
                    progress=progress,
                    clock=clock,
                )
                return job.run(keeper, failpoint)
        finally:
            release_quietly(lock)
            progress.done()


def _waiting(progress: Progress) -> Callable[[str], None]:
    def note(reason: str) -> None:
        progress.phase(f"waiting for the repository lock ({reason})", None, "checks")

    return note


class _Job:
    """One backup run with the pair and the repository lock held."""

    def __init__(
        self,
        *,
        pool: Pool,
        repo: Repository,
        state: BackupState,
        target: str,
        snapshot: Snapshot,
        options: BackupOptions,
        progress: Progress,
        clock: Clock,
    ) -> None:
        self.pool = pool
        self.repo = repo
        self.state = state
        self.target = target
        self.snapshot = snapshot
        self.options = options
        self.progress = progress
        self.clock = clock
        self.counters = _Counters()

    def run(self, keeper: LockKeeper, failpoint: Callable[[str], None]) -> BackupReport:
        started = self.clock()
        volume = self.snapshot.volume_name
        adopted = 0
        if self.state.begin_run(volume, self.target):
            self.progress.phase("indexing packs of an interrupted backup", None, "packs")
            remove_dead_local_locks(self.repo)  # the killed run's: its staged packs are free
            adopt_leftover_packs(self.repo, keeper.lock.info.lock_id)
            adopted = adopt_unindexed_packs(self.repo)
        writer = self.repo.writer(
            keeper.lock,
            self.options.index_every_packs,
            self.options.upload_threads,
            failpoint=failpoint,
        )
        try:
            backup_id, plan = self._write(writer, keeper, failpoint)
        except BaseException:
            if _give_up(writer):
                self.state.end_run(volume, self.target)
            raise
        failpoint("backup.committed")
        self._install_base(backup_id, plan.grid.size)
        failpoint("backup.base-installed")
        self.state.end_run(volume, self.target)
        return self._report(backup_id, plan, writer, adopted, self.clock() - started)

    def _write(
        self, writer: BackupWriter, keeper: LockKeeper, failpoint: Callable[[str], None]
    ) -> tuple[str, _Plan]:
        with open(self.snapshot.image, "rb") as image:
            fd = image.fileno()
            grid = ChunkGrid(os.fstat(fd).st_size, self.repo.chunk_size)
            self.progress.phase("comparing extent maps", None, "chunks")
            plan = self._plan(fd, grid, writer)
            failpoint("backup.planned")
            total = sum(read.end - read.start for read in plan.reads)
            self.progress.phase(reading_phase(plan.mode), total, "bytes")
            pipeline = _Pipeline(self, writer, fd, grid, keeper)
            pipeline.run(plan)
            writer.publish()
        failpoint("backup.uploaded")
        keeper.check()
        self.progress.phase("committing", None, "objects")
        draft = ManifestDraft(
            volume_name=self.snapshot.volume_name,
            volume_size=grid.size,
            chunk_map=[ref if ref is not None else HOLE for ref in plan.refs],
            patches=plan.final_patches(),
            source_snapshot=self.snapshot.name,
            parent_id=plan.parent_id,
            labels={**self.options.labels, **self._system_labels()},
            tags=tuple(self.options.tags),
            bytes_read=self.counters.bytes_read,
            backup_id=self.options.backup_id,
        )
        if any(ref is None for ref in plan.refs):
            raise AssertionError("the pipeline left chunks without a reference")
        return writer.commit(draft), plan

    def _system_labels(self) -> dict[str, str]:
        labels = {
            LABEL_MODE: self.snapshot.mode.value,
            LABEL_VOLUME_UID: self.snapshot.volume_uid,
        }
        if self.snapshot.fs_type:
            labels[LABEL_FS_TYPE] = self.snapshot.fs_type
        return labels

    # -- planning ---------------------------------------------------------------------------

    def _plan(self, fd: int, grid: ChunkGrid, writer: BackupWriter) -> _Plan:
        base, reason, parent_id = self._base(grid)
        plan = _Plan(
            grid=grid,
            refs=[None] * grid.count,
            reads=[],
            mode=MODE_EXTENT_MAP if base else MODE_FULL_READ,
            reason=reason,
            parent_id=parent_id,
        )
        given = _PlanInput(
            base_map=base.manifest.chunk_map if base else (),
            old_patches=by_position(base.manifest.patches, grid.chunk_size) if base else {},
            changes=self._changes(fd, grid, base) if base else Changes(bytearray(grid.count)),
            has_data=chunks_with_data(fd, grid),
            writer=writer,
        )
        for index in range(grid.count):
            self._plan_chunk(plan, given, index)
        return plan

    def _plan_chunk(self, plan: _Plan, given: _PlanInput, index: int) -> None:
        """Keep chunk `index` from the base, patch it, call it a hole, or read it whole."""
        ref = given.base_map[index] if index < len(given.base_map) else None
        old = given.old_patches.get(index, [])
        ids = [p.chunk_id for p in old] if old else []
        if isinstance(ref, bytes):
            ids.append(ref)
        usable = ref is not None and all(given.writer.contains(i) for i in ids)
        if usable and given.changes.same[index]:
            plan.refs[index] = ref
            if old:
                plan.kept[index] = old
            plan.holes += ref == HOLE and not old
            plan.unchanged += ref != HOLE or bool(old)
        elif not given.has_data[index]:
            plan.refs[index] = HOLE
            plan.holes += 1
        else:
            self._plan_changed(plan, index, ref if usable else None, old, given)

    def _plan_changed(
        self,
        plan: _Plan,
        index: int,
        ref: ChunkRef | None,
        old: list[Patch],
        given: _PlanInput,
    ) -> None:
        """Patch changed chunk `index` over its usable base `ref`, or read it whole."""
        ranges = given.changes.ranges.get(index)
        start, end = plan.grid.range(index)
        if ref is not None and ranges and self._patchable(end - start, ranges, old):
            coalesced = coalesce(ranges, self.options.patch_policy.coalesce_gap)
            plan.refs[index] = ref
            plan.kept[index] = subtract(old, coalesced)
            plan.patch_ranges[index] = coalesced
            plan.reads += [_Read(index, a, b, whole=False) for a, b in coalesced]
            plan.patched += 1
        else:
            plan.reads.append(_Read(index, start, end, whole=True))

    def _patchable(self, length: int, ranges: list[ByteRange], old: list[Patch]) -> bool:
        policy = self.options.patch_policy
        return should_patch(length, coalesce(ranges, policy.coalesce_gap), old, policy)

    def _changes(self, fd: int, grid: ChunkGrid, base: _Base) -> Changes:
        old = base.manifest
        comparable = (
            grid.count if old.volume_size == grid.size else old.volume_size // grid.chunk_size
        )
        with open(base.record.image, "rb") as base_image:
            return changed_chunks(fiemap(base_image.fileno()), fiemap(fd), grid, comparable)

    def _base(self, grid: ChunkGrid) -> tuple[_Base | None, str | None, str | None]:
        """(usable base, why not, parent backup id)."""
        record = self.state.get(self.snapshot.volume_name, self.target)
        if record is None:
            return None, "no earlier backup of this volume to this target", None
        if record.repository_id != self.repo.config.repository_id:
            return None, "the target now holds another repository", None
        try:
            manifest = self.repo.load_manifest(record.backup_id)
        except (NotFound, Corrupt) as e:
            return None, f"the base backup cannot be used: {e.message}", None
        parent = manifest.backup_id
        reason = self._base_problem(record, manifest, grid)
        if reason is not None:
            return None, reason, parent
        return _Base(record, manifest), None, parent

    def _base_problem(self, record: BaseRecord, manifest: Manifest, grid: ChunkGrid) -> str | None:
        if not self.options.use_extent_map:
            return "extent maps were turned off"
        if not self.pool.ctx.reflink:
            return "the pool has no reflink, so snapshots share no extents"
        if record.volume_uid != self.snapshot.volume_uid:
            return "the volume was deleted and created again since the base backup"
        if not record.image.exists():
            return f"the base image {record.image} is gone"
        if manifest.chunk_size != grid.chunk_size or manifest.volume_name != record.volume:
            return "the base backup's manifest does not match this volume"
        return None

    # -- after the commit -------------------------------------------------------------------

    def _install_base(self, backup_id: str, size: int) -> None:
        volume = self.snapshot.volume_name
        if not self.pool.ctx.reflink:
            self.state.forget(volume, self.target)
            return
        record = BaseRecord(
            volume=volume,
            target=self.target,
            repository_id=self.repo.config.repository_id,
            volume_uid=self.snapshot.volume_uid,
            snapshot=self.snapshot.name,
            snapshot_uid=self.snapshot.uid,
            backup_id=backup_id,
            image=self.snapshot.image,
            size=size,
            created=self.clock(),
        )
        try:
            self.state.install(record, self.snapshot.image)
        except (AmberError, OSError) as e:
            # The backup is committed; without a base the next one reads everything once.
            log.warning("backup %s committed, but its base image was not kept: %s", backup_id, e)
            self.state.forget(volume, self.target)

    def _report(
        self, backup_id: str, plan: _Plan, writer: BackupWriter, adopted: int, duration: float
    ) -> BackupReport:
        stats, c = writer.stats, self.counters
        return BackupReport(
            backup_id=backup_id,
            target=self.target,
            volume=self.snapshot.volume_name,
            snapshot=self.snapshot.name,
            size=plan.grid.size,
            mode=plan.mode,
            fallback_reason=plan.reason,
            parent_id=plan.parent_id,
            chunks_total=plan.grid.count,
            chunks_hole=plan.holes,
            chunks_unchanged=plan.unchanged,
            chunks_read=c.read,
            chunks_zero=c.zero,
            chunks_deduplicated=c.dedup,
            chunks_new=stats.chunks_new,
            bytes_read=c.bytes_read,
            bytes_new=stats.bytes_new,
            bytes_stored=stats.bytes_stored,
            packs_written=len(writer.pack_keys),
            packs_adopted=adopted,
            duration_seconds=duration,
            chunks_patched=plan.patched,
            patches=len(plan.final_patches()),
        )


def _give_up(writer: BackupWriter) -> bool:
    """Index what was uploaded (best effort), then abort: the next run reuses it. False when
    the indexing failed too (e.g. the target is down): then the run stays marked as
    interrupted, and the next one adopts the packs this one uploaded."""
    indexed = True
    try:
        writer.flush()
    except AmberError:
        indexed = False
    writer.abort()
    return indexed


_DONE = None
_DROP_EVERY = 16 * 1024 * 1024
_READ_AHEAD = 32
"""Chunks' worth of bytes the prefetcher asks the kernel for ahead of the reader."""
_MAX_READ_AHEAD = 512
"""Most reads the prefetcher runs ahead (a patched incremental's reads are 4-16 KiB: 32 of
them left the disk idle between small random reads)."""


def _access_advice(plan: _Plan) -> int:
    """SEQUENTIAL (larger kernel readahead) for a full read; RANDOM for an incremental, whose
    scattered reads the prefetcher announces exactly: readahead around a 4 KiB patch read
    would read what no one asked for."""
    return os.POSIX_FADV_SEQUENTIAL if plan.mode == MODE_FULL_READ else os.POSIX_FADV_RANDOM


def read_ahead(reads: Sequence[_Read], chunk_size: int) -> int:
    """How many reads the prefetcher may run ahead: `_READ_AHEAD` chunks' worth of bytes in
    reads of the plan's average size, at least `_READ_AHEAD`, at most `_MAX_READ_AHEAD`."""
    if not reads:
        return _READ_AHEAD
    average = sum(read.end - read.start for read in reads) / len(reads)
    return max(_READ_AHEAD, min(_MAX_READ_AHEAD, int(_READ_AHEAD * chunk_size / average)))


class _Pipeline:
    """The reader thread, the hashing workers and (inside the writer) the uploaders."""

    def __init__(
        self, job: _Job, writer: BackupWriter, fd: int, grid: ChunkGrid, keeper: LockKeeper
    ) -> None:
        self.repo = job.repo
        self.writer = writer
        self.fd = fd
        self.grid = grid
        self.counters = job.counters
        self.progress = job.progress
        self.options = job.options
        self.keeper = keeper
        self.queue: queue.Queue[tuple[_Read, bytes] | None] = queue.Queue(
            maxsize=max(1, self.options.queue_chunks)
        )
        self.stop = threading.Event()
        self.ahead = threading.Semaphore(_READ_AHEAD)  # reads the prefetcher may run ahead
        self.errors: list[BaseException] = []

    def run(self, plan: _Plan) -> None:
        """Fill `plan.refs` (`plan.patch_ids`) for every whole chunk (patch) in `plan.reads`;
        raise the first failure."""
        if not plan.reads:
            return
        self.ahead = threading.Semaphore(read_ahead(plan.reads, self.grid.chunk_size))
        workers = max(1, self.options.hash_threads)
        threads = [
            threading.Thread(target=self._guard, args=(self._read, plan, workers)),
            threading.Thread(target=self._guard, args=(self._prefetch, plan, 0)),
        ]
        threads += [
            threading.Thread(target=self._guard, args=(self._work, plan, 0)) for _ in range(workers)
        ]
        for thread in threads:
            thread.daemon = True
            thread.start()
        for thread in threads:
            while thread.is_alive():
                thread.join(timeout=0.5)
                if self.keeper.error is not None:
                    self.stop.set()
        if self.errors:
            raise self.errors[0]
        self.keeper.check()

    def _guard(self, fn: Callable[[_Plan, int], None], plan: _Plan, arg: int) -> None:
        try:
            fn(plan, arg)
        except BaseException as e:
            self.errors.append(e)
            self.stop.set()

    def _put(self, item: tuple[_Read, bytes] | None) -> bool:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.2)
            except queue.Full:
                continue
            return True
        return False

    def _read(self, plan: _Plan, workers: int) -> None:
        os.posix_fadvise(self.fd, 0, 0, _access_advice(plan))
        dropped = 0  # the snapshot's pages before this offset were dropped from the cache
        for read in plan.reads:
            start, end = read.start, read.end
            data = read_exactly(self.fd, end - start, start)
            self.ahead.release()
            # The snapshot is read once: do not let it push the node's hot data out of the
            # cache (every 16 MiB: a call per chunk cost more than the dropping itself).
            if end - dropped >= _DROP_EVERY:
                os.posix_fadvise(self.fd, dropped, end - dropped, os.POSIX_FADV_DONTNEED)
                dropped = end
            if not self._put((read, data)):
                return
        os.posix_fadvise(self.fd, dropped, 0, os.POSIX_FADV_DONTNEED)
        for _ in range(workers):
            self._put(_DONE)

    def _prefetch(self, plan: _Plan, _unused: int) -> None:
        """Ask the kernel to start reading each chunk, at most `_READ_AHEAD` chunks ahead of
        the reader. The kernel's own readahead (128 KiB windows on a loop device) left each 1
        MiB read waiting for the disk, and an incremental's scattered chunks get none; and
        WILLNEED blocks while it submits the reads, so it runs here, not in the reader (where
        it took a fifth of the reader's time and starved the workers)."""
        for read in plan.reads:
            while not self.ahead.acquire(timeout=0.2):
                if self.stop.is_set():
                    return
            if self.stop.is_set():
                return
            os.posix_fadvise(self.fd, read.start, read.end - read.start, os.POSIX_FADV_WILLNEED)

    def _work(self, plan: _Plan, _unused: int) -> None:
        while not self.stop.is_set():
            try:
                item = self.queue.get(timeout=0.2)
            except queue.Empty:
                continue
            if item is _DONE:
                return
            read, data = item
            if read.whole:
                plan.refs[read.position] = self._store(data)
            else:
                plan.patch_ids[read.start] = self._store_patch(data)
            self.progress.advance(len(data))

    def _store(self, data: bytes) -> ChunkRef:
        if is_zero(data):
            self.counters.add(read=1, zero=1, nbytes=len(data))
            return ZERO
        chunk_id = self.repo.chunk_id(data)
        known = self.writer.contains(chunk_id) or not self.writer.add_encoded(
            self.repo.codec.encode(chunk_id, data)
        )
        self.counters.add(read=1, dedup=int(known), nbytes=len(data))
        return chunk_id

    def _store_patch(self, data: bytes) -> bytes:
        """A patch's bytes as a chunk, even when they are zeros (they overwrite the base)."""
        chunk_id = self.repo.chunk_id(data)
        known = self.writer.contains(chunk_id) or not self.writer.add_encoded(
            self.repo.codec.encode(chunk_id, data)
        )
        self.counters.add(dedup=int(known), nbytes=len(data))
        return chunk_id
