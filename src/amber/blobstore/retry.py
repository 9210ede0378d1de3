"""Retries as a wrapper around any BlobStore.

Only `Unavailable` is retried: it is the one error that can go away by itself (a dropped
connection, a 503, a slow NFS server). `NotFound`, `PermissionDenied`, `InvalidArgument` and
`OutOfSpace` describe the world or the request, and asking again cannot change them.

Retrying is safe for every method because objects are immutable and content-addressed: a put
repeated after a lost answer writes the same bytes again (and repairs a torn object on a store
without atomic puts); a repeated delete of a deleted key is not an error.

Backoff doubles from `base_delay` up to `max_delay`, with "equal jitter": each pause is drawn
from [d/2, d] for the nominal delay d, so pauses still grow while concurrent clients spread
out. Sleep, clock and randomness are injected so that tests never wait.

Two budgets: until the store has answered once, a call gives up after `first_deadline`
seconds (a mistyped endpoint or a target that is down when the command starts fails within
seconds); once it has answered, an outage is ridden out for up to `deadline` seconds per call
(a restarting S3 gateway, a failing-over NFS server, a flapping link), and every pause is
announced through `on_retry` so that a command never hangs silently.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

from amber.blobstore.base import BlobInfo, BlobStore, Payload
from amber.domain.errors import InvalidArgument, Unavailable

T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryWait:
    """One pause before a retry, as `on_retry` hears of it."""

    message: str
    """The failure being retried (one line, no secrets)."""
    attempt: int
    """The attempt that failed (1-based)."""
    delay: float
    """Seconds until the next attempt."""
    waited: float
    """Seconds since the call began."""
    budget: float | None
    """Seconds the call may take in all (None: bounded by attempts only)."""


class RetryingStore:
    """A BlobStore that retries the `Unavailable` failures of `inner`.

    A call gives up after `attempts` tries, or earlier when the next pause would end more than
    `deadline` seconds (by `clock`) after the call began — `first_deadline` instead, if given,
    while the store has not answered any call yet; it then raises `Unavailable` whose message
    ends with the number of attempts made, chained to the last failure. `on_retry` hears of
    every pause once the store has answered (before that, the short budget ends soon anyway).
    """

    def __init__(
        self,
        inner: BlobStore,
        *,
        attempts: int = 5,
        base_delay: float = 0.2,
        max_delay: float = 5.0,
        sleep: Callable[[float], None] = time.sleep,
        deadline: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        first_deadline: float | None = None,
        on_retry: Callable[[RetryWait], None] | None = None,
    ) -> None:
        if attempts < 1 or base_delay < 0 or max_delay < base_delay:
            raise InvalidArgument("retry needs attempts >= 1 and 0 <= base_delay <= max_delay")
        for budget in (deadline, first_deadline):
            if budget is not None and budget <= 0:
                raise InvalidArgument("a retry deadline must be a positive number of seconds")
        self._inner = inner
        self._attempts = attempts
        self._base_delay = base_delay
        self._max_delay = max_delay
        self._sleep = sleep
        self._deadline = deadline
        self._clock = clock
        self._rng = rng or random.Random()
        self._first_deadline = first_deadline
        self._on_retry = on_retry
        self._answered = False  # set once any call succeeded; never reset

    @property
    def inner(self) -> BlobStore:
        """The wrapped store."""
        return self._inner

    def __repr__(self) -> str:
        return f"RetryingStore({self._inner!r})"

    def describe(self) -> str:
        """The inner store's description (retrying does not change where data lives)."""
        return self._inner.describe()

    def put(self, key: str, data: Payload) -> None:
        """Store the object, retrying transient failures."""
        self._call(lambda: self._inner.put(key, data))

    def stage(self, key: str, parts: Sequence[Payload]) -> None:
        """Stage the object, retrying transient failures."""
        self._call(lambda: self._inner.stage(key, parts))

    def flush(self) -> None:
        """Publish what was staged, retrying transient failures (a failed flush keeps what it
        could not publish staged, so the retry finishes it)."""
        self._call(self._inner.flush)

    def get(self, key: str) -> bytes:
        """Return the whole object, retrying transient failures."""
        return self._call(lambda: self._inner.get(key))

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        """Return part of the object, retrying transient failures."""
        return self._call(lambda: self._inner.get_range(key, offset, length))

    def stat(self, key: str) -> BlobInfo:
        """Size and time of the object, retrying transient failures."""
        return self._call(lambda: self._inner.stat(key))

    def exists(self, key: str) -> bool:
        """Whether the object exists, retrying transient failures."""
        return self._call(lambda: self._inner.exists(key))

    def delete(self, key: str) -> None:
        """Delete the object, retrying transient failures."""
        self._call(lambda: self._inner.delete(key))

    def list(self, prefix: str = "") -> Iterator[BlobInfo]:
        """List objects; a listing that fails midway starts again and skips the keys already
        returned, so each key is yielded once. Attempts are counted from the last progress:
        a long listing on a flaky link may restart more than `attempts` times in all, but never
        more than `attempts` times in a row without new keys."""
        # checks the prefix eagerly; a lazy listing has not reached the store yet
        first = self._call(lambda: self._inner.list(prefix), answers=False)
        return self._list(prefix, first)

    # -- internals --------------------------------------------------------------------------

    @property
    def answered(self) -> bool:
        """Whether the store has answered a call (the long budget applies)."""
        return self._answered

    def _call(self, fn: Callable[[], T], *, answers: bool = True) -> T:
        start = self._clock()
        attempt = 1
        while True:
            try:
                result = fn()
            except Unavailable as e:
                self._pause_or_give_up(e, attempt, start)
            else:
                self._answered = self._answered or answers
                return result
            attempt += 1

    def _list(self, prefix: str, listing: Iterator[BlobInfo]) -> Iterator[BlobInfo]:
        seen: set[str] = set()
        start = self._clock()
        attempt = 1
        while True:
            before = len(seen)
            try:
                for info in listing:
                    self._answered = True
                    if info.key not in seen:
                        seen.add(info.key)
                        yield info
            except Unavailable as e:
                if len(seen) > before:  # progress: a fresh budget for the rest
                    start, attempt = self._clock(), 1
                self._pause_or_give_up(e, attempt, start)
                attempt += 1
                listing = self._call(lambda: self._inner.list(prefix), answers=False)
            else:
                self._answered = True
                return

    def _budget(self) -> float | None:
        if self._answered or self._first_deadline is None:
            return self._deadline
        return self._first_deadline

    def _pause_or_give_up(self, error: Unavailable, attempt: int, start: float) -> None:
        """Sleep before attempt `attempt + 1`, or raise if the budget is spent."""
        delay = self._delay(attempt)
        budget = self._budget()
        waited = self._clock() - start
        if attempt >= self._attempts or (budget is not None and waited + delay > budget):
            plural = "s" if attempt > 1 else ""
            raise Unavailable(
                f"{error.message} (gave up after {attempt} attempt{plural})"
            ) from error
        log.info("retrying in %.2f s after attempt %d failed: %s", delay, attempt, error.message)
        if self._on_retry is not None and self._answered:
            self._on_retry(RetryWait(error.message, attempt, delay, waited, budget))
        self._sleep(delay)

    def _delay(self, attempt: int) -> float:
        """The pause after failed attempt `attempt` (1-based): capped doubling, equal jitter."""
        nominal = min(self._max_delay, self._base_delay * 2.0 ** min(attempt - 1, 60))
        return nominal / 2 + self._rng.uniform(0, nominal / 2)
