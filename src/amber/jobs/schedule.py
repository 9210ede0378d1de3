"""When a job runs: cron in the job's time zone, the missed-run rule, and jitter.

**Wall-clock cron.** A cron expression names times on the wall clock of the job's zone. croniter
walks those wall-clock times (naive, so it never guesses about offsets) and `zoneinfo` turns
each into an instant:

- a time that does not exist (the spring-forward gap: 02:30 in Europe/Berlin on the last Sunday
  of March) runs at the instant the clock would have shown it without the jump (03:30 summer
  time), once — a job at 02:30 and another at 03:30 then run at the same instant;
- a time that happens twice (the fall-back overlap) runs once, at its first occurrence, unless
  the job's hour field is `*` (a job that runs every hour or more often): then it runs in the
  repeated hour too, as Vixie cron does.

**Missed runs.** After downtime a job whose slots passed runs once, at start-up, not once per
missed slot (`due`): the last slot it ran for is remembered, and one catch-up run covers all.

**Jitter.** Each (job, volume) starts a fixed fraction of the job's jitter after the slot, the
same on every node and every run (a hash, not a random draw), so nodes spread out and a volume
keeps its rhythm.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from croniter import croniter

from amber.jobs.spec import JobSpec

__all__ = ["due", "jitter_offset", "next_run", "next_runs"]

_MAX_STEPS = 5000
"""Wall-clock matches walked to find one instant; a valid cron matches at least every 4 years
(Feb 29), but a day-of-month that no month has (`0 0 31 2 *`) never matches."""


_WINDOW = timedelta(hours=3)
"""More than any change of a zone's UTC offset (1 hour almost everywhere, 2 at most)."""


def _local(moment: datetime, zone: ZoneInfo) -> datetime:
    """The wall-clock time (naive) the zone shows at `moment`."""
    return moment.astimezone(zone).replace(tzinfo=None)


def _instants(wall: datetime, zone: ZoneInfo, every_hour: bool) -> list[datetime]:
    """The instants (UTC) a matched wall-clock time stands for, earliest first."""
    first = wall.replace(tzinfo=zone, fold=0)
    second = wall.replace(tzinfo=zone, fold=1)
    if first.utcoffset() == second.utcoffset():
        return [first.astimezone(UTC)]
    if _local(first, zone) != wall:  # in the gap: no such wall time, fold=0 is past the jump
        return [first.astimezone(UTC)]
    # The overlap: the wall time happens twice.
    both = [first.astimezone(UTC), second.astimezone(UTC)]
    return both if every_hour else both[:1]


def _every_hour(expression: str) -> bool:
    return expression.split()[1].startswith("*")


def next_run(spec: JobSpec, after: datetime) -> datetime:
    """The first instant strictly after `after` (aware) at which `spec` is due (aware, UTC).

    ValueError when the cron expression never matches (`0 0 31 2 *`).
    """
    return _next(spec.cron, spec.zone, after)


def _next(expression: str, zone: ZoneInfo, after: datetime) -> datetime:
    if after.tzinfo is None:
        raise ValueError("next_run needs an aware datetime")
    every_hour = _every_hour(expression)
    # Start before `after`'s wall time: where the clock goes back, a wall time earlier than
    # `after`'s may be a later instant.
    walker = croniter(expression, _local(after, zone) - _WINDOW)
    best: datetime | None = None
    for _ in range(_MAX_STEPS):
        wall = walker.get_next(datetime)
        if best is not None and wall > _local(best, zone) + _WINDOW:
            return best
        for instant in _instants(wall, zone, every_hour):
            if instant > after and (best is None or instant < best):
                best = instant
        if (
            best is not None
            and after.astimezone(zone).utcoffset() == best.astimezone(zone).utcoffset()
        ):
            return best  # no offset change between: wall order is instant order
    if best is not None:
        return best
    raise ValueError(f"cron {expression!r} never matches a date")


def next_runs(spec: JobSpec, after: datetime, count: int) -> list[datetime]:
    """The next `count` instants after `after` (for `amber schedule check`)."""
    result: list[datetime] = []
    moment = after
    for _ in range(count):
        moment = next_run(spec, moment)
        result.append(moment)
    return result


def due(spec: JobSpec, last_slot: datetime | None, now: datetime) -> datetime | None:
    """The slot a job should run for now, or None when it is not due.

    `last_slot` is the slot of its last run (None if it never ran: a new job waits for its first
    slot rather than running at once). However many slots passed since `last_slot`, the answer is
    the latest of them: one catch-up run, not one per missed slot.
    """
    if last_slot is None:
        return None
    slot = next_run(spec, last_slot)
    if slot > now:
        return None
    latest = slot
    for _ in range(_MAX_STEPS):
        following = next_run(spec, latest)
        if following > now:
            return latest
        latest = following
    # More slots passed than worth walking (a job every minute, down for months): the exact
    # slot does not matter, only that the run happens once.
    return now


def jitter_offset(spec: JobSpec, subject: str) -> float:
    """Seconds after the slot at which `subject` (a volume, or the target) starts: a fixed
    fraction of the job's jitter, derived from (job, subject), in [0, jitter)."""
    if spec.jitter <= 0:
        return 0.0
    digest = hashlib.blake2b(f"{spec.name}\0{subject}".encode(), digest_size=8).digest()
    fraction = int.from_bytes(digest, "big") / 2**64
    return fraction * spec.jitter
