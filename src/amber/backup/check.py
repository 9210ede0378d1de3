"""Check: find every inconsistency in a repository and say what it affects.

Structure (always):

- every index object opens and matches its name;
- every indexed pack exists, has the size the index says, and its header opens and lists every
  location the index gives for it; packs no index lists are reported as warnings (leftovers of
  interrupted backups, which prune removes);
- every manifest opens, and every chunk it names is indexed, in a pack that exists and is long
  enough to hold it, with the raw length its position in the volume requires (a patch's chunk:
  at least the bytes the patch takes from it);
- key slots and locks are readable (warnings), stale locks are listed (warnings);
- temporaries left by interrupted uploads on a file target are listed (warnings, with their
  size; `amber.backup.leftovers` says who may adopt or remove them).

With `read_data`, every indexed pack that exists (or a random `subset_pct` of them) is downloaded
whole: its SHA-256 must match its name, and every chunk must open, decompress and hash to its id.
A pack whose header is damaged is still read: its chunks may be intact, and saying which ones
are is the point.

Nothing raises on a finding: each becomes a `Problem` that names the object and, for chunks that
backups use, the affected backup, chunk index and byte range of the volume. `CheckResult.ok` is
true when there are no errors (warnings do not make a repository unhealthy).
"""

from __future__ import annotations

import enum
import math
import random
from dataclasses import dataclass, field

from amber.backup.crypto import content_hash
from amber.backup.index import (
    IndexEntry,
    RepositoryIndex,
    index_object_keys,
    merge_objects,
    read_index_object,
)
from amber.backup.keys import parse_key_slot
from amber.backup.layout import KEYS_PREFIX, backup_key, lock_key, pack_key
from amber.backup.leftovers import survey
from amber.backup.manifest import Manifest
from amber.backup.pack import read_pack_header, short
from amber.backup.progress import NullProgress, Progress
from amber.backup.repository import Repository
from amber.domain.errors import Corrupt, FailedPrecondition, InvalidArgument, NotFound


class Severity(enum.StrEnum):
    """Errors mean data is lost or at risk; warnings are untidy but harmless."""

    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True)
class Problem:
    """One finding. `byte_range` is `[start, end)` of the volume backed up in `backup_id`."""

    severity: Severity
    code: str
    message: str
    object_key: str | None = None
    backup_id: str | None = None
    chunk_id: str | None = None
    chunk_index: int | None = None
    byte_range: tuple[int, int] | None = None


@dataclass
class CheckResult:
    """Everything check found, with counts of what it looked at."""

    problems: list[Problem] = field(default_factory=list)
    backups_checked: int = 0
    packs_checked: int = 0
    packs_read: int = 0
    chunks_verified: int = 0

    @property
    def ok(self) -> bool:
        """No errors (warnings allowed)."""
        return not self.errors

    @property
    def errors(self) -> list[Problem]:
        """Problems of severity error."""
        return [p for p in self.problems if p.severity is Severity.ERROR]

    @property
    def warnings(self) -> list[Problem]:
        """Problems of severity warning."""
        return [p for p in self.problems if p.severity is Severity.WARNING]

    def damaged_backups(self) -> set[str]:
        """Backups with at least one error."""
        return {p.backup_id for p in self.errors if p.backup_id is not None}


@dataclass(frozen=True)
class _Use:
    backup_id: str
    chunk_index: int
    byte_range: tuple[int, int]


