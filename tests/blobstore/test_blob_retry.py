"""RetryingStore over a FaultyStore over a real FileStore: what is retried, how, and when not."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from amber.blobstore.base import BlobInfo, BlobStore
from amber.blobstore.faulty import Fault, FaultyStore
from amber.blobstore.filestore import FileStore
from amber.blobstore.retry import RetryingStore, RetryWait
from amber.domain.errors import (
    AmberError,
    InvalidArgument,
    NotFound,
    OutOfSpace,
    PermissionDenied,
    Unavailable,
)


class FakeClock:
    """Time that passes only when a test sleeps (or says so)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def retrying(inner: BlobStore, clock: FakeClock, **kwargs: object) -> RetryingStore:
    return RetryingStore(
        inner,
        sleep=clock.sleep,
        clock=clock,
        rng=random.Random(1234),
        **kwargs,  # type: ignore[arg-type]
    )


def test_transient_faults_are_retried_until_success(file_store: FileStore) -> None:
    clock = FakeClock()
    faulty = FaultyStore(
        file_store,
        [
            Fault("put", times=2, kind="error"),
            Fault("get", kind="reset"),
            Fault("get", kind="timeout"),
            Fault("stat", kind="error"),
            Fault("exists", kind="error"),
            Fault("delete", kind="reset"),
            Fault("get_range", kind="timeout"),
            Fault("list", kind="error"),
        ],
    )
    store = retrying(faulty, clock)
    store.put("data/x", b"payload")
    assert store.get("data/x") == b"payload"
    assert store.get_range("data/x", 3, 3) == b"loa"
    assert store.stat("data/x").size == 7
    assert store.exists("data/x")
    assert [i.key for i in store.list("data/")] == ["data/x"]
    store.delete("data/x")
    assert not file_store.exists("data/x")
    faulty.assert_all_fired()
    assert len(clock.sleeps) == 9


@pytest.mark.parametrize(
    "error",
    [
        NotFound("gone"),
        PermissionDenied("no"),
        InvalidArgument("bad"),
        OutOfSpace("full"),
    ],
)
def test_permanent_errors_are_not_retried(error: AmberError) -> None:
    class Failing(FileStore):
        calls = 0

        def get(self, key: str) -> bytes:
            Failing.calls += 1
            raise error

    clock = FakeClock()
    store = retrying(Failing(Path("/nonexistent")), clock)
    with pytest.raises(type(error)) as caught:
        store.get("k")
    assert caught.value is error
    assert Failing.calls == 1
    assert clock.sleeps == []


def test_missing_key_on_a_real_store_is_not_retried(file_store: FileStore) -> None:
    clock = FakeClock()
    with pytest.raises(NotFound):
        retrying(file_store, clock).get("missing")
    assert clock.sleeps == []


def test_giving_up_reraises_unavailable_with_the_attempt_count(file_store: FileStore) -> None:
    clock = FakeClock()
    faulty = FaultyStore(file_store, [Fault("get", times=10, kind="reset")])
    file_store.put("k", b"v")
    store = retrying(faulty, clock, attempts=4)
    with pytest.raises(Unavailable, match=r"connection reset.*gave up after 4 attempts") as caught:
        store.get("k")
    assert isinstance(caught.value.__cause__, Unavailable)
    assert len(clock.sleeps) == 3
    with pytest.raises(AssertionError, match="fired 4 of 10 times"):
        faulty.assert_all_fired()


def test_backoff_grows_and_is_capped() -> None:
    clock = FakeClock()
    script = [Fault("get", times=7, kind="error")]
    faulty = FaultyStore(FileStore(Path("/unused")), script)
    store = retrying(faulty, clock, attempts=8, base_delay=0.2, max_delay=1.0)
    with pytest.raises(Unavailable, match="gave up after 8 attempts"):
        store.get("k")
    nominal = [0.2, 0.4, 0.8, 1.0, 1.0, 1.0, 1.0]
    assert len(clock.sleeps) == len(nominal)
    for pause, limit in zip(clock.sleeps, nominal, strict=True):
        assert limit / 2 <= pause <= limit  # equal jitter: within [d/2, d]
    assert clock.sleeps[0] < clock.sleeps[2] < clock.sleeps[3] + 0.5
    assert max(clock.sleeps) <= 1.0
    assert len(set(clock.sleeps)) > 1  # jittered, not a fixed schedule


def test_jitter_comes_from_the_injected_random(file_store: FileStore) -> None:
    runs = []
    for _ in range(2):
        clock = FakeClock()
        faulty = FaultyStore(file_store, [Fault("exists", times=3)])
        RetryingStore(faulty, sleep=clock.sleep, clock=clock, rng=random.Random(5)).exists("k")
        runs.append(clock.sleeps)
    assert runs[0] == runs[1]


def test_deadline_stops_retrying_before_attempts_run_out(file_store: FileStore) -> None:
    clock = FakeClock()
    faulty = FaultyStore(file_store, [Fault("get", times=20)])
    store = retrying(faulty, clock, attempts=20, base_delay=0.2, max_delay=5.0, deadline=2.0)
    with pytest.raises(Unavailable, match="gave up after") as caught:
        store.get("k")
    assert sum(clock.sleeps) <= 2.0
    assert "after 20 attempts" not in str(caught.value)


def test_a_slow_timeout_counts_against_the_deadline(file_store: FileStore) -> None:
    clock = FakeClock()

    def hung_for_a_while(method: str, key: str) -> None:
        clock.now += 30.0  # the call hung for 30 s before failing

    faulty = FaultyStore(file_store, [Fault("get", times=2, kind="timeout")], hung_for_a_while)
    store = retrying(faulty, clock, deadline=10.0)
    with pytest.raises(Unavailable, match="gave up after 1 attempt\\)"):
        store.get("k")
    assert clock.sleeps == []


