"""Subcommands that are imported only when they run.

Importing every command group at start-up (the CSI client alone pulls in gRPC and protobuf)
cost ~0.3 s on every `amber` invocation, and an incremental `amber backup create` has to finish
in well under half a second. So the top-level group holds a `LazyCommand` for each subcommand:
it knows the name and the help line `amber --help` lists, and imports its module only when click
makes a context for it, that is when the subcommand (or its own `--help`) is invoked.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import click
import typer
from typer.core import TyperGroup

Mountable = typer.Typer | Callable[..., Any]
"""What a command module exports: a typer app (a command group) or a command function."""


def mount(name: str, target: Mountable) -> click.Command:
    """The click command typer builds for `target` mounted as `name` on an app: the same one
    `app.add_typer(target, name=name)` or `app.command(name)(target)` gives."""
    host = typer.Typer(add_completion=False)
    if isinstance(target, typer.Typer):
        host.add_typer(target, name=name)
    else:
        host.command(name)(target)
    return typer.main.get_group(host).commands[name]


class _StartUp:
    """Whether the process's start-up runs without garbage collection (`pause_collection`)."""

    paused = False


def pause_collection() -> None:
    """Start-up without garbage collection, until a command's modules are imported.

    Starting a command creates ~100,000 objects (modules, functions, classes, dataclass
    machinery) that live until the process exits; the collector, run every 700 allocations,
    traversed them again and again for nothing: ~10% of a cold `amber backup create`'s CPU.
    Once the command is imported they are frozen (moved to the permanent generation) and
    collection resumes: the collections that follow skip them too, which a long-running
    command (`amber node`) also gains from. Only the process's entry point (`run`) calls this:
    freezing the objects of a process that imports the CLI for other ends (a test) could keep
    its cyclic garbage, and the files it holds, alive.
    """
    if gc.isenabled():
        gc.disable()
        _StartUp.paused = True


def _resume_collection() -> None:
    if _StartUp.paused:
        _StartUp.paused = False
        gc.freeze()
        gc.enable()


class LazyCommand(click.Command):
    """A subcommand's name and help line, standing in for it until it is invoked.

    A group lists the stand-in in its help without importing anything. To run a subcommand,
    click's `Group.invoke` calls `make_context` on it: that is where the module is imported and
    the real command takes over, since the context returned (which parses the arguments, prints
    `--help` and is invoked) belongs to the real command.
    """

    def __init__(self, name: str, help_line: str, load: Callable[[], Mountable]) -> None:
        super().__init__(name, help=help_line)
        self._name = name
        self._load = load
        self._command: click.Command | None = None

    def command(self) -> click.Command:
        """The real command; its module is imported on the first call."""
        if self._command is None:
            self._command = mount(self._name, self._load())
            _resume_collection()
        return self._command

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        """The real command's context: running the stand-in runs the real command."""
        return self.command().make_context(info_name, args, parent=parent, **extra)


class LazyGroup(TyperGroup):
    """A typer group whose subcommands are the `LazyCommand`s a subclass lists in `lazy`
    (a class attribute because `typer.Typer(cls=...)` takes a class, not an instance).

    The stand-ins sit in the group's ordinary command table, so listing, ordering and typer's
    "Did you mean ...?" suggestions work as for eagerly built commands.
    """

    lazy: ClassVar[Sequence[LazyCommand]] = ()

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        for command in self.lazy:
            self.add_command(command)
