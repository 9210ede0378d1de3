"""The freeze guard on a real mounted filesystem: the limit, a lost guard, a refused freeze."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from amber.domain.errors import SystemFailure
from amber.system import freeze, ioctl
from tests.conftest import make_xfs, release_xfs
from tests.pool.frozen import guards_of, no_guard_left, writable_within


@pytest.fixture
def mounted(tmp_path: Path) -> Iterator[Path]:
    image, mnt = make_xfs(tmp_path, "320M")
    yield mnt
    ioctl.thaw(mnt)
    release_xfs(image, mnt)


def test_a_freeze_that_ends_in_time_held_until_the_end(mounted: Path) -> None:
    with freeze.frozen(mounted, 600) as held:
        assert len(guards_of(mounted)) == 1
    assert not held.expired
    assert writable_within(mounted)
    assert no_guard_left(mounted)


def test_the_limit_thaws_a_body_that_takes_too_long(mounted: Path) -> None:
    with freeze.frozen(mounted, 0.2) as held:
        # This write blocks until the guard's limit thaws the filesystem.
        assert writable_within(mounted, 120)
    assert held.expired


def test_a_killed_guard_thaws_nothing_twice_and_reports_expired(mounted: Path) -> None:
    with freeze.frozen(mounted, 600) as held:
        (pid,) = guards_of(mounted)
        os.kill(pid, signal.SIGKILL)
        assert no_guard_left(mounted)
    assert held.expired, "a lost guard must not vouch for the copy"
    assert writable_within(mounted)


def test_sigterm_to_the_guard_thaws(mounted: Path) -> None:
    with freeze.frozen(mounted, 600) as held:
        (pid,) = guards_of(mounted)
        os.kill(pid, signal.SIGTERM)
        assert writable_within(mounted, 120)
    assert held.expired


def test_an_error_in_the_body_thaws_and_propagates(mounted: Path) -> None:
    with pytest.raises(RuntimeError, match="boom"), freeze.frozen(mounted, 600):
        raise RuntimeError("boom")
    assert writable_within(mounted)
    assert no_guard_left(mounted)


def test_a_refused_freeze_is_one_clear_error_and_leaves_the_other_freeze_alone(
    mounted: Path,
) -> None:
    with freeze.frozen(mounted, 600):
        with (
            pytest.raises(SystemFailure, match=r"cannot freeze .*busy"),
            freeze.frozen(mounted, 600),
        ):
            pass
        # The failed second freeze must not have thawed the first one.
        assert not writable_within(mounted, 1)
    assert writable_within(mounted)
