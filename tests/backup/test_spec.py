"""docs/repository-format.md is the truth: an independent reader, written from that page with
only hashlib/hmac/struct/json, zstandard and `cryptography`, restores a backup byte for byte."""

from __future__ import annotations

import hmac
import json
import struct
import unicodedata

import blake3
import zstandard
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from amber.backup.manifest import Patch
from amber.backup.repository import Repository
from amber.backup.writer import ManifestDraft
from amber.blobstore.base import BlobStore
from tests.backup.helpers import CHUNK, PASSWORD, backup, random_bytes, volume


def _b64(text: str) -> bytes:
    import base64

    return base64.b64decode(text)


def _subkey(master: bytes, repository_id: str, purpose: str) -> bytes:
    info = b"amber/1/" + purpose.encode()
    return HKDF(SHA256(), 32, repository_id.encode(), info).derive(master)


def _open(key: bytes, kind: str, sealed: bytes, context: bytes = b"") -> bytes:
    ad = b"amber/1/" + kind.encode() + b"\x00" + context
    return AESGCM(key).decrypt(sealed[:12], sealed[12:], ad)


def _master_key(store: BlobStore, config: dict[str, object], password: str) -> bytes:
    for info in store.list("keys/"):
        slot = json.loads(store.get(info.key))
        kdf = slot["kdf"]
        secret = unicodedata.normalize("NFC", password).encode()
        kek = Scrypt(_b64(kdf["salt"]), 32, kdf["n"], kdf["r"], kdf["p"]).derive(secret)
        wrapped = _b64(slot["wrapped"])
        ad = b"amber/1/key-slot\x00" + str(config["repository_id"]).encode()
        return AESGCM(kek).decrypt(wrapped[:12], wrapped[12:], ad)
    raise AssertionError("no key slot")


def _index(store: BlobStore, key: bytes) -> dict[bytes, tuple[bytes, int, int, int, int]]:
    chunks = {}
    for info in store.list("index/"):
        sealed = store.get(info.key)
        assert info.key == f"index/{blake3.blake3(sealed).hexdigest()}"
        plain = _open(key, "index", sealed)
        assert plain[:8] == b"AMBRIDX1"
        (superseded,) = struct.unpack_from("<I", plain, 8)
        pos = 12 + 32 * superseded
        (packs,) = struct.unpack_from("<I", plain, pos)
        pos += 4
        for _ in range(packs):
            pack_id, _size, count = struct.unpack_from("<32sQI", plain, pos)
            pos += 44
            for _ in range(count):
                chunk_id, offset, length, raw, flags = struct.unpack_from("<32sQIIB", plain, pos)
                pos += 49
                chunks[chunk_id] = (pack_id, offset, length, raw, flags)
    return chunks


def _varints(data: bytes) -> list[int]:
    values, value, shift = [], 0, 0
    for byte in data:
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            values.append(value)
            value = shift = 0
    return values


def _patches(chunks: dict[str, object]) -> list[tuple[int, int, bytes, int]]:
    """Version 2: (offset, length, chunk id, chunk offset) per patch, four varints each."""
    table = _b64(str(chunks["table"]))
    values = _varints(_b64(str(chunks.get("patches", ""))))
    patches, offset = [], 0
    for i in range(0, len(values), 4):
        delta, length, index, chunk_offset = values[i : i + 4]
        offset += delta
        patches.append((offset, length, table[index * 32 : index * 32 + 32], chunk_offset))
    return patches


