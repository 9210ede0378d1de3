"""The one contract every BlobStore implementation must keep, run against each of them."""

from __future__ import annotations

import time

import pytest

from amber.blobstore.base import BlobInfo, BlobStore
from amber.domain.errors import InvalidArgument, NotFound

EVERY_BYTE = bytes(range(256)) * 5 + bytes(reversed(range(256)))

BAD_KEYS = [
    "",
    "/abs",
    "a//b",
    "a/",
    "..",
    "../x",
    "a/../b",
    "./a",
    "a/.",
    "a\\b",
    "a\0b",
    "a\nb",
    ".amber-tmp.x",
    "d/.amber-tmp.123",
    "x" * 1025,
    "y" * 256,
]
BAD_PREFIXES = ["/x", "../", "a/../", "a//", "a\\", "a\0", "./"]


def keys(infos: object) -> list[str]:
    assert not isinstance(infos, list), "list() returns an iterator, not a list"
    return sorted(info.key for info in infos)  # type: ignore[attr-defined]


def test_put_get_roundtrip(store: BlobStore) -> None:
    store.put("config", b"hello")
    assert store.get("config") == b"hello"
    assert store.exists("config")
    assert store.stat("config").size == 5


def test_every_byte_value_survives(store: BlobStore) -> None:
    store.put("data/bin", EVERY_BYTE)
    assert store.get("data/bin") == EVERY_BYTE
    assert store.get_range("data/bin", 250, 12) == EVERY_BYTE[250:262]


def test_empty_object(store: BlobStore) -> None:
    store.put("empty", b"")
    assert store.get("empty") == b""
    assert store.exists("empty")
    assert store.stat("empty").size == 0
    assert store.get_range("empty", 0, 10) == b""
    assert [(i.key, i.size) for i in store.list("empty")] == [("empty", 0)]


def test_overwrite_replaces_content(store: BlobStore) -> None:
    store.put("k", b"first version")
    store.put("k", b"second")
    assert store.get("k") == b"second"
    assert [(i.key, i.size) for i in store.list("k")] == [("k", 6)]


def test_staged_objects_are_whole_after_flush(store: BlobStore) -> None:
    store.stage("data/aa/one", [b"first" * 1000])
    store.stage("data/bb/two", [EVERY_BYTE])
    store.flush()
    assert store.get("data/aa/one") == b"first" * 1000
    assert store.get("data/bb/two") == EVERY_BYTE
    assert keys(store.list("data/")) == ["data/aa/one", "data/bb/two"]
    store.flush()  # nothing staged: a no-op
    assert store.get("data/aa/one") == b"first" * 1000


def test_staged_parts_are_stored_as_their_concatenation(store: BlobStore) -> None:
    # More parts than one writev takes (IOV_MAX is 1024 on Linux), empty parts, bytearrays
    # (sealed chunks are bytearrays) and puts of a bytearray.
    parts: list[bytes | bytearray] = [b"head", b"", bytearray(EVERY_BYTE) * 3]
    parts += [bytes([i % 251]) * (i % 7) for i in range(1500)]
    store.stage("data/cc/many", parts)
    store.put("single", bytearray(b"sealed"))
    store.flush()
    assert store.get("data/cc/many") == b"".join(parts)
    assert store.stat("data/cc/many").size == sum(map(len, parts))
    assert store.get("single") == b"sealed"


def test_staging_checks_the_key_at_once(store: BlobStore) -> None:
    with pytest.raises(InvalidArgument):
        store.stage("../escape", [b"x"])
    store.flush()
    assert keys(store.list()) == []


def test_missing_key_is_not_found(store: BlobStore) -> None:
    with pytest.raises(NotFound, match="nope"):
        store.get("nope")
    with pytest.raises(NotFound):
        store.get_range("nope", 0, 1)
    with pytest.raises(NotFound):
        store.get_range("nope", 0, 0)
    with pytest.raises(NotFound):
        store.stat("data/nope")
    assert not store.exists("nope")
    assert not store.exists("data/deeper/nope")


