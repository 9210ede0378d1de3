"""Key slots: the master key, wrapped once per password or key file.

An encrypted repository has one random 256-bit master key. It is never stored in the clear: each
`keys/<slot id>` object holds it wrapped (AES-256-GCM) under a key-encryption key derived from one
credential:

- a **password**: scrypt with the parameters and salt stored in the slot (default N=2^16, r=8,
  p=1: about 64 MiB and a fraction of a second, kopia's default; raise N for a new slot with
  `ScryptParams`);
- a **key file**: at least 32 bytes of random material (surrounding whitespace ignored), fed
  through HKDF-SHA256 with the slot's salt (a key file has full entropy; stretching adds nothing).

Several slots may coexist (one per user, a key file for the node daemon, a recovery password).
Opening tries every slot of the credential's type; when none opens, the credential is wrong and the
caller gets `PermissionDenied`. There is no built-in or default password anywhere.

Slot objects are plaintext JSON: they must be readable before any key is known. The wrapped key is
bound (associated data) to the repository id, so a slot copied from another repository does not
open here.

Damage is told apart from a wrong credential: a slot carries a `checksum` (SHA-256 of its other
fields; slots written before it existed have none), so a flipped byte makes the slot *damaged*
(`Corrupt`) instead of looking like a wrong password. When no slot opens and some slot is damaged,
or the repository has no slot at all (deleted), the caller gets `Corrupt` naming the slots, not
`PermissionDenied`: retrying passwords cannot help then.
"""

from __future__ import annotations

import hashlib
import os
import unicodedata
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from amber.backup import _codec
from amber.backup.crypto import KEY_BYTES, NONCE_BYTES, derive_subkey
from amber.blobstore.base import BlobStore
from amber.domain.errors import Corrupt, InvalidArgument, NotFound, PermissionDenied

SLOT_VERSION = 1
SLOT_PASSWORD = "password"
SLOT_KEY_FILE = "key-file"
KEY_FILE_MIN_BYTES = 32
SALT_BYTES = 32
_WRAPPED_BYTES = NONCE_BYTES + KEY_BYTES + 16  # nonce, wrapped master key, GCM tag
CHECKSUM_FIELD = "checksum"

# Limits on what a slot may ask for, so a hostile slot cannot make us allocate gigabytes.
_SCRYPT_MAX_N = 2**22
_SCRYPT_MAX_R = 32
_SCRYPT_MAX_P = 16


@dataclass(frozen=True, repr=False)
class Password:
    """A repository password (never printed)."""

    text: str

    def __post_init__(self) -> None:
        if not self.text:
            raise InvalidArgument("the repository password is empty: choose a non-empty password")


@dataclass(frozen=True, repr=False)
class KeyFile:
    """The content of a key file (never printed)."""

    material: bytes

    def __post_init__(self) -> None:
        if len(self.material.strip()) < KEY_FILE_MIN_BYTES:
            raise InvalidArgument(
                f"the key file holds fewer than {KEY_FILE_MIN_BYTES} bytes of key material; "
                "create one with `generate_key_file()`"
            )


Credentials = Password | KeyFile


@dataclass(frozen=True)
class ScryptParams:
    """scrypt cost parameters for new password slots (memory is about 128 * r * n bytes)."""

    n: int = 2**16
    r: int = 8
    p: int = 1

    def validate(self, what: str) -> None:
        """Raise Corrupt for parameters outside the accepted bounds."""
        power_of_two = self.n > 1 and self.n & (self.n - 1) == 0
        if not (power_of_two and self.n <= _SCRYPT_MAX_N):
            raise Corrupt(f"{what}: scrypt N={self.n} is not a power of two up to 2^22")
        if not (1 <= self.r <= _SCRYPT_MAX_R and 1 <= self.p <= _SCRYPT_MAX_P):
            raise Corrupt(f"{what}: scrypt r={self.r} p={self.p} is out of range")


