"""The S3 store's upload body: parts read as one seekable file (pure logic)."""

from __future__ import annotations

import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amber.blobstore.s3store import _PartsBody

parts_strategy = st.lists(st.binary(max_size=50), max_size=8)


@settings(max_examples=100, deadline=None)
@given(parts=parts_strategy, sizes=st.lists(st.integers(1, 70), min_size=1, max_size=20))
def test_reads_in_any_sizes_give_the_concatenation(parts: list[bytes], sizes: list[int]) -> None:
    body = _PartsBody(parts)
    whole = b"".join(parts)
    assert len(body) == len(whole)
    got = bytearray()
    for size in sizes:
        got += body.read(size)
    got += body.read()
    assert bytes(got) == whole
    assert body.read(10) == b""  # at the end
    assert body.tell() == len(whole)


@settings(max_examples=100, deadline=None)
@given(parts=parts_strategy, data=st.data())
def test_seek_then_read(parts: list[bytes], data: st.DataObject) -> None:
    whole = b"".join(parts)
    body = _PartsBody([bytearray(p) for p in parts])
    start = data.draw(st.integers(0, len(whole) + 5))
    assert body.seek(start) == start
    assert body.read() == whole[start:]
    assert body.seek(-len(whole), io.SEEK_END) == 0
    assert body.seek(2, io.SEEK_CUR) == 2
    assert body.read(3) == whole[2:5]


def test_negative_seek_is_refused() -> None:
    body = _PartsBody([b"abc"])
    with pytest.raises(ValueError, match="negative"):
        body.seek(-1)
    assert body.seekable()
    assert body.readable()
