"""Options every command shares, read once at the edge (flags and environment)."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import typer

from amber.pool import DEFAULT_POOL, Pool, PoolSettings

CRASH_ENV = "AMBER_TEST_CRASH_AT"
INTERRUPT_ENV = "AMBER_TEST_INTERRUPT_AT"
"""Tests only: a failpoint name at which the process sends itself SIGINT (a Ctrl-C there)."""


class OutputFormat(StrEnum):
    table = "table"
    json = "json"


@dataclass(frozen=True)
class CliState:
    """The global options of one `amber` invocation."""

    pool: Path
    output: OutputFormat
    crash_at: str | None
    """A failpoint name at which the process kills itself (crash-safety tests only)."""
    interrupt_at: str | None = None
    """A failpoint name at which the process interrupts itself (tests of Ctrl-C)."""
    verbose: bool = False
    """--verbose: log every detail (servers too)."""

    @property
    def json(self) -> bool:
        return self.output is OutputFormat.json

    def failpoint(self) -> Callable[[str], None]:
        target, interrupt = self.crash_at, self.interrupt_at

        def hit(name: str) -> None:
            if name == target:
                os.kill(os.getpid(), signal.SIGKILL)
            if name == interrupt:
                os.kill(os.getpid(), signal.SIGINT)

        return hit

    def open_pool(self) -> Pool:
        return Pool.open(self.pool, settings=PoolSettings(), failpoint=self.failpoint())


def make_state(pool: Path | None, output: OutputFormat, *, verbose: bool = False) -> CliState:
    return CliState(
        pool=pool or DEFAULT_POOL,
        output=output,
        crash_at=os.environ.get(CRASH_ENV) or None,
        interrupt_at=os.environ.get(INTERRUPT_ENV) or None,
        verbose=verbose,
    )


def state(ctx: typer.Context) -> CliState:
    obj = ctx.find_root().obj
    assert isinstance(obj, CliState)
    return obj