def generate_key_file() -> bytes:
    """Content for a new key file: 32 random bytes as base64 text and a newline."""
    return _codec.b64encode(os.urandom(KEY_BYTES)).encode("ascii") + b"\n"


def _slot_type(credentials: Credentials) -> str:
    return SLOT_PASSWORD if isinstance(credentials, Password) else SLOT_KEY_FILE


def _wrap_ad(repository_id: str) -> bytes:
    return b"amber/1/key-slot\x00" + repository_id.encode("ascii")


def _kek_from_password(password: Password, salt: bytes, params: ScryptParams) -> bytes:
    secret = unicodedata.normalize("NFC", password.text).encode("utf-8")
    return Scrypt(salt=salt, length=KEY_BYTES, n=params.n, r=params.r, p=params.p).derive(secret)


def _kek_from_key_file(key_file: KeyFile, salt: bytes) -> bytes:
    return derive_subkey(key_file.material.strip(), salt, "key-file")


def make_key_slot(
    master_key: bytes,
    credentials: Credentials,
    repository_id: str,
    *,
    created: float,
    scrypt: ScryptParams,
    label: str = "",
) -> bytes:
    """The JSON of a new slot that wraps `master_key` under `credentials`."""
    salt = os.urandom(SALT_BYTES)
    kdf: dict[str, Any]
    if isinstance(credentials, Password):
        scrypt.validate("new key slot")
        kek = _kek_from_password(credentials, salt, scrypt)
        kdf = {"name": "scrypt", "n": scrypt.n, "r": scrypt.r, "p": scrypt.p}
    else:
        kek = _kek_from_key_file(credentials, salt)
        kdf = {"name": "hkdf-sha256"}
    kdf["salt"] = _codec.b64encode(salt)
    nonce = os.urandom(NONCE_BYTES)
    wrapped = nonce + AESGCM(kek).encrypt(nonce, master_key, _wrap_ad(repository_id))
    document = {
        "version": SLOT_VERSION,
        "type": _slot_type(credentials),
        "kdf": kdf,
        "wrapped": _codec.b64encode(wrapped),
        "created": created,
        "label": label,
    }
    document[CHECKSUM_FIELD] = _checksum(document)
    return _codec.dumps(document)


