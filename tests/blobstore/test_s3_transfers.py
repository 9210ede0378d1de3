"""Concurrent uploads and downloads through one S3Store, and bodies damaged on the way.

Real servers only (moto and SeaweedFS from conftest, over HTTP on 127.0.0.1). A backup uploads
packs from several threads through one store and a restore reads coalesced ranges of them from
several threads: every object must come back byte for byte, and a body that changed after it
was signed must never be stored.
"""

from __future__ import annotations

import itertools
import random
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import pytest

from amber.blobstore.retry import RetryingStore
from amber.blobstore.s3store import S3Store
from amber.domain.errors import NotFound, Unavailable

if TYPE_CHECKING:
    from tests.blobstore.conftest import S3Server

THREADS = 8
KEY = "data/03/pack"


def pack_parts(seed: int) -> list[bytes]:
    """Parts of a pack-like object: uneven sizes, one empty, ~1.3 MiB in all."""
    rng = random.Random(seed)
    return [rng.randbytes(rng.randrange(1, 400_000)) for _ in range(6)] + [b""]


def test_parallel_uploads_through_one_store_are_byte_identical(s3_server: S3Server) -> None:
    store = S3Store(s3_server.config(max_connections=THREADS))
    objects = {f"data/{i:02x}/pack-{i}": pack_parts(i) for i in range(24)}
    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(lambda item: store.stage(*item), objects.items()))
    listed = {info.key: info.size for info in store.list("data/")}
    assert listed == {key: sum(map(len, parts)) for key, parts in objects.items()}
    with ThreadPoolExecutor(THREADS) as pool:
        got = dict(zip(objects, pool.map(store.get, objects), strict=True))
    for key, parts in objects.items():
        assert got[key] == b"".join(parts), key


def test_ranged_parallel_download_equals_the_object(s3_server: S3Server) -> None:
    """What a restore does: many ranged reads of one pack at once, coalesced to uneven sizes,
    plus reads that run past the end."""
    store = S3Store(s3_server.config(max_connections=THREADS))
    whole = b"".join(pack_parts(99))
    store.put("data/99/pack", whole)
    rng = random.Random(7)
    cuts = sorted({0, len(whole), *(rng.randrange(len(whole)) for _ in range(40))})
    ranges = list(itertools.pairwise(cuts))
    with ThreadPoolExecutor(THREADS) as pool:
        pieces = list(
            pool.map(lambda r: store.get_range("data/99/pack", r[0], r[1] - r[0]), ranges)
        )
    assert b"".join(pieces) == whole
    tail = store.get_range("data/99/pack", len(whole) - 10, 1000)
    assert tail == whole[-10:]
    assert store.get_range("data/99/pack", len(whole) + 5, 10) == b""


def corrupt_after_signing(store: S3Store, times: int) -> list[int]:
    """Flip one byte of the next `times` PutObject bodies after botocore signed them (as a bad
    link or NIC would); returns a list that counts the corrupted sends."""
    corrupted: list[int] = []

    def flip(request: Any, **_: object) -> None:
        if len(corrupted) >= times:
            return
        body = request.body
        if hasattr(body, "seek"):
            body.seek(0)
        data = bytearray(body.read() if hasattr(body, "read") else body)
        data[len(data) // 2] ^= 0x01
        request.body = bytes(data)
        corrupted.append(len(data))

    store._client.meta.events.register("before-send.s3.PutObject", flip)
    return corrupted


@pytest.mark.parametrize("staged", [False, True], ids=["put", "stage"])
def test_a_body_changed_after_signing_is_refused_and_not_stored(
    weed_server: S3Server, staged: bool
) -> None:
    """SeaweedFS only: moto checks the signature of the headers but hashes no body it receives.
    The body's CRC32 travels in `x-amz-checksum-crc32`: the server recomputes it and refuses
    a body that does not match (the signed SHA-256 alone does not make SeaweedFS refuse it);
    the refusal is Unavailable, since sending again may work."""
    store = S3Store(weed_server.config())
    corrupted = corrupt_after_signing(store, times=1)
    parts = pack_parts(3)
    upload = (
        (lambda: store.stage(KEY, parts)) if staged else lambda: store.put(KEY, b"".join(parts))
    )
    with pytest.raises(Unavailable, match="BadDigest"):
        upload()
    assert corrupted == [sum(map(len, parts))]
    with pytest.raises(NotFound):
        store.stat(KEY)
    assert no_multipart_uploads(store)


def no_multipart_uploads(store: S3Store) -> bool:
    """Whether the store's prefix holds no incomplete multipart upload (packs are single PUTs,
    so a failed one leaves nothing behind to abort)."""
    config = store.config
    listed = store._client.list_multipart_uploads(Bucket=config.bucket, Prefix=config.prefix)
    return not listed.get("Uploads")


def test_uploads_are_single_puts_that_leave_no_multipart_upload(s3_server: S3Server) -> None:
    store = S3Store(s3_server.config())
    operations: list[str] = []
    store._client.meta.events.register(
        "before-send.s3.*", lambda request, **kw: operations.append(kw["event_name"])
    )
    store.stage("data/05/pack", pack_parts(5) * 8)  # ~10 MiB
    assert operations == ["before-send.s3.PutObject"]
    assert no_multipart_uploads(store)


def test_a_corrupted_upload_is_retried_and_lands_intact(weed_server: S3Server) -> None:
    inner = S3Store(weed_server.config())
    corrupted = corrupt_after_signing(inner, times=2)
    store = RetryingStore(inner, attempts=4, sleep=lambda _s: None)
    parts = pack_parts(4)
    store.stage("data/04/pack", parts)
    assert len(corrupted) == 2
    assert store.get("data/04/pack") == b"".join(parts)
