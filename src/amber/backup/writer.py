"""Writing one backup: chunks into packs, packs into the index, then the manifest.

The commit order is what makes a crash harmless:

1. packs (`data/…`): each full pack is uploaded as soon as it fills, *staged*
   (`BlobStore.stage`: a file target writes it and starts its writeback without waiting), and
   flushed — made durable and visible — right before the index object that names it;
2. index objects (`index/…`): every `index_every_packs` packs and at commit, so a long backup
   that dies midway still leaves most of its uploads indexed and reusable by the next run;
3. the manifest (`backups/<id>`), last: only now is the backup visible, and every chunk it names
   is in a pack that exists and is indexed.

An interrupted writer leaves packs no manifest references. The next writer deduplicates only
against the index, so it reuses exactly the chunks whose packs were indexed (those packs exist)
and uploads the rest again; prune later removes the orphans once they are past the grace period.

Threads: `add_chunk` may be called from several threads. The expensive, GIL-releasing steps
(keyed hash, zstd, AES-GCM) run outside the writer's mutex; only the pack bookkeeping is
serialized. The engine may also split the work itself with `Repository.chunk_id`,
`contains`, `Repository.codec.encode` and `add_encoded`.

Uploads: the thread whose chunk fills a pack takes the pack out from under the mutex (others go
on filling the next one), finishes it and uploads it: itself with `upload_threads=0`, or through
`n` upload threads with at most `n` packs in flight, waiting for a slot (backpressure, so memory
stays bounded by about `(n + adding threads + 1) * pack_size`). A pack joins the index only
once its upload has finished (uploads are *reaped* at the next call, and at commit after
waiting for all of them), so the commit order above still holds. Chunks of a pack in flight
count as known, so they are not stored twice. A failed upload fails the writer at its next call.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from amber.backup.index import RepositoryIndex, write_index
from amber.backup.layout import backup_key, is_valid_id, new_id, pack_key
from amber.backup.locks import Lock
from amber.backup.manifest import (
    BackupStats,
    ChunkMap,
    ChunkRef,
    Manifest,
    Patch,
    encode_manifest,
    validate_manifest,
)
from amber.backup.pack import EncodedBlob, PackBuilder, PackEntry, short
from amber.blobstore.base import Payload
from amber.domain.errors import AlreadyExists, FailedPrecondition, InvalidArgument

if TYPE_CHECKING:
    from amber.backup.repository import Repository

DEFAULT_INDEX_EVERY_PACKS = 32


@dataclass(frozen=True)
class ManifestDraft:
    """What the engine knows about a backup when it commits it.

    The writer adds the rest: backup id, chunk size, creation time (from the repository clock),
    and the stats it counted. `bytes_read` defaults to the plaintext bytes given to `add_chunk`.
    """

    volume_name: str
    volume_size: int
    chunk_map: Sequence[ChunkRef]
    source_snapshot: str | None = None
    parent_id: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    tags: Sequence[str] = ()
    bytes_read: int | None = None
    backup_id: str | None = None
    """The id to commit under (32 hex digits), e.g. one derived from a caller's own name so
    the backup can be found without listing; None draws a random one. The commit refuses
    an id that an existing backup already has."""
    patches: Sequence[Patch] = ()
    """Byte ranges written over the chunk map (`Manifest.patches`); none makes a version 1
    manifest."""


@dataclass
class _Counters:
    bytes_read: int = 0
    bytes_new: int = 0
    bytes_stored: int = 0
    chunks_new: int = 0
    chunks_deduplicated: int = 0
    packs_written: int = 0


@dataclass
class _Upload:
    """A finished pack on its way to the store (its bytes are held by the upload only)."""

    pack_id: bytes
    size: int
    entries: tuple[PackEntry, ...]
    key: str
    chunk_ids: frozenset[bytes]
    future: Future[None]


class BackupWriter:
    """Builds one backup. Get one from `Repository.writer()`."""

    def __init__(
        self,
        repo: Repository,
        lock: Lock | None,
        index_every_packs: int,
        upload_threads: int = 0,
        failpoint: Callable[[str], None] | None = None,
    ) -> None:
        if index_every_packs < 1:
            raise InvalidArgument("index_every_packs must be at least 1")
        if upload_threads < 0:
            raise InvalidArgument("upload_threads must not be negative")
        self._repo = repo
        self._lock = lock
        self._failpoint = failpoint or (lambda _name: None)
        self._index_every = index_every_packs
        self._known = repo.refresh_index()
        self._mutex = threading.Lock()
        self._cond = threading.Condition(self._mutex)
        self._shipping = 0  # packs detached but not yet in `_uploads`
        self._pack = PackBuilder()
        self._in_open_pack: set[bytes] = set()
        self._unindexed = RepositoryIndex()
        self._counters = _Counters()
        self._started = repo.clock()
        self._state = "open"
        self._uploads: list[_Upload] = []
        self._in_flight: set[bytes] = set()
        self._slots = threading.BoundedSemaphore(max(upload_threads, 1))
        self._executor = (
            ThreadPoolExecutor(upload_threads, thread_name_prefix="amber-upload")
            if upload_threads
            else None
        )
        self.pack_keys: list[str] = []
        self.index_keys: list[str] = []

    @property
    def stats(self) -> BackupStats:
        """Counters so far (duration excluded)."""
        c = self._counters
        return BackupStats(c.bytes_read, c.bytes_new, c.bytes_stored, c.chunks_new)

    @property
    def chunks_deduplicated(self) -> int:
        """How many added chunks were already stored."""
        return self._counters.chunks_deduplicated

    def _contains_locked(self, chunk_id: bytes) -> bool:
        return (
            chunk_id in self._known
            or chunk_id in self._unindexed
            or chunk_id in self._in_open_pack
            or chunk_id in self._in_flight
        )

    def contains(self, chunk_id: bytes) -> bool:
        """Whether the chunk is stored already or was added in this session."""
        with self._mutex:
            return self._contains_locked(chunk_id)

    def add_chunk(self, plaintext: bytes) -> bytes:
        """Store a chunk unless it is already known; return its id."""
        chunk_id = self._repo.chunk_id(plaintext)
        with self._mutex:
            self._check_open_locked()
            self._counters.bytes_read += len(plaintext)
            if self._contains_locked(chunk_id):
                self._counters.chunks_deduplicated += 1
                return chunk_id
        self.add_encoded(self._repo.codec.encode(chunk_id, plaintext))
        return chunk_id

    def add_encoded(self, blob: EncodedBlob) -> bool:
        """Add an already encoded chunk; False if it was known (then nothing is stored).

        When the chunk fills the pack, this thread finishes and ships the pack *after*
        releasing the mutex: the other threads go on filling the next pack meanwhile.
        """
        with self._mutex:
            self._check_open_locked()
            if self._contains_locked(blob.chunk_id):
                self._counters.chunks_deduplicated += 1
                return False
            with self._failing_on_error():
                self._reap_locked(wait=False)
                self._pack.add(blob)
                self._in_open_pack.add(blob.chunk_id)
                self._count_new_locked(blob)
                full = self._pack.size >= self._repo.config.pack_size
                detached = self._detach_locked() if full else None
        if detached is not None:
            self._ship_unlocked(detached)
        return True

    def _count_new_locked(self, blob: EncodedBlob) -> None:
        self._counters.chunks_new += 1
        self._counters.bytes_new += blob.raw_length
        self._counters.bytes_stored += len(blob.data)

    def publish(self) -> None:
        """Wait for the uploads in flight and make every finished pack durable and visible
        (`BlobStore.flush`), without indexing them yet: a run killed after this leaves packs
        the next run adopts instead of uploading again. The open pack stays open."""
        with self._mutex:
            self._check_open_locked()
            with self._failing_on_error():
                self._cond.wait_for(lambda: self._shipping == 0)
                self._reap_locked(wait=True)
                self._repo.store.flush()

    def flush(self) -> None:
        """Upload the open pack (if any) and index everything uploaded so far."""
        with self._mutex:
            self._check_open_locked()
            with self._failing_on_error():
                self._flush_all_locked()

    def commit(self, draft: ManifestDraft) -> str:
        """Flush the last pack, write the index, then the manifest; return the backup id.

        A draft that is inconsistent (wrong chunk count, a chunk id this repository and session
        do not hold) is InvalidArgument and changes nothing. If the writer's lock was lost, the
        commit fails with FailedPrecondition before the manifest is written.
        """
        with self._mutex:
            self._check_open_locked()
            manifest = self._manifest_locked(draft)
            with self._failing_on_error():
                self._flush_all_locked()
                if self._lock is not None:
                    self._lock.refresh()
                key = backup_key(manifest.backup_id)
                if draft.backup_id is not None and self._repo.store.exists(key):
                    raise AlreadyExists(f"a backup with id {manifest.backup_id} already exists")
                sealed = encode_manifest(manifest, self._repo.keys.sealer)
                self._repo.store.put(key, sealed)
            self._state = "committed"
            self._shutdown_locked()
            return manifest.backup_id

    def abort(self) -> None:
        """Give up: what was uploaded stays (indexed packs are reused by the next backup).

        Waits for uploads in flight, so none outlives the caller's lock."""
        with self._mutex:
            if self._state in ("open", "failed"):
                self._state = "aborted"
            self._cond.wait_for(lambda: self._shipping == 0)
            for upload in self._uploads:
                upload.future.exception()  # waits; the error no longer matters
            self._uploads.clear()
            self._shutdown_locked()

    def _shutdown_locked(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    # --- internals, all called with the mutex held ---

    def _check_open_locked(self) -> None:
        if self._state != "open":
            raise FailedPrecondition(
                f"this backup writer is {self._state}; start a new backup with a new writer"
            )

    @contextmanager
    def _failing_on_error(self) -> Iterator[None]:
        try:
            yield
        except BaseException:
            self._state = "failed"
            raise

    def _flush_all_locked(self) -> None:
        self._cond.wait_for(lambda: self._shipping == 0)
        if len(self._pack):
            self._uploads.append(self._ship(*self._detach_locked()))
            self._shipping -= 1
        self._reap_locked(wait=True)
        if self._unindexed.pack_sizes:
            self._flush_index_locked()

    def _detach_locked(self) -> tuple[PackBuilder, frozenset[bytes]]:
        """Take the open pack out for shipping; its chunks count as in flight."""
        detached = self._pack, frozenset(self._in_open_pack)
        self._pack = PackBuilder()
        self._in_open_pack = set()
        self._in_flight |= detached[1]
        self._shipping += 1
        return detached

    def _ship_unlocked(self, detached: tuple[PackBuilder, frozenset[bytes]]) -> None:
        """Ship a detached pack without holding the mutex, then record it."""
        try:
            upload = self._ship(*detached)
        except BaseException:
            with self._mutex:
                self._state = "failed"
                self._shipping -= 1
                self._cond.notify_all()
            raise
        with self._mutex:
            self._uploads.append(upload)
            self._shipping -= 1
            self._cond.notify_all()
            with self._failing_on_error():
                self._reap_locked(wait=False)

    def _ship(self, builder: PackBuilder, chunk_ids: frozenset[bytes]) -> _Upload:
        """Finish the pack and upload it: here (no upload threads), or in an upload thread
        once one of the slots is free (backpressure). Upload threads never take the mutex."""
        finished = builder.finish(self._repo.keys.sealer)
        key = pack_key(finished.pack_id)
        size, entries = finished.size, finished.entries
        future: Future[None] = Future()
        if self._executor is None:
            self._repo.store.stage(key, finished.parts)
            self._failpoint("backup.pack-staged")
            future.set_result(None)
        else:
            self._slots.acquire()
            try:
                future = self._executor.submit(self._upload, key, finished.parts)
            except BaseException:
                self._slots.release()
                raise
        return _Upload(finished.pack_id, size, entries, key, chunk_ids, future)

    def _upload(self, key: str, parts: tuple[Payload, ...]) -> None:
        try:
            self._repo.store.stage(key, parts)
            self._failpoint("backup.pack-staged")
        finally:
            self._slots.release()

    def _reap_locked(self, *, wait: bool) -> None:
        """Move finished uploads into the unindexed set (all of them, waiting, if `wait`);
        re-raise the first upload failure."""
        while self._uploads and (wait or self._uploads[0].future.done()):
            upload = self._uploads.pop(0)
            upload.future.result()
            self._in_flight -= upload.chunk_ids
            self._pack_uploaded_locked(upload.pack_id, upload.size, upload.entries, upload.key)

    def _pack_uploaded_locked(
        self, pack_id: bytes, size: int, entries: tuple[PackEntry, ...], key: str
    ) -> None:
        self._unindexed.add_pack(pack_id, size, entries)
        self._counters.packs_written += 1
        self.pack_keys.append(key)
        if self._lock is not None:
            self._lock.refresh_if_due()
        if len(self._unindexed.pack_sizes) >= self._index_every:
            self._flush_index_locked()

    def _flush_index_locked(self) -> None:
        self._repo.store.flush()  # the packs first, durable, then the index that names them
        keys = write_index(self._repo.store, self._repo.keys.sealer, self._unindexed.records())
        self._unindexed.object_keys.update(keys)
        self._known.merge(self._unindexed)
        self._unindexed = RepositoryIndex()
        self.index_keys.extend(keys)

    def _manifest_locked(self, draft: ManifestDraft) -> Manifest:
        if draft.backup_id is not None and not is_valid_id(draft.backup_id):
            raise InvalidArgument(f"backup id {draft.backup_id!r} is not 32 hex digits")
        for position, ref in enumerate(draft.chunk_map):
            if isinstance(ref, bytes) and not self._contains_locked(ref):
                raise InvalidArgument(
                    f"chunk map entry {position} names chunk {short(ref)}, which is neither in "
                    "the repository nor added in this backup"
                )
        for patch in draft.patches:
            if not self._contains_locked(patch.chunk_id):
                raise InvalidArgument(
                    f"the patch at byte {patch.offset} names chunk {short(patch.chunk_id)}, "
                    "which is neither in the repository nor added in this backup"
                )
        created = self._repo.clock()
        c = self._counters
        stats = BackupStats(
            bytes_read=c.bytes_read if draft.bytes_read is None else draft.bytes_read,
            bytes_new=c.bytes_new,
            bytes_stored=c.bytes_stored,
            chunks_new=c.chunks_new,
            duration_seconds=max(0.0, created - self._started),
        )
        manifest = Manifest(
            backup_id=draft.backup_id or new_id(),
            volume_name=draft.volume_name,
            volume_size=draft.volume_size,
            chunk_size=self._repo.chunk_size,
            chunk_map=ChunkMap.of(draft.chunk_map),
            created=created,
            source_snapshot=draft.source_snapshot,
            parent_id=draft.parent_id,
            stats=stats,
            labels=dict(draft.labels),
            tags=tuple(draft.tags),
            patches=tuple(draft.patches),
        )
        validate_manifest(manifest)
        return manifest
