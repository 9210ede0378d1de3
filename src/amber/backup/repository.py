"""Creating and opening repositories, and the read side of an open one.

`init_repository` writes a key slot and then the `config` (the config last, so a half-made
repository has no config and is not mistaken for one). `open_repository` reads the config,
refuses unknown format versions, unlocks the master key with the given password or key file,
derives the working keys and authenticates the config. Given a `KeyCache`, it first tries the
key remembered there (`amber.backup.keycache`), which spares a password's scrypt.

A `Repository` is the open handle the engine works with: it reads chunks (verified), manifests
and the index, hands out `BackupWriter`s and locks, and rebuilds the index from pack headers.
It holds the index in memory once loaded; `refresh_index()` reloads it when index objects came
or went (a writer does this when it starts).

Locking is the caller's job and follows one rule: hold a shared lock (`repo.lock(holder)`) for
the whole of a backup, restore, check or rebuild, and pass it to `writer()`; prune takes an
exclusive lock itself. A process that skips the lock may race a prune on another node.
"""

from __future__ import annotations

import hmac
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from amber.backup import keys as keyslots
from amber.backup.config import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_COMPRESSION_LEVEL,
    DEFAULT_PACK_SIZE,
    RepositoryConfig,
    parse_config,
)
from amber.backup.crypto import (
    ENCRYPTION_AES,
    ENCRYPTION_MODES,
    ENCRYPTION_NONE,
    RepositoryKeys,
    keys_from_master,
    keys_without_encryption,
    random_key,
)
from amber.backup.index import (
    IndexEntry,
    RepositoryIndex,
    index_object_keys,
    load_index,
    merge_objects,
    read_readable_objects,
    write_index,
)
from amber.backup.keycache import CachedKey, KeyCache
from amber.backup.keys import Credentials, ScryptParams
from amber.backup.layout import (
    BACKUPS_PREFIX,
    CONFIG_KEY,
    DATA_PREFIX,
    KEYS_PREFIX,
    Clock,
    backup_key,
    id_from_key,
    key_slot_key,
    new_id,
    pack_id_from_key,
    pack_key,
)
from amber.backup.locks import DEFAULT_LOCK_TTL, Lock, LockInfo, LockKind, LockTable
from amber.backup.manifest import Manifest, decode_manifest
from amber.backup.pack import BlobCodec, read_pack_header, short
from amber.backup.writer import DEFAULT_INDEX_EVERY_PACKS, BackupWriter
from amber.blobstore.base import BlobInfo, BlobStore
from amber.domain.errors import (
    AlreadyExists,
    Corrupt,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)


@dataclass(frozen=True)
class RebuildResult:
    """What `rebuild_index` found and wrote."""

    packs_indexed: int
    chunks_indexed: int
    index_objects_written: tuple[str, ...]
    index_objects_removed: tuple[str, ...]
    unreadable_packs: tuple[str, ...]
    """Packs whose header cannot be read, with why."""
    unreadable_index_objects: tuple[str, ...] = ()
    """Old index objects that could not be read (replaced all the same), with why."""
    packs_kept_from_index: tuple[str, ...] = ()
    """Packs with an unreadable header whose entries a readable old index object still gave
    (their chunks may be intact; `check --read-data` tells)."""