def _chunk_map(chunks: dict[str, object]) -> list[bytes | str]:
    table, runs = _b64(str(chunks["table"])), _b64(str(chunks["runs"]))
    ids = [table[i : i + 32] for i in range(0, len(table), 32)]
    out: list[bytes | str] = []
    pos = 0

    def varint() -> int:
        nonlocal pos
        value = shift = 0
        while True:
            byte = runs[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return value

    while pos < len(runs):
        header = varint()
        count, kind = header >> 2, header & 3
        if kind == 2:
            start = varint()
            out += ids[start : start + count]
        else:
            out += ["hole" if kind == 0 else "zero"] * count
    return out


def restore_from_spec(store: BlobStore, password: str, backup_id: str) -> bytes:
    config = json.loads(store.get("config"))
    assert (config["format"], config["version"], config["encryption"]) == (
        "amber-backup-repository",
        1,
        "aes-256-gcm",
    )
    master = _master_key(store, config, password)
    repository_id = config["repository_id"]
    mac_key = _subkey(master, repository_id, "config-mac")
    unsigned = {k: v for k, v in config.items() if k != "mac"}
    canonical = json.dumps(unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert hmac.digest(mac_key, canonical.encode(), "sha256") == _b64(config["mac"])
    enc, id_key = (
        _subkey(master, repository_id, "encryption"),
        _subkey(master, repository_id, "chunk-id"),
    )

    sealed = store.get(f"backups/{backup_id}")
    manifest = json.loads(
        zstandard.ZstdDecompressor().decompress(_open(enc, "manifest", sealed, backup_id.encode()))
    )
    index = _index(store, enc)

    def chunk(ref: bytes) -> bytes:
        pack_id, offset, stored, raw, flags = index[ref]
        pack = store.get(f"data/{pack_id.hex()[:2]}/{pack_id.hex()}")
        assert blake3.blake3(pack).digest() == pack_id
        magic, version, header_length = struct.unpack("<8sII", pack[-16:])
        assert (magic, version) == (b"AMBRPACK", 1)
        header = _open(enc, "pack-header", pack[-16 - header_length : -16])
        assert header[:4] == b"APH1"
        payload = _open(enc, "blob", pack[offset : offset + stored], ref)
        plain = zstandard.ZstdDecompressor().decompress(payload) if flags & 1 else payload
        assert len(plain) == raw
        assert blake3.blake3(plain, key=id_key).digest() == ref
        return plain

    out = bytearray()
    size, chunk_size = manifest["volume"]["size"], manifest["chunk_size"]
    assert manifest["version"] in (1, 2)
    for position, ref in enumerate(_chunk_map(manifest["chunks"])):
        length = min(chunk_size, size - position * chunk_size)
        if isinstance(ref, str):
            out += bytes(length)
            continue
        plain = chunk(ref)
        assert len(plain) == length
        out += plain
    assert ("patches" in manifest["chunks"]) == (manifest["version"] == 2)
    for offset, length, ref, chunk_offset in _patches(manifest["chunks"]):
        out[offset : offset + length] = chunk(ref)[chunk_offset : chunk_offset + length]
    return bytes(out)


def test_the_documented_format_restores_a_backup(repo: Repository, store: BlobStore) -> None:
    data = volume([random_bytes(CHUNK, 1), None, b"z" * CHUNK, random_bytes(CHUNK, 2)]) + b"tail"
    backup(repo, random_bytes(3 * CHUNK, 9))  # a second index object
    backup_id = backup(repo, data, holes=[1])
    assert restore_from_spec(store, PASSWORD.text, backup_id) == data


def test_the_documented_format_restores_a_backup_with_patches(
    repo: Repository, store: BlobStore
) -> None:
    base = volume([random_bytes(CHUNK, 1), None, random_bytes(CHUNK, 2)]) + b"tail"
    first = repo.load_manifest(backup(repo, base, holes=[1]))
    writer = repo.writer()
    expected = bytearray(base)
    patches = []
    for offset, data in (
        (100, b"p" * 500),
        (CHUNK + 7, random_bytes(300, 3)),
        (2 * CHUNK, bytes(64)),
    ):
        patches.append(Patch(offset, len(data), writer.add_chunk(b"x" * 9 + data), 9))
        expected[offset : offset + len(data)] = data
    draft = ManifestDraft("vol-a", len(base), first.chunk_map, patches=patches)
    backup_id = writer.commit(draft)
    assert restore_from_spec(store, PASSWORD.text, backup_id) == expected
