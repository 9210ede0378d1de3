"""FaultyStore itself: faults fire in order, for matching calls, and really do damage."""

from __future__ import annotations

import pytest

from amber.blobstore.faulty import Fault, FaultyStore
from amber.blobstore.filestore import FileStore
from amber.domain.errors import InvalidArgument, Unavailable

DATA = bytes(range(256)) * 4


def test_corrupt_read_really_changes_the_bytes(file_store: FileStore) -> None:
    file_store.put("data/c", DATA)
    faulty = FaultyStore(
        file_store,
        [Fault("get", kind="corrupt_read"), Fault("get_range", kind="corrupt_read")],
    )
    bad = faulty.get("data/c")
    assert len(bad) == len(DATA)
    assert sum(a != b for a, b in zip(bad, DATA, strict=True)) == 1
    bad_range = faulty.get_range("data/c", 10, 20)
    assert bad_range != DATA[10:30]
    assert len(bad_range) == 20
    assert faulty.get("data/c") == DATA  # fired once; the stored object is intact
    assert file_store.get("data/c") == DATA
    faulty.assert_all_fired()


def test_corrupt_read_of_an_empty_object_is_visible(file_store: FileStore) -> None:
    file_store.put("e", b"")
    assert FaultyStore(file_store, [Fault("get", kind="corrupt_read")]).get("e") != b""


def test_partial_write_leaves_a_torn_object(file_store: FileStore) -> None:
    faulty = FaultyStore(file_store, [Fault("put", kind="partial_write")])
    with pytest.raises(Unavailable, match="half the upload"):
        faulty.put("data/pack", DATA)
    assert file_store.get("data/pack") == DATA[: len(DATA) // 2]
    faulty.put("data/pack", DATA)  # the fault is spent
    assert file_store.get("data/pack") == DATA


@pytest.mark.parametrize("kind", ["error", "timeout", "reset"])
def test_failing_kinds_raise_unavailable_without_calling_inner(
    file_store: FileStore, kind: str
) -> None:
    faulty = FaultyStore(file_store, [Fault("put", kind=kind)])  # type: ignore[arg-type]
    with pytest.raises(Unavailable, match="injected fault"):
        faulty.put("k", b"v")
    assert not file_store.exists("k")


def test_timeout_calls_the_hook_first(file_store: FileStore) -> None:
    seen: list[tuple[str, str]] = []
    faulty = FaultyStore(
        file_store, [Fault("stat", kind="timeout")], on_timeout=lambda m, k: seen.append((m, k))
    )
    with pytest.raises(Unavailable, match="timeout"):
        faulty.stat("some/key")
    assert seen == [("stat", "some/key")]


def test_faults_match_method_and_key_prefix_in_order(file_store: FileStore) -> None:
    file_store.put("config", b"c")
    file_store.put("data/1", b"d")
    faulty = FaultyStore(
        file_store,
        [
            Fault("get", key_prefix="data/", kind="reset"),
            Fault("get", key_prefix="data/", kind="error", times=2),
        ],
    )
    assert faulty.get("config") == b"c"  # no fault matches
    assert faulty.exists("data/1")  # another method
    for _ in range(3):
        with pytest.raises(Unavailable):
            faulty.get("data/1")
    assert faulty.get("data/1") == b"d"
    assert faulty.fired == [
        ("get", "data/1", "reset"),
        ("get", "data/1", "error"),
        ("get", "data/1", "error"),
    ]
    faulty.assert_all_fired()


def test_list_faults_match_the_prefix(file_store: FileStore) -> None:
    file_store.put("index/1", b"")
    faulty = FaultyStore(file_store, [Fault("list", key_prefix="index")])
    assert list(faulty.list("data/")) == []
    with pytest.raises(Unavailable):
        faulty.list("index/")
    assert [i.key for i in faulty.list("index/")] == ["index/1"]


def test_assert_all_fired_names_the_faults_left(file_store: FileStore) -> None:
    faulty = FaultyStore(
        file_store,
        [Fault("delete", key_prefix="locks/"), Fault("put", times=3, kind="reset")],
    )
    with pytest.raises(Unavailable):
        faulty.put("x", b"")
    with pytest.raises(AssertionError) as caught:
        faulty.assert_all_fired()
    message = str(caught.value)
    assert "key_prefix='locks/'" in message
    assert "fired 0 of 1 times" in message
    assert "fired 1 of 3 times" in message


def test_assert_all_fired_passes_for_an_empty_script(file_store: FileStore) -> None:
    faulty = FaultyStore(file_store, [])
    faulty.put("k", b"v")
    faulty.assert_all_fired()
    assert faulty.get("k") == b"v"
    assert faulty.describe() == f"faulty {file_store.describe()}"


@pytest.mark.parametrize(
    "fault",
    [
        {"method": "get", "kind": "partial_write"},
        {"method": "put", "kind": "corrupt_read"},
        {"method": "list", "kind": "corrupt_read"},
        {"method": "get", "kind": "explode"},
        {"method": "rename"},
        {"method": "get", "times": 0},
    ],
)
def test_nonsense_faults_are_rejected(fault: dict[str, object]) -> None:
    with pytest.raises(InvalidArgument):
        Fault(**fault)  # type: ignore[arg-type]