class Repository:
    """An open backup repository on a `BlobStore`."""

    def __init__(
        self,
        store: BlobStore,
        config: RepositoryConfig,
        keys: RepositoryKeys,
        clock: Clock,
        master_key: bytes | None = None,
    ) -> None:
        self.store = store
        self.config = config
        self.keys = keys
        self.clock = clock
        self.codec = BlobCodec(keys, config.compression_level)
        self.locks = LockTable(store, keys.sealer, clock)
        self._master_key = master_key
        self._index: RepositoryIndex | None = None
        self._index_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Repository({self.store.describe()!r}, id={self.config.repository_id})"

    @property
    def chunk_size(self) -> int:
        """The size of every chunk but a volume's last."""
        return self.config.chunk_size

    def chunk_id(self, plaintext: bytes) -> bytes:
        """The keyed id of a chunk (keyed BLAKE3 under the repository's id key)."""
        return self.keys.chunk_id(plaintext)

    # --- index ---

    @property
    def index(self) -> RepositoryIndex:
        """The in-memory index, loaded from the `index/` objects on first use."""
        with self._index_lock:
            if self._index is None:
                self._index = load_index(self.store, self.keys.sealer)
            return self._index

    def reload_index(self) -> RepositoryIndex:
        """Forget the cached index and load it again."""
        with self._index_lock:
            self._index = None
        return self.index

    def refresh_index(self) -> RepositoryIndex:
        """The index, reloaded if the set of index objects changed since it was loaded.

        Index objects are immutable, so an unchanged listing means an unchanged index. A
        long-lived process must refresh after taking its lock and before deduplicating against
        the index, or it could reuse chunks a prune elsewhere has deleted; `writer()` does so.
        An index not loaded yet is loaded now, from a listing made now: listing again at once
        would only repeat it (one more LIST per backup, a round trip on S3).
        """
        with self._index_lock:
            if self._index is None:
                self._index = load_index(self.store, self.keys.sealer)
                return self._index
        current = self.index
        if set(index_object_keys(self.store)) == current.object_keys | current.superseded_keys:
            return current
        return self.reload_index()

    def list_packs(self) -> dict[bytes, BlobInfo]:
        """Every pack in the store, by pack id (foreign keys under `data/` are ignored)."""
        packs = {}
        for info in self.store.list(DATA_PREFIX):
            pack_id = pack_id_from_key(info.key)
            if pack_id is not None:
                packs[pack_id] = info
        return packs

    def rebuild_index(
        self,
        on_pack: Callable[[], None] | None = None,
        failpoint: Callable[[str], None] | None = None,
    ) -> RebuildResult:
        """Recreate the index from the pack headers, then drop the old index objects.

        Crash-safe: the new objects are written first, the last one superseding every old
        one, and only then are the old ones deleted. Damaged old index objects are replaced
        like the others. A pack whose header is unreadable keeps the entries a readable old
        index object gives for it (its chunks may be intact). Safe beside running backups:
        only index objects listed *before* the packs are removed, so an index a backup writes
        meanwhile survives (and its packs were listed or are newer). `on_pack` is called
        after each pack (progress); `failpoint("repair.index-written")` between writing the
        new index and deleting the old one (crash tests).
        """
        old_keys = index_object_keys(self.store)
        objects, bad_objects = read_readable_objects(self.store, self.keys.sealer, old_keys)
        fallback = merge_objects(objects)
        index = RepositoryIndex()
        unreadable, kept = [], []
        for pack_id, info in sorted(self.list_packs().items()):
            try:
                entries = read_pack_header(self.store, pack_id, info.size, self.keys.sealer)
            except Corrupt as e:
                unreadable.append(f"{pack_key(pack_id)}: {e.message}")
                if fallback.pack_sizes.get(pack_id) == info.size:
                    index.merge(_only_pack(fallback, pack_id))
                    kept.append(pack_key(pack_id))
                continue
            finally:
                if on_pack is not None:
                    on_pack()
            index.add_pack(pack_id, info.size, entries)
        written = write_index(self.store, self.keys.sealer, index.records(), supersedes=old_keys)
        if failpoint is not None:
            failpoint("repair.index-written")
        removed = [key for key in old_keys if key not in written]
        for key in removed:
            self.store.delete(key)
        index.object_keys = set(written)
        self._index = index
        return RebuildResult(
            len(index.pack_sizes),
            len(index),
            tuple(written),
            tuple(removed),
            tuple(unreadable),
            tuple(f"{key}: {why}" for key, why in sorted(bad_objects.items())),
            tuple(kept),
        )

    def locating_index(self, wanted: Iterable[bytes]) -> RepositoryIndex:
        """The index to find `wanted` chunks with, for a restore: the repository index, or,
        when an index object is unreadable or a wanted chunk is in no index, the readable
        index objects plus the headers of the packs they do not list (read from the packs,
        not written anywhere: `amber backup repair` makes it permanent)."""
        try:
            index = self.refresh_index()
        except Corrupt:
            index = None
        if index is not None and all(chunk_id in index for chunk_id in wanted):
            return index
        objects, _ = read_readable_objects(
            self.store, self.keys.sealer, index_object_keys(self.store)
        )
        found = merge_objects(objects)
        for pack_id, info in sorted(self.list_packs().items()):
            if pack_id in found.pack_sizes:
                continue
            try:
                entries = read_pack_header(self.store, pack_id, info.size, self.keys.sealer)
            except (Corrupt, NotFound):
                continue  # restore reports the chunks it cannot find
            found.add_pack(pack_id, info.size, entries)
        return found

    # --- chunks ---

    def read_chunk(self, chunk_id: bytes) -> bytes:
        """The plaintext of a chunk, verified against its id.

        NotFound if the index does not know the chunk; Corrupt (naming pack and chunk) if its pack
        is missing or the blob fails decryption, decompression or the id check. A miss in the
        cached index, or a pack it names that is gone (a prune ran elsewhere), is retried once
        with a refreshed index.
        """
        entry = self._locate(chunk_id, self.index)
        sealed = self._fetch(entry)
        if sealed is None:
            entry = self._locate(chunk_id, self.refresh_index())
            sealed = self._fetch(entry)
        key = pack_key(entry.pack_id)
        if sealed is None:
            raise Corrupt(f"chunk {short(chunk_id)}: its pack {key} is missing")
        return self.codec.decode(entry.pack_entry(chunk_id), sealed, key)

    def _locate(self, chunk_id: bytes, index: RepositoryIndex) -> IndexEntry:
        entry = index.lookup(chunk_id) or self.refresh_index().lookup(chunk_id)
        if entry is None:
            raise NotFound(f"chunk {short(chunk_id)} is not in the repository index")
        return entry

    def _fetch(self, entry: IndexEntry) -> bytes | None:
        try:
            return self.store.get_range(pack_key(entry.pack_id), entry.offset, entry.length)
        except NotFound:
            return None

    def writer(
        self,
        lock: Lock | None = None,
        index_every_packs: int = DEFAULT_INDEX_EVERY_PACKS,
        upload_threads: int = 0,
        failpoint: Callable[[str], None] | None = None,
    ) -> BackupWriter:
        """A writer for one new backup. Pass the shared lock the backup holds: the writer
        refreshes it as packs go out and checks it before committing. With `upload_threads`,
        packs upload in that many background threads (see `amber.backup.writer`)."""
        return BackupWriter(self, lock, index_every_packs, upload_threads, failpoint)

    # --- manifests ---

    def list_backups(self) -> list[str]:
        """Ids of every backup in the repository, sorted."""
        ids = (id_from_key(BACKUPS_PREFIX, info.key) for info in self.store.list(BACKUPS_PREFIX))
        return sorted(backup_id for backup_id in ids if backup_id is not None)

    def load_manifest(self, backup_id: str) -> Manifest:
        """The manifest of one backup (NotFound, Corrupt, or FailedPrecondition if too new)."""
        try:
            sealed = self.store.get(backup_key(backup_id))
        except NotFound as e:
            raise NotFound(
                f"backup {backup_id} does not exist in the repository at {self.store.describe()}"
            ) from e
        return decode_manifest(sealed, self.keys.sealer, backup_id)

    def load_manifests(self) -> list[Manifest]:
        """Every manifest, oldest first. Any unreadable one raises (prune relies on that)."""
        manifests = [self.load_manifest(backup_id) for backup_id in self.list_backups()]
        return sorted(manifests, key=lambda m: (m.created, m.backup_id))

    def delete_backup(self, backup_id: str) -> None:
        """Delete one manifest; its chunks stay until a prune sweeps them."""
        self.store.delete(backup_key(backup_id))

    # --- locks ---

    def lock(
        self,
        holder: str,
        kind: LockKind = LockKind.SHARED,
        ttl: float = DEFAULT_LOCK_TTL,
        *,
        reader: bool = False,
    ) -> Lock:
        """Take a lock (Busy if a conflicting live lock exists; Corrupt if an unreadable lock
        object blocks it, unless `reader`: see `amber.backup.locks`)."""
        return self.locks.acquire(holder, kind, ttl, reader=reader)

    def active_locks(self, kind: LockKind | None = None) -> list[LockInfo]:
        """Live locks, of `kind` if given; unreadable lock objects count as live exclusive."""
        return self.locks.active(kind)

    def remove_stale_locks(self) -> list[str]:
        """Delete expired locks; return their keys."""
        return self.locks.remove_stale()

    # --- key slots ---

    def list_key_slots(self) -> list[keyslots.KeySlot]:
        """The readable key slots."""
        return keyslots.load_key_slots(self.store)

    def add_key(
        self, credentials: Credentials, scrypt: ScryptParams | None = None, label: str = ""
    ) -> str:
        """Add a slot that opens the repository with `credentials`; return its id."""
        if self._master_key is None:
            raise FailedPrecondition("an unencrypted repository has no keys to add")
        slot_id = new_id()
        data = keyslots.make_key_slot(
            self._master_key,
            credentials,
            self.config.repository_id,
            created=self.clock(),
            scrypt=scrypt or ScryptParams(),
            label=label,
        )
        self.store.put(key_slot_key(slot_id), data)
        return slot_id

    def remove_key(self, slot_id: str) -> None:
        """Remove a key slot; the last readable one cannot be removed."""
        slots = {slot.slot_id for slot in self.list_key_slots()}
        if slot_id not in slots:
            raise NotFound(f"key slot {KEYS_PREFIX}{slot_id} does not exist")
        if len(slots) == 1:
            raise FailedPrecondition(
                "refusing to remove the last key slot: the repository could never be opened again"
            )
        self.store.delete(key_slot_key(slot_id))


