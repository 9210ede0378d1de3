"""Typer callbacks that hold numeric options to the domain's rules (`amber.domain.numbers`).

Ranges are declared on the options themselves (`min=`, `max=`; click refuses values outside
them with one line and exit 2). What click lets through is NaN and infinity: `float("nan")`
passes every `<` and `>` test, so `--grace nan` or `--overprovisioning nan` would reach the
engine. `finite` refuses them (InvalidArgument: one line, exit 2) before the command runs.
"""

from __future__ import annotations

import typer

from amber.domain.numbers import check_finite, check_range

__all__ = ["finite", "percent"]


def _name(param: typer.CallbackParam) -> str:
    return param.opts[0] if param.opts else str(param.name)


def finite(param: typer.CallbackParam, value: float | None) -> float | None:
    """Callback of a float option: the value, or InvalidArgument for NaN and infinity."""
    if value is None:
        return None
    return check_finite(_name(param), value)


def percent(param: typer.CallbackParam, value: float) -> float:
    """Callback of a percentage of something to do: in (0, 100]."""
    return check_range(_name(param), value, 0.0, 100.0, low_open=True)