class _Checker:
    def __init__(self, repo: Repository, progress: Progress) -> None:
        self.repo = repo
        self.progress = progress
        self.result = CheckResult()
        self.index = RepositoryIndex()
        self.present_packs: set[bytes] = set()
        self.missing_packs: set[bytes] = set()
        self.short_packs: dict[bytes, int] = {}
        self.uses: dict[bytes, list[_Use]] = {}

    def add(
        self,
        severity: Severity,
        code: str,
        message: str,
        object_key: str | None = None,
        chunk_id: bytes | None = None,
    ) -> None:
        hex_id = None if chunk_id is None else chunk_id.hex()
        self.result.problems.append(Problem(severity, code, message, object_key, chunk_id=hex_id))

    def load_index(self) -> None:
        objects = {}
        for key in index_object_keys(self.repo.store):
            try:
                objects[key] = read_index_object(self.repo.store, self.repo.keys.sealer, key)
            except NotFound:
                continue
            except Corrupt as e:
                self.add(Severity.ERROR, "index-unreadable", e.message, key)
        self.index = merge_objects(objects)
        for key in sorted(self.index.superseded_keys):
            message = f"index object {key} was replaced by a newer one (prune removes it)"
            self.add(Severity.WARNING, "index-superseded", message, key)

    def check_packs(self) -> None:
        stored = self.repo.list_packs()
        by_pack = self.index.entries_by_pack()
        self.progress.phase("checking packs", len(self.index.pack_sizes), "packs")
        for pack_id, size in sorted(self.index.pack_sizes.items()):
            self.progress.advance(1)
            self.result.packs_checked += 1
            key = pack_key(pack_id)
            info = stored.get(pack_id)
            if info is None:
                self.missing_packs.add(pack_id)
                message = f"indexed pack {key} is missing"
                self.add(Severity.ERROR, "pack-missing", message, object_key=key)
                continue
            self.present_packs.add(pack_id)
            if info.size != size:
                message = f"pack {key} has {info.size} bytes where the index says {size}"
                self.add(Severity.ERROR, "pack-size", message, object_key=key)
                self.short_packs[pack_id] = info.size
            else:
                self.check_header(pack_id, size, by_pack.get(pack_id, []))
        for pack_id in sorted(stored.keys() - self.index.pack_sizes.keys()):
            key = pack_key(pack_id)
            message = f"pack {key} is in no index (left by an interrupted backup; prune removes it)"
            self.add(Severity.WARNING, "pack-unindexed", message, object_key=key)

    def check_header(
        self, pack_id: bytes, size: int, indexed: list[tuple[bytes, IndexEntry]]
    ) -> None:
        key = pack_key(pack_id)
        try:
            header = set(read_pack_header(self.repo.store, pack_id, size, self.repo.keys.sealer))
        except Corrupt as e:
            self.add(Severity.ERROR, "pack-header-unreadable", e.message, object_key=key)
            return
        disagreeing = [c for c, entry in indexed if entry.pack_entry(c) not in header]
        for chunk_id in disagreeing:
            message = f"the header of pack {key} does not list chunk {short(chunk_id)} as indexed"
            self.add(Severity.ERROR, "pack-header-mismatch", message, key, chunk_id)

    def check_manifests(self) -> None:
        backup_ids = self.repo.list_backups()
        self.progress.phase("checking backups", len(backup_ids), "backups")
        for backup_id in backup_ids:
            self.progress.advance(1)
            try:
                manifest = self.repo.load_manifest(backup_id)
            except (Corrupt, FailedPrecondition, NotFound) as e:
                key = backup_key(backup_id)
                problem = Problem(Severity.ERROR, "manifest-unreadable", e.message, key, backup_id)
                self.result.problems.append(problem)
                continue
            self.result.backups_checked += 1
            self.check_chunk_map(manifest)

    def check_chunk_map(self, manifest: Manifest) -> None:
        for position, ref in enumerate(manifest.chunk_map):
            if isinstance(ref, bytes):
                start, end = manifest.chunk_range(position)
                use = _Use(manifest.backup_id, position, (start, end))
                self.check_use(use, ref, end - start, exact=True)
        for patch in manifest.patches:
            use = _Use(
                manifest.backup_id, patch.offset // manifest.chunk_size, (patch.offset, patch.end)
            )
            self.check_use(use, patch.chunk_id, patch.chunk_offset + patch.length, exact=False)

    def check_use(self, use: _Use, ref: bytes, length: int, *, exact: bool) -> None:
        """Check one use of chunk `ref`, which must hold `length` bytes (at least, unless
        `exact`)."""
        self.uses.setdefault(ref, []).append(use)
        entry = self.index.lookup(ref)
        if entry is None:
            self.report_use(use, ref, "chunk-not-indexed", "is in no index")
            return
        key = pack_key(entry.pack_id)
        if entry.pack_id in self.missing_packs:
            self.report_use(use, ref, "chunk-pack-missing", f"is in missing pack {key}", key)
        elif entry.offset + entry.length > self.short_packs.get(entry.pack_id, 2**64):
            self.report_use(use, ref, "chunk-truncated", f"lies past the end of {key}", key)
        elif (entry.raw_length != length) if exact else (entry.raw_length < length):
            self.report_use(use, ref, "chunk-length", f"holds {entry.raw_length} bytes", key)

    def report_use(
        self, use: _Use, chunk_id: bytes, code: str, what: str, key: str | None = None
    ) -> None:
        start, end = use.byte_range
        message = (
            f"backup {use.backup_id}: chunk {use.chunk_index} (bytes {start}-{end}) "
            f"{short(chunk_id)} {what}"
        )
        problem = Problem(
            Severity.ERROR,
            code,
            message,
            object_key=key,
            backup_id=use.backup_id,
            chunk_id=chunk_id.hex(),
            chunk_index=use.chunk_index,
            byte_range=use.byte_range,
        )
        self.result.problems.append(problem)

    def read_data(self, subset_pct: float, rng: random.Random) -> None:
        candidates = sorted(self.present_packs)
        if not candidates:
            return
        count = max(1, math.ceil(len(candidates) * subset_pct / 100))
        by_pack = self.index.entries_by_pack()
        chosen = sorted(rng.sample(candidates, min(count, len(candidates))))
        self.progress.phase("reading data", sum(self.index.pack_sizes[p] for p in chosen))
        for pack_id in chosen:
            self.read_pack(pack_id, by_pack.get(pack_id, []))
            self.progress.advance(self.index.pack_sizes[pack_id])

    def read_pack(self, pack_id: bytes, entries: list[tuple[bytes, IndexEntry]]) -> None:
        key = pack_key(pack_id)
        data = self.repo.store.get(key)
        self.result.packs_read += 1
        if content_hash(data) != pack_id:
            message = f"pack {key}: content does not match its name (damaged)"
            self.add(Severity.ERROR, "pack-hash", message, object_key=key)
        for chunk_id, entry in entries:
            sealed = data[entry.offset : entry.offset + entry.length]
            try:
                self.repo.codec.decode(entry.pack_entry(chunk_id), sealed, key)
            except Corrupt as e:
                self.report_damaged(chunk_id, key, e.message)
            else:
                self.result.chunks_verified += 1

    def report_damaged(self, chunk_id: bytes, key: str, reason: str) -> None:
        uses = self.uses.get(chunk_id, [])
        for use in uses:
            self.report_use(use, chunk_id, "chunk-damaged", f"is damaged: {reason}", key)
        if not uses:
            message = f"{reason} (no backup uses it, but a new backup could reuse it)"
            self.add(Severity.ERROR, "chunk-damaged", message, key, chunk_id)

    def check_keys_and_locks(self) -> None:
        for info in self.repo.store.list(KEYS_PREFIX):
            try:
                parse_key_slot(info.key.removeprefix(KEYS_PREFIX), self.repo.store.get(info.key))
            except (Corrupt, NotFound) as e:
                self.add(Severity.WARNING, "key-slot-unreadable", e.message, object_key=info.key)
        now = self.repo.clock()
        for lock in self.repo.locks.all():
            key = lock_key(lock.lock_id)
            if not lock.readable:
                self.add(Severity.WARNING, "lock-unreadable", lock.describe(), object_key=key)
            elif not lock.is_live(now):
                self.add(Severity.WARNING, "lock-stale", f"stale {lock.describe()}", object_key=key)

    def check_leftovers(self) -> None:
        for state in survey(self.repo, None, self.repo.clock()):
            leftover = state.leftover
            what = (
                f"temporary file {leftover.name} ({leftover.size} bytes) was left by an "
                "interrupted upload"
            )
            if state.protected is None:
                what += (
                    "; a whole pack is adopted by the next backup of the interrupted volume or "
                    "by `amber backup repair`, and prune removes it after the grace period"
                )
            else:
                what += f" or belongs to a running backup ({state.protected})"
            self.add(Severity.WARNING, "leftover-temporary", what, object_key=leftover.name)


def check(
    repo: Repository,
    *,
    read_data: bool = False,
    subset_pct: float = 100.0,
    rng: random.Random | None = None,
    progress: Progress | None = None,
) -> CheckResult:
    """Check the repository's structure, and with `read_data` its bytes; never raises on a
    finding (store failures such as Unavailable do propagate)."""
    if not 0 < subset_pct <= 100:
        raise InvalidArgument(f"subset percentage {subset_pct} must be in (0, 100]")
    checker = _Checker(repo, progress or NullProgress())
    checker.load_index()
    checker.check_packs()
    checker.check_manifests()
    if read_data:
        checker.read_data(subset_pct, rng or random.Random())
    checker.check_keys_and_locks()
    checker.check_leftovers()
    return checker.result