def test_delete(store: BlobStore) -> None:
    store.put("data/aa", b"x")
    store.put("data/bb", b"y")
    store.delete("data/aa")
    assert not store.exists("data/aa")
    with pytest.raises(NotFound):
        store.get("data/aa")
    assert keys(store.list()) == ["data/bb"]


def test_deleting_a_missing_key_is_fine(store: BlobStore) -> None:
    store.put("keep", b"k")
    store.delete("never-was")
    store.delete("no/such/dir/key")
    assert keys(store.list()) == ["keep"]


def test_get_range(store: BlobStore) -> None:
    data = bytes(range(100))
    store.put("r", data)
    assert store.get_range("r", 0, 10) == data[:10]
    assert store.get_range("r", 42, 7) == data[42:49]
    assert store.get_range("r", 95, 10) == data[95:]  # short only at the end
    assert store.get_range("r", 100, 5) == b""
    assert store.get_range("r", 500, 5) == b""
    assert store.get_range("r", 3, 0) == b""
    with pytest.raises(InvalidArgument):
        store.get_range("r", -1, 5)
    with pytest.raises(InvalidArgument):
        store.get_range("r", 0, -5)


def test_stat_reports_size_and_recent_mtime(store: BlobStore) -> None:
    store.put("data/s", b"12345678")
    info = store.stat("data/s")
    assert info == BlobInfo(key="data/s", size=8, mtime=info.mtime)
    assert abs(info.mtime - time.time()) < 600


def test_list_with_nested_prefixes(store: BlobStore) -> None:
    for key in ["data/3f/aa", "data/3f/ab", "data/40/cc", "index/1", "config", "dat"]:
        store.put(key, key.encode())
    assert keys(store.list()) == sorted(
        ["data/3f/aa", "data/3f/ab", "data/40/cc", "index/1", "config", "dat"]
    )
    assert keys(store.list("data/")) == ["data/3f/aa", "data/3f/ab", "data/40/cc"]
    assert keys(store.list("data/3f")) == ["data/3f/aa", "data/3f/ab"]
    assert keys(store.list("data/3f/a")) == ["data/3f/aa", "data/3f/ab"]
    assert keys(store.list("data/3f/ab")) == ["data/3f/ab"]
    assert keys(store.list("dat")) == ["dat", "data/3f/aa", "data/3f/ab", "data/40/cc"]
    assert keys(store.list("conf")) == ["config"]
    assert keys(store.list("nothing/")) == []
    assert keys(store.list("config/")) == []
    sizes = {i.key: i.size for i in store.list("index/")}
    assert sizes == {"index/1": len(b"index/1")}


def test_list_pages_through_many_keys(store: BlobStore) -> None:
    # the S3 fixture lists 7 keys per page, so this takes several pages there
    expected = [f"many/{i:03d}" for i in range(40)]
    for key in expected:
        store.put(key, b"")
    store.put("other", b"")
    listed = [info.key for info in store.list("many/")]
    assert len(listed) == len(set(listed)) == 40
    assert sorted(listed) == expected


@pytest.mark.parametrize("key", BAD_KEYS)
def test_bad_keys_are_invalid(store: BlobStore, key: str) -> None:
    with pytest.raises(InvalidArgument, match="invalid blob key"):
        store.put(key, b"x")
    for call in (store.get, store.stat, store.exists, store.delete):
        with pytest.raises(InvalidArgument):
            call(key)
    with pytest.raises(InvalidArgument):
        store.get_range(key, 0, 1)


@pytest.mark.parametrize("prefix", BAD_PREFIXES)
def test_bad_prefixes_are_invalid_at_once(store: BlobStore, prefix: str) -> None:
    with pytest.raises(InvalidArgument, match="invalid blob prefix"):
        store.list(prefix)  # raised by the call, not only when iterating


def test_unicode_keys(store: BlobStore) -> None:
    store.put("näme/ß-€", b"u")
    assert store.get("näme/ß-€") == b"u"
    assert keys(store.list("näme/")) == ["näme/ß-€"]


def test_describe_names_the_target(store: BlobStore) -> None:
    text = store.describe()
    assert text.startswith(("file://", "s3://"))
    assert "\n" not in text
