"""Which of a job's items to keep: the job's policy over `amber.backup.retention`'s rules.

One rule, one place: the GFS walk (newest item of each hour, day, ISO week, month, year in the
job's time zone) and keep-last are `amber.backup.retention.apply_retention`, the same code
`amber backup prune --keep-*` uses. A job's `retain: N` is keep-last N, its `keep:` the GFS
counts; an item kept by either is kept (union). This module only maps a job's policy onto
those rules and names what to delete.

An empty policy (a backup job's `retainLocal: 0`) keeps nothing: every local snapshot the job
made is deleted once its backup is committed. `spec.parse_job` refuses an empty policy where
it would delete every backup or snapshot.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import tzinfo

from amber.backup.retention import RetentionItem, RetentionPolicy, apply_retention
from amber.jobs.spec import Retention

__all__ = ["Item", "Split", "policy_of", "select"]


@dataclass(frozen=True)
class Item:
    """Something a job created: a local snapshot or a backup, by id, with its creation time."""

    item_id: str
    created: float
    """Seconds since the epoch."""


@dataclass(frozen=True)
class Split:
    """The split of a job's items (newest first in each)."""

    keep: tuple[Item, ...]
    delete: tuple[Item, ...]
    reasons: dict[str, str]
    """Why each kept item is kept (`last #2`, `daily #5`)."""


def policy_of(retention: Retention) -> RetentionPolicy:
    """The prune policy a job's retention stands for."""
    keep = retention.keep
    return RetentionPolicy(
        keep_last=retention.retain,
        keep_hourly=keep.hourly,
        keep_daily=keep.daily,
        keep_weekly=keep.weekly,
        keep_monthly=keep.monthly,
        keep_yearly=keep.yearly,
    )


def select(items: Iterable[Item], retention: Retention, zone: tzinfo) -> Split:
    """Split `items` into kept and deleted by `retention`, with periods in `zone`."""
    by_id = {item.item_id: item for item in items}
    policy = policy_of(retention)
    if policy.is_empty():
        ordered = sorted(by_id.values(), key=lambda i: (i.created, i.item_id), reverse=True)
        return Split((), tuple(ordered), {})
    decision = apply_retention(
        (RetentionItem(item.item_id, item.created) for item in by_id.values()), policy, zone
    )
    return Split(
        keep=tuple(by_id[i.item_id] for i in decision.keep),
        delete=tuple(by_id[i.item_id] for i in decision.remove),
        reasons=dict(decision.reasons),
    )