def _only_pack(index: RepositoryIndex, pack_id: bytes) -> RepositoryIndex:
    """The part of `index` that lies in one pack."""
    part = RepositoryIndex()
    for record in index.records([pack_id]):
        part.add_pack(record.pack_id, record.size, record.entries)
    return part


def init_repository(
    store: BlobStore,
    credentials: Credentials | None,
    *,
    encryption: str = ENCRYPTION_AES,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    pack_size: int = DEFAULT_PACK_SIZE,
    compression_level: int = DEFAULT_COMPRESSION_LEVEL,
    scrypt: ScryptParams | None = None,
    clock: Clock = time.time,
    key_cache: KeyCache | None = None,
) -> Repository:
    """Create a repository in an empty location and return it open.

    Encrypted (the default) needs `credentials`; `encryption="none"` must be asked for and then
    takes none. Given a `key_cache`, the new master key is remembered there, so the first
    backup does not pay the password's scrypt again.
    """
    _check_init_arguments(store, credentials, encryption)
    repository_id = new_id()
    master = random_key() if credentials is not None else None
    id_key = random_key() if master is None else None
    config = RepositoryConfig(
        repository_id=repository_id,
        created=clock(),
        encryption=encryption,
        chunk_size=chunk_size,
        pack_size=pack_size,
        compression_level=compression_level,
        id_key=id_key,
    )
    config.validate()
    keys = _working_keys(config, master)
    unlocked = None
    if master is not None and credentials is not None:
        unlocked = _write_key_slot(store, master, credentials, config, scrypt or ScryptParams())
    store.put(CONFIG_KEY, config.encode(keys.config_mac(config.canonical())))
    if key_cache is not None and unlocked is not None:
        key_cache.remember(repository_id, unlocked)
    return Repository(store, config, keys, clock, master)


