"""Numbers users give (counts, seconds, ratios, percentages): one rule for each kind.

Every edge that takes a number from a person or a manifest checks it here, so the CLI, the CSI
driver and any scheduler refuse the same values with the same message. The rules refuse what
cannot mean anything: negative counts and durations, NaN and infinity (click and YAML both
turn `nan` and `inf` into floats, and `nan` passes every `<` and `>` test), and values outside
the range a setting has. Each check returns its value, so it can sit where the value is used.
"""

from __future__ import annotations

import math

from amber.domain.errors import InvalidArgument

__all__ = ["check_count", "check_finite", "check_range", "check_seconds"]


def check_finite(what: str, value: float) -> float:
    """A real number: not NaN, not infinite."""
    if not math.isfinite(value):
        raise InvalidArgument(f"{what} must be a finite number, not {value}")
    return value


def check_count(what: str, value: int, *, minimum: int = 0, maximum: int | None = None) -> int:
    """A whole number of things, at least `minimum` (0 by default), at most `maximum`."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(f"{what} must be a whole number, not {value!r}")
    if value < minimum:
        raise InvalidArgument(f"{what} must be {minimum} or more, not {value}")
    if maximum is not None and value > maximum:
        raise InvalidArgument(f"{what} must be {maximum} or less, not {value}")
    return value


def check_seconds(what: str, value: float, *, minimum: float = 0.0) -> float:
    """A finite duration in seconds, at least `minimum` (0 by default)."""
    check_finite(what, value)
    if value < minimum:
        raise InvalidArgument(f"{what} must be {minimum:g} seconds or more, not {value:g}")
    return value


def check_range(
    what: str, value: float, low: float, high: float, *, low_open: bool = False
) -> float:
    """A finite number in [low, high] (or (low, high] with `low_open`)."""
    below = value <= low if low_open else value < low
    if not math.isfinite(value) or below or value > high:
        bracket = "(" if low_open else "["
        raise InvalidArgument(f"{what} must be in {bracket}{low:g}, {high:g}], not {value}")
    return value
