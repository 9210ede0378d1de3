"""Job retention: keep-last and GFS over `amber.backup.retention`, in the job's time zone."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from amber.jobs.retention import Item, select
from amber.jobs.spec import Keep, Retention

BERLIN = ZoneInfo("Europe/Berlin")
PERIODS = {
    "hourly": "%Y-%m-%d %H",
    "daily": "%Y-%m-%d",
    "weekly": "%G-%V",
    "monthly": "%Y-%m",
    "yearly": "%Y",
}


def a_year_of_items(seed: int = 7) -> list[Item]:
    """Irregular items over a year and a bit: 0 to 5 an hour, some days none."""
    rng = random.Random(seed)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    items = []
    for hour in range(24 * 400):
        if rng.random() < 0.6:
            continue
        for _ in range(rng.randint(1, 3)):
            moment = start + timedelta(hours=hour, seconds=rng.randint(0, 3599))
            items.append(Item(f"i{len(items)}", moment.timestamp()))
    return items


def period(item: Item, rule: str) -> str:
    return datetime.fromtimestamp(item.created, BERLIN).strftime(PERIODS[rule])


def test_gfs_keeps_the_newest_of_each_period_over_a_year() -> None:
    items = a_year_of_items()
    policy = Retention(keep=Keep(hourly=24, daily=7, weekly=4, monthly=12, yearly=3))
    split = select(items, policy, BERLIN)
    assert len(split.keep) + len(split.delete) == len(items)
    newest: dict[tuple[str, str], Item] = {}
    for item in sorted(items, key=lambda i: i.created):
        for rule in PERIODS:
            newest[(rule, period(item, rule))] = item
    per_rule: dict[str, int] = defaultdict(int)
    for item in split.keep:
        rule = split.reasons[item.item_id].split()[0]
        per_rule[rule] += 1
        if "oldest" not in split.reasons[item.item_id]:
            assert newest[(rule, period(item, rule))] == item, (rule, item)
    assert per_rule["hourly"] == 24
    assert per_rule["daily"] == 7
    assert per_rule["weekly"] == 4
    assert per_rule["monthly"] == 12
    assert 1 <= per_rule["yearly"] <= 3  # 2025 and 2026, plus the oldest item
    # Never two kept items of one rule in one period.
    for rule in PERIODS:
        periods = [period(i, rule) for i in split.keep if split.reasons[i.item_id].startswith(rule)]
        assert len(periods) == len(set(periods))
    # Everything newer than the oldest hourly keeper is the newest of its hour or deleted.
    assert split.keep[0] == max(items, key=lambda i: i.created)


def test_days_are_the_job_zones_days() -> None:
    # 23:30 UTC on 1 June is 01:30 on 2 June in Berlin, 21:00 UTC still 1 June there.
    late = Item("late", datetime(2026, 6, 1, 23, 30, tzinfo=UTC).timestamp())
    early = Item("early", datetime(2026, 6, 1, 21, 0, tzinfo=UTC).timestamp())
    before = Item("before", datetime(2026, 5, 31, 12, 0, tzinfo=UTC).timestamp())
    policy = Retention(keep=Keep(daily=2))
    berlin = select([late, early, before], policy, BERLIN)
    assert [i.item_id for i in berlin.keep] == ["late", "early"]
    utc = select([late, early, before], policy, UTC)
    assert [i.item_id for i in utc.keep] == ["late", "before"]


def test_count_and_gfs_are_a_union() -> None:
    base = datetime(2026, 1, 10, 12, tzinfo=UTC)
    items = [
        Item(f"d{d}h{h}", (base - timedelta(days=d, hours=h)).timestamp())
        for d in range(10)
        for h in range(3)
    ]
    split = select(items, Retention(retain=2, keep=Keep(daily=3)), UTC)
    kept = [i.item_id for i in split.keep]
    assert kept[:2] == ["d0h0", "d0h1"]  # the newest two
    assert {"d1h0", "d2h0"} <= set(kept)  # newest of the following days
    assert all(i.item_id not in kept for i in split.delete)


def test_empty_policy_deletes_everything_it_is_given() -> None:
    items = [Item("a", 1.0), Item("b", 2.0)]
    split = select(items, Retention(), UTC)
    assert split.keep == ()
    assert [i.item_id for i in split.delete] == ["b", "a"]
