"""The operator's clock: real time, or real time sped up for end-to-end tests.

Cron is minute-grained, so a test that wants to see several scheduled runs would wait minutes.
`ScaledClock(scale)` runs `scale` times faster than real time from the moment it is made (with
60, one real second is one scheduler minute). It is a test knob only: `amber node` and
`amber controller` use it when the environment sets `AMBER_JOBS_TIME_SCALE`, and the real clock
otherwise. Snapshot names, the scheduled-at annotation and the status times then follow the
scaled clock (they run ahead of the wall clock).
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

from amber.domain.errors import InvalidArgument

__all__ = ["ScaledClock", "parse_scale"]


class ScaledClock:
    """`amber.jobs.runner.Clock` running `scale` times faster than the wall clock."""

    def __init__(self, scale: float) -> None:
        self.scale = scale
        self._origin = datetime.now(UTC)
        self._start = time.monotonic()

    def now(self) -> datetime:
        elapsed = (time.monotonic() - self._start) * self.scale
        return self._origin + timedelta(seconds=elapsed)

    def sleep_until(self, when: datetime, stop: threading.Event) -> bool:
        while not stop.is_set():
            left = (when - self.now()).total_seconds() / self.scale
            if left <= 0:
                return True
            stop.wait(min(left, 60.0))
        return False


def parse_scale(text: str) -> float:
    """The value of AMBER_JOBS_TIME_SCALE: a number of 1 or more."""
    try:
        scale = float(text)
    except ValueError:
        scale = 0.0
    if not 1 <= scale <= 1_000_000:
        raise InvalidArgument(
            f"AMBER_JOBS_TIME_SCALE={text!r} must be a number from 1 to 1000000 (a test knob: "
            "60 makes one second one scheduler minute)"
        )
    return scale
