"""Options every command shares, read once at the edge (flags and environment)."""

from __future__ import annotations

import dataclasses
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Final

import click
import typer

from amber.domain.errors import InvalidArgument

if TYPE_CHECKING:
    from amber.pool import Pool

# The pool package (with sqlite3 and the kernel edge) is imported by the commands that use a
# pool, not with this module: `amber --version` and `amber --help` need none of it.

CRASH_ENV = "AMBER_TEST_CRASH_AT"
INTERRUPT_ENV = "AMBER_TEST_INTERRUPT_AT"
"""Tests only: a failpoint name at which the process sends itself SIGINT (a Ctrl-C there)."""


class OutputFormat(StrEnum):
    table = "table"
    json = "json"


OUTPUT_FLAGS: Final = ("--output", "-o")
OUTPUT_HELP: Final = "table for people, json for scripts."


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
        from amber.pool import Pool, PoolSettings

        return Pool.open(self.pool, settings=PoolSettings(), failpoint=self.failpoint())


def make_state(pool: Path | None, output: OutputFormat, *, verbose: bool = False) -> CliState:
    from amber.pool import DEFAULT_POOL

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


def _set_output(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    """`--output` given after the verb: it overrides the one given before the noun."""
    if value is None or ctx.resilient_parsing:
        return
    root = ctx.find_root()
    if isinstance(root.obj, CliState):
        root.obj = dataclasses.replace(root.obj, output=OutputFormat(value))


def output_option() -> click.Option:
    """`--output/-o` for a subcommand, the same option as the global one: `amber -o json volume
    list` and `amber volume list -o json` mean the same. Every leaf command gets one (main.py),
    so no command declares it and none can forget it."""
    return click.Option(
        list(OUTPUT_FLAGS),
        type=click.Choice([f.value for f in OutputFormat]),
        default=None,
        expose_value=False,
        callback=_set_output,
        help=OUTPUT_HELP,
    )


def add_output_option(command: click.Command) -> None:
    """Give `command` and every command below it the shared `--output` option."""
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            add_output_option(sub)
        return
    if not any("--output" in p.opts for p in command.params):
        command.params.append(output_option())


def key_values(pairs: list[str] | None, option: str) -> dict[str, str]:
    """`KEY=VALUE` options (`--label`, `--param`) as a map; a pair without `=` or without a key
    is a usage error naming the option."""
    found: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidArgument(f"invalid {option} {pair[:140]!r}: use KEY=VALUE")
        found[key] = value
    return found
