"""Unlocked master keys remembered between commands, so a password's scrypt is paid once per boot.

Opening a repository with a password runs scrypt (N=2^16, r=8: about 0.16 s and 64 MiB), which is
most of a small incremental backup started from the CLI. The node daemon unlocks once and keeps
the key in memory; a command has no memory, so it keeps the key in a `KeyCache`:

- **where:** a directory on tmpfs (`/run/amber/keys`, mode 0700, entries 0600): never on a
  persistent disk, and gone at reboot;
- **for which credential:** an entry is bound to the *identity* of the password file (path,
  device, inode, size, modification and change times), not to the password: editing or
  replacing the file makes its entries unusable, and no entry holds a fast password verifier
  that could be brute-forced offline. An entry holds the master key itself, which whoever can
  read it (root) can get from the password file anyway;
- **for which slot:** an entry is used only while the key slot it was unwrapped from still holds
  the same wrapped key, so removing a slot (revoking a password) revokes the cache with it;
- **checked:** the repository opens with a cached key only if the key authenticates the
  repository's config; otherwise the entry is dropped and the password is used.

The cache is an optimization: any failure to read or write it falls back to scrypt.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import blake3

from amber.backup import _codec
from amber.domain.errors import Corrupt

DEFAULT_KEY_CACHE_DIR = Path("/run/amber/keys")

log = logging.getLogger(__name__)


@dataclass(frozen=True, repr=False)
class CachedKey:
    """A remembered master key and the slot it came from (never printed)."""

    slot_id: str
    wrapped: bytes
    """The slot's wrapped key when it was unwrapped: the entry is valid while it is unchanged."""
    master: bytes


class KeyCache:
    """The entries of one credential file (see the module docstring)."""

    def __init__(self, directory: Path, credential_file: Path) -> None:
        st = os.stat(credential_file)
        self._directory = directory
        self._binding = "\0".join(
            str(part)
            for part in (
                credential_file.resolve(),
                st.st_dev,
                st.st_ino,
                st.st_size,
                st.st_mtime_ns,
                st.st_ctime_ns,
            )
        )

    def lookup(self, repository_id: str) -> CachedKey | None:
        """The remembered key for `repository_id`, or None."""
        path = self._path(repository_id)
        what = f"key cache entry {path}"
        try:
            document = _codec.loads_object(path.read_bytes(), what)
            return CachedKey(
                slot_id=_codec.get(document, "slot_id", str, what),
                wrapped=_codec.b64decode(_codec.get(document, "wrapped", str, what), what),
                master=_codec.b64decode(_codec.get(document, "master", str, what), what),
            )
        except FileNotFoundError:
            return None
        except (OSError, Corrupt) as e:
            log.debug("ignoring the key cache entry %s: %s", path, e)
            return None

    def remember(self, repository_id: str, key: CachedKey) -> None:
        """Store an entry (atomically; failures only cost the next command its scrypt)."""
        document = {
            "slot_id": key.slot_id,
            "wrapped": _codec.b64encode(key.wrapped),
            "master": _codec.b64encode(key.master),
        }
        path = self._path(repository_id)
        tmp = path.with_name(f".{secrets.token_hex(8)}.tmp")
        try:
            self._directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(document, f)
            os.rename(tmp, path)
        except OSError as e:
            log.debug("cannot remember the key in %s: %s", self._directory, e)
            with contextlib.suppress(OSError):
                os.unlink(tmp)

    def forget(self, repository_id: str) -> None:
        """Drop the entry (it no longer opens the repository)."""
        with contextlib.suppress(OSError):
            os.unlink(self._path(repository_id))

    def _path(self, repository_id: str) -> Path:
        name = blake3.blake3(f"{self._binding}\0{repository_id}".encode()).hexdigest()
        return self._directory / name