def _write_key_slot(
    store: BlobStore,
    master: bytes,
    credentials: Credentials,
    config: RepositoryConfig,
    scrypt: ScryptParams,
) -> CachedKey:
    """Write the new repository's first key slot; the key as a key cache would remember it."""
    slot = keyslots.make_key_slot(
        master, credentials, config.repository_id, created=config.created, scrypt=scrypt
    )
    slot_id = new_id()
    store.put(key_slot_key(slot_id), slot)
    return CachedKey(slot_id, keyslots.parse_key_slot(slot_id, slot).wrapped, master)


def _check_init_arguments(
    store: BlobStore, credentials: Credentials | None, encryption: str
) -> None:
    if encryption not in ENCRYPTION_MODES:
        raise InvalidArgument(
            f"unknown encryption {encryption!r}: use {ENCRYPTION_AES!r} or {ENCRYPTION_NONE!r}"
        )
    if encryption == ENCRYPTION_AES and credentials is None:
        raise InvalidArgument(
            "an encrypted repository needs a password or a key file (there is no default); "
            "pass encryption='none' only if the backups may be stored in the clear"
        )
    if encryption == ENCRYPTION_NONE and credentials is not None:
        raise InvalidArgument("encryption='none' takes no password or key file")
    if store.exists(CONFIG_KEY):
        raise AlreadyExists(f"a backup repository already exists at {store.describe()}")


