"""Retention: which backups a policy keeps. Pure functions over (id, time, tags).

The rules follow borg's `prune_split`. Items are walked newest first, once per rule, in the order
keep-last, hourly, daily, weekly, monthly, yearly. A rule looks at the *period* of each item
(the item itself for keep-last, else its hour, day, ISO week, month or year in the policy's time
zone): the newest item of each period that has not been kept already is kept, until the rule has
kept N items. A period whose newest item another rule already kept is used up without counting.
If a rule runs out of items before keeping N, it also keeps the oldest item, so a young history
is not thinned to nothing (borg >= 1.2 does the same). Items carrying any of `keep_tags` are
always kept and do not count toward any rule.

An empty policy keeps nothing; `gc.prune` refuses to run with one. A policy refuses nonsense
when it is made (InvalidArgument): a negative count (borg and restic read it as "keep all";
here it kept nothing, and prune removed every backup) and an empty tag (it matches no backup,
so it would protect nothing while making the policy look non-empty). Every edge that builds a
policy (the CLI, a scheduler) gets the same rule and message.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo

from amber.domain.errors import InvalidArgument
from amber.domain.numbers import check_count

RULES = ("last", "hourly", "daily", "weekly", "monthly", "yearly")


@dataclass(frozen=True)
class RetentionItem:
    """One backup as retention sees it."""

    item_id: str
    time: float
    tags: frozenset[str] = frozenset()


@dataclass(frozen=True)
class RetentionPolicy:
    """How many of each kind of backup to keep (0 = the rule is off)."""

    keep_last: int = 0
    keep_hourly: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0
    keep_yearly: int = 0
    keep_tags: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        for rule, count in self.counts().items():
            check_count(f"retention keep-{rule}", count)
        if any(not tag.strip() for tag in self.keep_tags):
            raise InvalidArgument("retention keep-tag must not be empty: name the tag to keep")

    def counts(self) -> dict[str, int]:
        """`rule -> N` in the order the rules apply."""
        return {
            "last": self.keep_last,
            "hourly": self.keep_hourly,
            "daily": self.keep_daily,
            "weekly": self.keep_weekly,
            "monthly": self.keep_monthly,
            "yearly": self.keep_yearly,
        }

    def is_empty(self) -> bool:
        """True when no rule would keep anything."""
        return not self.keep_tags and not any(self.counts().values())


@dataclass(frozen=True)
class RetentionDecision:
    """The split: kept items with the reason for each, and removed items (both newest first)."""

    keep: tuple[RetentionItem, ...]
    remove: tuple[RetentionItem, ...]
    reasons: dict[str, str] = field(default_factory=dict)


def _period(rule: str, tz: tzinfo) -> Callable[[RetentionItem], str]:
    formats = {
        "hourly": "%Y-%m-%d %H",
        "daily": "%Y-%m-%d",
        "weekly": "%G-%V",
        "monthly": "%Y-%m",
        "yearly": "%Y",
    }
    if rule == "last":
        return lambda item: item.item_id
    pattern = formats[rule]
    return lambda item: datetime.fromtimestamp(item.time, tz).strftime(pattern)


def _split(
    items: list[RetentionItem], rule: str, count: int, tz: tzinfo, reasons: dict[str, str]
) -> None:
    """One rule over items sorted newest first; adds to `reasons` what it keeps."""
    if count <= 0 or not items:
        return
    period_of = _period(rule, tz)
    last_period = None
    kept = 0
    for item in items:
        period = period_of(item)
        if period == last_period:
            continue
        last_period = period
        if item.item_id not in reasons:
            kept += 1
            reasons[item.item_id] = f"{rule} #{kept}"
            if kept == count:
                return
    oldest = items[-1]
    if oldest.item_id not in reasons:
        reasons[oldest.item_id] = f"{rule} #{kept + 1} (oldest)"


def apply_retention(
    items: Iterable[RetentionItem], policy: RetentionPolicy, tz: tzinfo = UTC
) -> RetentionDecision:
    """Split `items` into kept and removed according to `policy` (periods in `tz`)."""
    ordered = sorted(items, key=lambda item: (item.time, item.item_id), reverse=True)
    if len({item.item_id for item in ordered}) != len(ordered):
        raise ValueError("retention items must have distinct ids")
    reasons: dict[str, str] = {}
    for item in ordered:
        tags = item.tags & policy.keep_tags
        if tags:
            reasons[item.item_id] = "tagged " + ",".join(sorted(tags))
    for rule, count in policy.counts().items():
        _split(ordered, rule, count, tz, reasons)
    keep = tuple(item for item in ordered if item.item_id in reasons)
    remove = tuple(item for item in ordered if item.item_id not in reasons)
    return RetentionDecision(keep, remove, reasons)