def _checksum(document: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of every field but the checksum (hex)."""
    fields = {k: v for k, v in document.items() if k != CHECKSUM_FIELD}
    return hashlib.sha256(_codec.dumps(fields)).hexdigest()


@dataclass(frozen=True)
class KeySlot:
    """A parsed slot, ready to be tried."""

    slot_id: str
    slot_type: str
    kdf: dict[str, Any]
    salt: bytes
    wrapped: bytes
    created: float
    label: str


def parse_key_slot(slot_id: str, data: bytes) -> KeySlot:
    """Parse a slot object; malformed slots are Corrupt."""
    what = f"key slot keys/{slot_id}"
    document = _codec.loads_object(data, what)
    if CHECKSUM_FIELD in document and document[CHECKSUM_FIELD] != _checksum(document):
        raise Corrupt(f"{what} is damaged: its checksum does not match its content")
    version = _codec.get(document, "version", int, what)
    if version != SLOT_VERSION:
        raise Corrupt(f"{what} has version {version}; this Amber reads version {SLOT_VERSION}")
    slot_type = _codec.get(document, "type", str, what)
    if slot_type not in (SLOT_PASSWORD, SLOT_KEY_FILE):
        raise Corrupt(f"{what} has unknown type {slot_type!r}")
    kdf = _codec.get(document, "kdf", dict, what)
    wrapped = _codec.b64decode(_codec.get(document, "wrapped", str, what), what)
    if len(wrapped) != _WRAPPED_BYTES:
        raise Corrupt(f"{what} is damaged: its wrapped key has {len(wrapped)} bytes")
    return KeySlot(
        slot_id=slot_id,
        slot_type=slot_type,
        kdf=kdf,
        salt=_codec.b64decode(_codec.get(kdf, "salt", str, what), what),
        wrapped=wrapped,
        created=_codec.get(document, "created", float, what),
        label=_codec.get(document, "label", str, what),
    )


def _slot_kek(slot: KeySlot, credentials: Credentials) -> bytes:
    what = f"key slot keys/{slot.slot_id}"
    name = _codec.get(slot.kdf, "name", str, what)
    if isinstance(credentials, Password) and name == "scrypt":
        params = ScryptParams(
            n=_codec.get(slot.kdf, "n", int, what),
            r=_codec.get(slot.kdf, "r", int, what),
            p=_codec.get(slot.kdf, "p", int, what),
        )
        params.validate(what)
        return _kek_from_password(credentials, slot.salt, params)
    if isinstance(credentials, KeyFile) and name == "hkdf-sha256":
        return _kek_from_key_file(credentials, slot.salt)
    raise Corrupt(f"{what}: kdf {name!r} does not fit a {slot.slot_type} slot")


def try_unwrap(slot: KeySlot, credentials: Credentials, repository_id: str) -> bytes | None:
    """The master key if `credentials` open `slot`, else None."""
    if slot.slot_type != _slot_type(credentials):
        return None
    kek = _slot_kek(slot, credentials)
    nonce, body = slot.wrapped[:NONCE_BYTES], slot.wrapped[NONCE_BYTES:]
    try:
        master = AESGCM(kek).decrypt(nonce, body, _wrap_ad(repository_id))
    except InvalidTag:
        return None
    if len(master) != KEY_BYTES:
        raise Corrupt(f"key slot keys/{slot.slot_id} holds a key of the wrong size")
    return master


def load_key_slots(store: BlobStore) -> list[KeySlot]:
    """Every parseable slot in the repository (unparseable ones are skipped: another slot may
    still open the repository; `check` reports them)."""
    return read_key_slots(store)[0]


def read_key_slots(store: BlobStore) -> tuple[list[KeySlot], dict[str, str]]:
    """(parseable slots, damaged slot key -> why) of the repository."""
    slots = []
    damaged = {}
    for info in store.list("keys/"):
        slot_id = info.key.removeprefix("keys/")
        try:
            slots.append(parse_key_slot(slot_id, store.get(info.key)))
        except Corrupt as e:
            damaged[info.key] = e.message
        except NotFound:
            continue  # removed while we listed
    return sorted(slots, key=lambda slot: slot.slot_id), damaged


def unlock_master_key(
    store: BlobStore, credentials: Credentials, repository_id: str
) -> tuple[bytes, KeySlot]:
    """Find the slot `credentials` open; return the master key and that slot.

    PermissionDenied when no readable slot opens (a wrong credential, or its slot was removed
    on purpose while others remain); Corrupt when some slot is damaged or there is no slot at
    all (deleted or lost: no credential could open the repository).
    """
    slots, damaged = read_key_slots(store)
    for slot in slots:
        master = try_unwrap(slot, credentials, repository_id)
        if master is not None:
            return master, slot
    kind = "password" if isinstance(credentials, Password) else "key file"
    matching = sum(1 for slot in slots if slot.slot_type == _slot_type(credentials))
    where = f"the backup repository at {store.describe()}"
    if damaged:
        names = "; ".join(f"{why}" for why in damaged.values())
        raise Corrupt(
            f"{where} cannot be unlocked: {len(damaged)} key slot(s) are damaged ({names}); "
            f"the {kind} opens none of the {matching} readable {kind} slot(s). Restore the "
            "damaged slot from a copy of the repository, or use another credential"
        )
    if not slots:
        raise Corrupt(
            f"{where} has no key slot at all (keys/ is empty or missing): the slots were "
            "deleted or lost, and no credential can open it; restore keys/ from a copy of the "
            "repository"
        )
    raise PermissionDenied(
        f"wrong {kind} for {where}: it opens none of the repository's {matching} {kind} key slot(s)"
    )