def _working_keys(config: RepositoryConfig, master: bytes | None) -> RepositoryKeys:
    if master is not None:
        return keys_from_master(master, config.repository_id)
    if config.id_key is None:
        raise Corrupt("an unencrypted repository config carries no id key")
    return keys_without_encryption(config.id_key, config.repository_id)


def read_config(store: BlobStore) -> tuple[RepositoryConfig, bytes]:
    """The stored config and its MAC (not yet verified)."""
    try:
        data = store.get(CONFIG_KEY)
    except NotFound as e:
        raise NotFound(
            f"no Amber backup repository at {store.describe()}: it has no 'config' object; "
            "initialize one first"
        ) from e
    return parse_config(data, store.describe())


def open_repository(
    store: BlobStore,
    credentials: Credentials | None,
    *,
    clock: Clock = time.time,
    key_cache: KeyCache | None = None,
) -> Repository:
    """Open an existing repository.

    PermissionDenied for a missing or wrong password/key file; FailedPrecondition for a format
    version this Amber does not read, or for credentials given to an unencrypted repository (a
    user who believes the backups are encrypted must learn they are not, and a config swapped to
    'none' must not silently downgrade new backups); Corrupt for a damaged or edited config.
    """
    config, mac = read_config(store)
    if key_cache is not None and credentials is not None:
        cached = _open_cached(store, config, mac, key_cache)
        if cached is not None:
            cached_master, cached_keys = cached
            return Repository(store, config, cached_keys, clock, cached_master)
    master, slot = _unlock(store, config, credentials)
    keys = _working_keys(config, master)
    if not hmac.compare_digest(mac, keys.config_mac(config.canonical())):
        raise Corrupt(
            f"the config of the backup repository at {store.describe()} fails authentication: "
            "it was modified or damaged"
        )
    if key_cache is not None and master is not None and slot is not None:
        key_cache.remember(config.repository_id, CachedKey(slot.slot_id, slot.wrapped, master))
    return Repository(store, config, keys, clock, master)


def _open_cached(
    store: BlobStore, config: RepositoryConfig, mac: bytes, key_cache: KeyCache
) -> tuple[bytes, RepositoryKeys] | None:
    """The cached master key and its working keys, if the cache holds one that still fits."""
    if config.encryption == ENCRYPTION_NONE:
        return None
    cached = key_cache.lookup(config.repository_id)
    if cached is None:
        return None
    try:
        slot = keyslots.parse_key_slot(cached.slot_id, store.get(key_slot_key(cached.slot_id)))
    except (NotFound, Corrupt, InvalidArgument):
        slot = None
    if slot is None or slot.wrapped != cached.wrapped:
        key_cache.forget(config.repository_id)  # the slot was removed or re-keyed: revoked
        return None
    keys = keys_from_master(cached.master, config.repository_id)
    if not hmac.compare_digest(mac, keys.config_mac(config.canonical())):
        key_cache.forget(config.repository_id)
        return None
    return cached.master, keys


def _unlock(
    store: BlobStore, config: RepositoryConfig, credentials: Credentials | None
) -> tuple[bytes | None, keyslots.KeySlot | None]:
    if config.encryption == ENCRYPTION_NONE:
        if credentials is not None:
            raise FailedPrecondition(
                f"the backup repository at {store.describe()} is NOT encrypted (it was created "
                "with encryption='none'), yet a password or key file was given; open it without "
                "one if that is expected"
            )
        return None, None
    if credentials is None:
        raise PermissionDenied(
            f"the backup repository at {store.describe()} is encrypted: give its password or "
            "key file"
        )
    return keyslots.unlock_master_key(store, credentials, config.repository_id)
