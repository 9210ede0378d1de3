"""The repository's key space, and the clock type every time-dependent part takes.

```
config                      plaintext JSON, authenticated after unlocking
keys/<slot id>              one key slot per password or key file
data/<2 hex>/<64 hex>       packs, named by the SHA-256 of their bytes
index/<64 hex>              index objects, named by the SHA-256 of their bytes
backups/<32 hex>            backup manifests, named by a random backup id
locks/<32 hex>              locks, named by a random lock id
```

Nothing is ever overwritten: content-addressed names make a rewrite identical, random names are
never reused, and a refreshed lock is a new object.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable

from amber.domain.errors import InvalidArgument

Clock = Callable[[], float]
"""Seconds since the epoch; `time.time` in production, a fake in tests."""

CONFIG_KEY = "config"
KEYS_PREFIX = "keys/"
DATA_PREFIX = "data/"
INDEX_PREFIX = "index/"
BACKUPS_PREFIX = "backups/"
LOCKS_PREFIX = "locks/"

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_HEX32 = re.compile(r"^[0-9a-f]{32}$")


def new_id() -> str:
    """A random 128-bit id as 32 lowercase hex digits (backups, locks, key slots)."""
    return secrets.token_hex(16)


def pack_key(pack_id: bytes) -> str:
    """`data/<first two hex digits>/<all 64 hex digits>`."""
    name = pack_id.hex()
    return f"{DATA_PREFIX}{name[:2]}/{name}"


def pack_id_from_key(key: str) -> bytes | None:
    """The pack id a `data/` key names, or None for a key that is not a pack's."""
    parts = key.split("/")
    if len(parts) != 3 or parts[0] != "data" or _HEX64.match(parts[2]) is None:
        return None
    if parts[1] != parts[2][:2]:
        return None
    return bytes.fromhex(parts[2])


def index_key(digest: bytes) -> str:
    """`index/<64 hex digits>`."""
    return INDEX_PREFIX + digest.hex()


def index_digest_from_key(key: str) -> bytes | None:
    """The digest an `index/` key names, or None."""
    name = key.removeprefix(INDEX_PREFIX)
    if name == key or _HEX64.match(name) is None:
        return None
    return bytes.fromhex(name)


def is_valid_id(value: str) -> bool:
    """Whether `value` has the shape of a backup, lock or key-slot id."""
    return _HEX32.match(value) is not None


def check_backup_id(backup_id: str) -> str:
    """Return `backup_id` or raise InvalidArgument saying what a backup id looks like."""
    if not is_valid_id(backup_id):
        shown = backup_id.encode("unicode_escape").decode("ascii")[:80]
        raise InvalidArgument(
            f"invalid backup id {shown!r}: a backup id is 32 lowercase hex digits"
        )
    return backup_id


def backup_key(backup_id: str) -> str:
    """`backups/<backup id>`."""
    return BACKUPS_PREFIX + check_backup_id(backup_id)


def id_from_key(prefix: str, key: str) -> str | None:
    """The id in `<prefix><id>`, or None if the key does not have that shape."""
    name = key.removeprefix(prefix)
    if name == key or not is_valid_id(name):
        return None
    return name


def lock_key(lock_id: str) -> str:
    """`locks/<lock id>`."""
    return LOCKS_PREFIX + lock_id


def key_slot_key(slot_id: str) -> str:
    """`keys/<slot id>`."""
    return KEYS_PREFIX + slot_id
