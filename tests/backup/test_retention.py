"""Retention rules (borg's prune_split) as pure functions, with property tests."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from amber.backup.retention import RetentionItem, RetentionPolicy, apply_retention

T0 = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
HOUR = 3600


def item(n: int, hours: float, tags: frozenset[str] = frozenset()) -> RetentionItem:
    return RetentionItem(f"b{n:04d}", T0 + hours * HOUR, tags)


def kept_ids(items: list[RetentionItem], policy: RetentionPolicy) -> list[str]:
    return sorted(i.item_id for i in apply_retention(items, policy).keep)


def test_keep_daily_keeps_the_newest_of_each_day() -> None:
    items = [item(n, n * 6) for n in range(4 * 10)]  # four backups a day for ten days
    decision = apply_retention(items, RetentionPolicy(keep_daily=3))
    assert [i.item_id for i in decision.keep] == ["b0039", "b0035", "b0031"]
    assert decision.reasons == {"b0039": "daily #1", "b0035": "daily #2", "b0031": "daily #3"}
    assert len(decision.remove) == 37


def test_rules_combine_like_borg() -> None:
    items = [item(n, n * 24) for n in range(60)]  # daily for 60 days from 2026-01-01
    decision = apply_retention(items, RetentionPolicy(keep_last=2, keep_daily=3, keep_monthly=3))
    # last: days 59, 58; daily: 57, 56, 55; monthly: newest of Feb (day 58 kept already -> used
    # up), then Jan (day 30), then no more months -> the oldest (day 0).
    assert [i.item_id for i in decision.keep] == [
        "b0059",
        "b0058",
        "b0057",
        "b0056",
        "b0055",
        "b0030",
        "b0000",
    ]
    assert decision.reasons["b0030"] == "monthly #1"
    assert decision.reasons["b0000"] == "monthly #2 (oldest)"


def test_weekly_uses_iso_weeks() -> None:
    # 2026-01-01 is a Thursday; 2026-01-04 (Sunday) ends ISO week 1; 2026-01-05 starts week 2.
    items = [item(0, 0), item(1, 3 * 24), item(2, 4 * 24)]
    assert kept_ids(items, RetentionPolicy(keep_weekly=2)) == ["b0001", "b0002"]


def test_tagged_items_are_kept_and_do_not_count() -> None:
    items = [item(0, 0, frozenset({"release"})), item(1, 1), item(2, 2)]
    decision = apply_retention(
        items, RetentionPolicy(keep_last=1, keep_tags=frozenset({"release"}))
    )
    assert sorted(decision.reasons) == ["b0000", "b0002"]
    assert decision.reasons["b0000"] == "tagged release"


def test_empty_policy_keeps_nothing() -> None:
    items = [item(n, n) for n in range(3)]
    assert RetentionPolicy().is_empty()
    assert apply_retention(items, RetentionPolicy()).keep == ()


items_strategy = st.lists(
    st.builds(
        lambda n, hours, tags: item(n, hours, tags),
        st.integers(0, 10_000),
        st.floats(0, 3 * 365 * 24, allow_nan=False),
        st.frozensets(st.sampled_from(["a", "b"]), max_size=1),
    ),
    max_size=40,
    unique_by=lambda i: i.item_id,
)
policies = st.builds(
    RetentionPolicy,
    keep_last=st.integers(0, 5),
    keep_hourly=st.integers(0, 5),
    keep_daily=st.integers(0, 5),
    keep_weekly=st.integers(0, 5),
    keep_monthly=st.integers(0, 5),
    keep_yearly=st.integers(0, 3),
    keep_tags=st.frozensets(st.sampled_from(["a", "b"]), max_size=1),
)


@settings(max_examples=300, deadline=None)
@given(items=items_strategy, policy=policies)
def test_decision_partitions_and_is_idempotent(
    items: list[RetentionItem], policy: RetentionPolicy
) -> None:
    decision = apply_retention(items, policy)
    kept = {i.item_id for i in decision.keep}
    removed = {i.item_id for i in decision.remove}
    assert kept | removed == {i.item_id for i in items}
    assert not kept & removed
    assert set(decision.reasons) == kept
    for i in items:
        if i.tags & policy.keep_tags:
            assert i.item_id in kept
    if items and any(policy.counts().values()):
        newest = max(items, key=lambda i: (i.time, i.item_id))
        assert newest.item_id in kept
    again = apply_retention(decision.keep, policy)
    assert {i.item_id for i in again.keep} == kept


def _reference(items: list[RetentionItem], n: int, pattern: str) -> set[str]:
    """keep-<period> N alone, written independently: the newest item of each of the N newest
    periods, plus the oldest item when there are fewer than N periods."""
    newest_first = sorted(items, key=lambda i: (i.time, i.item_id), reverse=True)
    heads: dict[str, str] = {}
    for i in newest_first:
        heads.setdefault(datetime.fromtimestamp(i.time, UTC).strftime(pattern), i.item_id)
    ordered = sorted(heads.items(), key=lambda kv: kv[0], reverse=True)
    kept = {item_id for _, item_id in ordered[:n]}
    if items and len(ordered) < n:
        kept.add(newest_first[-1].item_id)
    return kept


@settings(max_examples=300, deadline=None)
@given(
    items=items_strategy,
    n=st.integers(1, 6),
    rule=st.sampled_from(
        [("hourly", "%Y-%m-%d %H"), ("daily", "%Y-%m-%d"), ("monthly", "%Y-%m"), ("yearly", "%Y")]
    ),
)
def test_a_single_periodic_rule_matches_the_reference(
    items: list[RetentionItem], n: int, rule: tuple[str, str]
) -> None:
    name, pattern = rule
    policy = RetentionPolicy(**{f"keep_{name}": n})  # type: ignore[arg-type]
    assert set(kept_ids(items, policy)) == _reference(items, n, pattern)


@settings(max_examples=200, deadline=None)
@given(items=items_strategy, n=st.integers(1, 10))
def test_keep_last_keeps_the_n_newest(items: list[RetentionItem], n: int) -> None:
    newest = sorted(items, key=lambda i: (i.time, i.item_id), reverse=True)[:n]
    assert kept_ids(items, RetentionPolicy(keep_last=n)) == sorted(i.item_id for i in newest)
