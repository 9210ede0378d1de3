"""The repository `config` object: what a reader must know before reading anything else.

It is plaintext JSON so that a reader can tell, before asking for a password, whether this is an
Amber repository, which format version it has and whether it is encrypted. A `mac` field
(HMAC-SHA256 under a subkey of the master key, or of the stored id key when unencrypted) is
checked right after unlocking, so a config edited by someone without the key is refused.

The format version is one integer, the major version: a reader opens only the versions it knows
and refuses newer ones with a clear message (older readers must never half-understand a newer
layout). Additive changes that old readers may ignore would add fields, not bump the version.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from amber.backup import _codec
from amber.backup.crypto import (
    ENCRYPTION_AES,
    ENCRYPTION_MODES,
    ENCRYPTION_NONE,
    HASH_ALGORITHM,
    KEY_BYTES,
)
from amber.domain.errors import Corrupt, FailedPrecondition, InvalidArgument
from amber.domain.units import KiB, MiB

FORMAT_NAME = "amber-backup-repository"
FORMAT_VERSION = 1

DEFAULT_CHUNK_SIZE = 256 * KiB  # measured: docs/repository-format.md §4 (was 1 MiB)
DEFAULT_PACK_SIZE = 16 * MiB
DEFAULT_COMPRESSION_LEVEL = 1
MIN_CHUNK_SIZE = 512
MAX_CHUNK_SIZE = 64 * MiB
MIN_PACK_SIZE = 1 * KiB
MAX_PACK_SIZE = 1024 * MiB


@dataclass(frozen=True, repr=False)
class RepositoryConfig:
    """The parsed `config` object.

    `id_key` is present only for an unencrypted repository (an encrypted one derives its id key
    from the master key); `repr` is disabled so it is never printed.
    """

    repository_id: str
    created: float
    encryption: str
    chunk_size: int = DEFAULT_CHUNK_SIZE
    pack_size: int = DEFAULT_PACK_SIZE
    compression_level: int = DEFAULT_COMPRESSION_LEVEL
    id_key: bytes | None = None
    version: int = FORMAT_VERSION

    def validate(self) -> None:
        """Raise InvalidArgument for parameters this format does not allow."""
        if self.encryption not in ENCRYPTION_MODES:
            raise InvalidArgument(
                f"unknown encryption {self.encryption!r}: use {ENCRYPTION_AES!r} or "
                f"{ENCRYPTION_NONE!r}"
            )
        if not MIN_CHUNK_SIZE <= self.chunk_size <= MAX_CHUNK_SIZE:
            raise InvalidArgument(
                f"chunk size {self.chunk_size} is outside {MIN_CHUNK_SIZE}..{MAX_CHUNK_SIZE}"
            )
        if not MIN_PACK_SIZE <= self.pack_size <= MAX_PACK_SIZE:
            raise InvalidArgument(
                f"pack size {self.pack_size} is outside {MIN_PACK_SIZE}..{MAX_PACK_SIZE}"
            )
        if not 1 <= self.compression_level <= 22:
            raise InvalidArgument(f"zstd level {self.compression_level} is outside 1..22")
        has_id_key = self.id_key is not None and len(self.id_key) == KEY_BYTES
        if has_id_key != (self.encryption == ENCRYPTION_NONE):
            raise InvalidArgument("an id key is stored exactly when encryption is 'none'")

    def _document(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "format": FORMAT_NAME,
            "version": self.version,
            "repository_id": self.repository_id,
            "created": self.created,
            "chunk_size": self.chunk_size,
            "pack_size": self.pack_size,
            "compression": {"algorithm": "zstd", "level": self.compression_level},
            "hash": HASH_ALGORITHM,
            "encryption": self.encryption,
        }
        if self.id_key is not None:
            document["id_key"] = _codec.b64encode(self.id_key)
        return document

    def canonical(self) -> bytes:
        """The bytes the MAC covers: canonical JSON of every field but `mac`."""
        return _codec.dumps(self._document())

    def encode(self, mac: bytes) -> bytes:
        """The stored object: the document plus its MAC."""
        document = self._document()
        document["mac"] = _codec.b64encode(mac)
        return _codec.dumps(document)


def _check_version(document: dict[str, Any], where: str) -> None:
    if document.get("format") != FORMAT_NAME:
        raise Corrupt(f"{where}: 'config' is not an Amber backup repository config")
    version = _codec.get(document, "version", int, f"{where} config")
    if version > FORMAT_VERSION:
        raise FailedPrecondition(
            f"the backup repository at {where} has format version {version}; this Amber reads "
            f"version {FORMAT_VERSION} only: upgrade Amber to use this repository"
        )
    if version != FORMAT_VERSION:
        raise FailedPrecondition(
            f"the backup repository at {where} has format version {version}, which this Amber "
            "does not read"
        )


def parse_config(data: bytes, where: str) -> tuple[RepositoryConfig, bytes]:
    """Parse the stored config; return it and its (not yet verified) MAC.

    An unknown major version is FailedPrecondition; anything malformed is Corrupt.
    """
    what = f"config of the backup repository at {where}"
    document = _codec.loads_object(data, what)
    _check_version(document, where)
    if "chunk_id" in document and "hash" not in document:
        raise FailedPrecondition(
            f"the backup repository at {where} was made by an earlier development build of "
            f"Amber (chunk ids {document['chunk_id']!r}); this Amber reads repositories with "
            f"hash {HASH_ALGORITHM!r} only: back up to a new repository"
        )
    compression = _codec.get(document, "compression", dict, what)
    if compression.get("algorithm") != "zstd" or document.get("hash") != HASH_ALGORITHM:
        raise Corrupt(f"{what}: unsupported compression or hash algorithm")
    id_key_text = document.get("id_key")
    config = RepositoryConfig(
        repository_id=_codec.get(document, "repository_id", str, what),
        created=_codec.get(document, "created", float, what),
        encryption=_codec.get(document, "encryption", str, what),
        chunk_size=_codec.get(document, "chunk_size", int, what),
        pack_size=_codec.get(document, "pack_size", int, what),
        compression_level=_codec.get(compression, "level", int, what),
        id_key=None if id_key_text is None else _codec.b64decode(str(id_key_text), what),
    )
    try:
        config.validate()
    except InvalidArgument as e:
        raise Corrupt(f"{what}: {e.message}") from e
    mac = _codec.b64decode(_codec.get(document, "mac", str, what), what)
    return config, mac
