"""Pure rules: which retry budget a target gets, and which locks `unlock` removes."""

from __future__ import annotations

import pytest

from amber.backup.keeper import unlock
from amber.backup.locks import LockKind
from amber.backup.repository import Repository
from amber.backup.targets import (
    FIRST_CONTACT_BUDGET,
    OUTAGE_BUDGET,
    Target,
    TargetRuntime,
    open_store,
)
from amber.blobstore.base import BlobStore
from amber.domain.errors import InvalidArgument, NotFound
from tests.backup.memstore import FakeClock


def _budgets(runtime: TargetRuntime, target: Target) -> tuple[float | None, float | None]:
    store = open_store(target, runtime)
    return store._deadline, store._first_deadline  # type: ignore[attr-defined]


def test_commands_ride_out_outages_and_the_node_keeps_a_short_budget() -> None:
    target = Target("nas", "file:///srv/backup", password_file="/p")
    assert _budgets(TargetRuntime.for_commands({}), target) == (
        OUTAGE_BUDGET,
        FIRST_CONTACT_BUDGET,
    )
    assert _budgets(TargetRuntime(), target) == (30.0, None)


def test_the_target_option_sets_the_budget_and_the_environment_wins() -> None:
    target = Target("nas", "file:///srv/backup", {"retry-budget": "300"}, password_file="/p")
    target.validate()
    assert _budgets(TargetRuntime.for_commands({}), target) == (300.0, FIRST_CONTACT_BUDGET)
    env = {"AMBER_RETRY_BUDGET": "5"}
    assert _budgets(TargetRuntime.for_commands(env), target) == (5.0, 5.0)
    env = {"AMBER_RETRY_BUDGET": "10m"}  # a duration with its unit
    assert _budgets(TargetRuntime.for_commands(env), target) == (600.0, FIRST_CONTACT_BUDGET)


@pytest.mark.parametrize("value", ["0", "-1", "soon", "1e9", "nan"])
def test_bad_retry_budgets_are_refused(value: str) -> None:
    with pytest.raises(InvalidArgument, match="AMBER_RETRY_BUDGET must be a duration"):
        TargetRuntime.for_commands({"AMBER_RETRY_BUDGET": value})
    target = Target("nas", "file:///srv/backup", {"retry-budget": value}, password_file="/p")
    with pytest.raises(InvalidArgument, match="option retry-budget of target 'nas'"):
        target.validate()


def test_unlock_removes_only_dead_locks_unless_told(
    repo: Repository, store: BlobStore, clock: FakeClock
) -> None:
    live = repo.lock("otherhost pid 1: backup v")
    dead = repo.lock(f"{_hostname()} pid 999999999: backup w")
    expired = repo.lock("otherhost pid 2: check", ttl=10)
    clock.advance(20)
    store.put("locks/" + "d" * 32, b"damaged")
    result = unlock(repo)
    assert set(result.removed) == {
        f"locks/{dead.info.lock_id}",
        f"locks/{expired.info.lock_id}",
    }
    assert {lock.lock_id for lock in result.remaining} == {live.info.lock_id, "d" * 32}
    with pytest.raises(NotFound, match="no lock locks/"):
        unlock(repo, ["e" * 32])
    assert unlock(repo, ["locks/" + "d" * 32]).removed == ("locks/" + "d" * 32,)
    assert unlock(repo, remove_all=True).removed == (f"locks/{live.info.lock_id}",)
    assert repo.locks.all() == []
    repo.lock("prune", LockKind.EXCLUSIVE).release()


def _hostname() -> str:
    import os

    return os.uname().nodename
