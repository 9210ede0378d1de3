"""Duration options: `--grace 1h`, `--grace 90s`, `--grace 30` (seconds), one parser for all
(`amber.domain.units.parse_duration`)."""

from __future__ import annotations

from typing import Any

import click

from amber.domain.errors import InvalidArgument
from amber.domain.units import parse_duration

__all__ = ["Duration"]


class Duration(click.ParamType):
    """A click type for durations: seconds as a float; a bad value is a usage error (exit 2)
    naming the option."""

    name = "duration"

    def __init__(self, *, allow_zero: bool = True, at_least: float = 0.0) -> None:
        self.allow_zero = allow_zero
        self.at_least = at_least

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, int | float):
            seconds = float(value)
        else:
            try:
                seconds = parse_duration(str(value), allow_zero=self.allow_zero)
            except InvalidArgument as e:
                self.fail(e.message, param, ctx)
        if seconds < self.at_least:
            self.fail(f"must be at least {self.at_least:g} s, not {value}", param, ctx)
        return seconds