def test_a_torn_put_is_repaired_by_the_retry(file_store: FileStore) -> None:
    clock = FakeClock()
    faulty = FaultyStore(file_store, [Fault("put", key_prefix="data/", kind="partial_write")])
    data = bytes(range(256)) * 8
    retrying(faulty, clock).put("data/pack", data)
    assert file_store.get("data/pack") == data
    assert faulty.fired == [("put", "data/pack", "partial_write")]
    faulty.assert_all_fired()


class BreaksMidList:
    """A store whose listings fail after `good` keys, `failures` times (test double)."""

    def __init__(self, inner: FileStore, good: int, failures: int) -> None:
        self.inner, self.good, self.failures = inner, good, failures
        self.listings = 0

    def list(self, prefix: str = "") -> Iterator[BlobInfo]:
        self.listings += 1
        return self._list(prefix)

    def _list(self, prefix: str) -> Iterator[BlobInfo]:
        for count, info in enumerate(sorted(self.inner.list(prefix), key=lambda i: i.key)):
            if count == self.good and self.failures:
                self.failures -= 1
                raise Unavailable("connection reset while listing")
            yield info


def test_a_listing_that_breaks_midway_restarts_without_duplicates(file_store: FileStore) -> None:
    for i in range(10):
        file_store.put(f"k/{i}", b"")
    flaky = BreaksMidList(file_store, good=4, failures=2)
    clock = FakeClock()
    listed = [i.key for i in retrying(flaky, clock).list("k/")]  # type: ignore[arg-type]
    assert sorted(listed) == [f"k/{i}" for i in range(10)]
    assert len(listed) == 10
    assert flaky.listings == 3
    assert len(clock.sleeps) == 2


def test_a_listing_that_keeps_breaking_gives_up(file_store: FileStore) -> None:
    for i in range(3):
        file_store.put(f"k/{i}", b"")
    flaky = BreaksMidList(file_store, good=1, failures=100)
    clock = FakeClock()
    listing = retrying(flaky, clock, attempts=3).list("k/")  # type: ignore[arg-type]
    with pytest.raises(Unavailable, match="gave up after 3 attempts"):
        list(listing)
    assert len(clock.sleeps) == 2


def test_bad_prefix_is_rejected_when_list_is_called(file_store: FileStore) -> None:
    with pytest.raises(InvalidArgument):
        retrying(file_store, FakeClock()).list("../escape")


def test_retry_settings_are_checked() -> None:
    inner = FileStore(Path("/unused"))
    with pytest.raises(InvalidArgument):
        RetryingStore(inner, attempts=0)
    with pytest.raises(InvalidArgument):
        RetryingStore(inner, base_delay=2.0, max_delay=1.0)
    with pytest.raises(InvalidArgument):
        RetryingStore(inner, deadline=0)


def test_a_store_that_never_answered_gets_the_short_budget(file_store: FileStore) -> None:
    clock = FakeClock()
    heard: list[RetryWait] = []
    faulty = FaultyStore(file_store, [Fault("get", times=100)])
    store = retrying(
        faulty, clock, attempts=100, deadline=120.0, first_deadline=5.0, on_retry=heard.append
    )
    with pytest.raises(Unavailable, match="gave up after"):
        store.get("k")
    assert sum(clock.sleeps) <= 5.0
    assert heard == []  # a misconfigured target fails quickly, with one line
    assert not store.answered


def test_an_outage_after_the_first_answer_is_ridden_out_and_announced(
    file_store: FileStore,
) -> None:
    clock = FakeClock()
    heard: list[RetryWait] = []
    file_store.put("k", b"v")
    faulty = FaultyStore(file_store, [Fault("get", times=12, kind="reset")])
    store = retrying(
        faulty,
        clock,
        attempts=100,
        base_delay=0.25,
        max_delay=8.0,
        deadline=120.0,
        first_deadline=5.0,
        on_retry=heard.append,
    )
    assert store.exists("k")  # the first answer
    assert store.get("k") == b"v"  # after 12 failures, far past the 5 s first-contact budget
    assert sum(clock.sleeps) > 5.0
    assert [wait.attempt for wait in heard] == list(range(1, 13))
    assert all(wait.budget == 120.0 for wait in heard)
    assert "connection reset" in heard[0].message
    assert heard[-1].waited == pytest.approx(sum(clock.sleeps[:-1]))
    faulty.assert_all_fired()


def test_the_retry_budget_still_ends_a_long_outage(file_store: FileStore) -> None:
    clock = FakeClock()
    file_store.put("k", b"v")
    faulty = FaultyStore(file_store, [Fault("get", times=1000)])
    store = retrying(faulty, clock, attempts=1000, max_delay=8.0, deadline=120.0)
    assert store.exists("k")
    with pytest.raises(Unavailable, match="gave up after"):
        store.get("k")
    assert 100.0 < sum(clock.sleeps) <= 120.0


def test_a_listing_that_never_reached_the_store_keeps_the_short_budget(
    file_store: FileStore,
) -> None:
    clock = FakeClock()

    class LazilyUnreachable(FaultyStore):
        """Like S3: `list` returns at once, the request fails when iterated."""

        def list(self, prefix: str = "") -> Iterator[BlobInfo]:
            def failing() -> Iterator[BlobInfo]:
                raise Unavailable("cannot reach the service (injected)")
                yield  # a generator

            return failing()

    store = retrying(
        LazilyUnreachable(file_store, []),
        clock,
        attempts=100,
        deadline=120.0,
        first_deadline=5.0,
    )
    with pytest.raises(Unavailable, match="gave up after"):
        list(store.list("data/"))
    assert sum(clock.sleeps) <= 5.0
    assert not store.answered
