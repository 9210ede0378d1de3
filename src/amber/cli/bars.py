"""Progress bars for the engine's long work (rich, on stderr): imported only when stderr is a
terminal, so a scripted `--output json` run never loads rich.

One row per phase, in one display. A row that ends is finished, not left behind: it shows a
tick, the amount done and its time. A phase without a known total shows a spinner and what
is done so far, never `0/?`. Sizes and speeds are in IEC units (KiB, MiB, GiB), as in every
summary Amber prints (`amber.domain.units.format_size`).
"""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.progress import Progress as RichBar
from rich.text import Text

from amber.domain.units import format_size

DONE_MARK = "✓"


class _StateColumn(ProgressColumn):
    """A spinner while the phase runs, a tick once it has ended."""

    _FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"

    def render(self, task: Task) -> Text:
        if task.fields.get("ended"):
            return Text(DONE_MARK, style="green")
        frame = int(task.elapsed * 10 if task.elapsed else 0) % len(self._FRAMES)
        return Text(self._FRAMES[frame], style="cyan")


def amount_text(completed: float, total: float | None, unit: str) -> str:
    """`1.5 GiB / 4.0 GiB`, `3 / 10 packs`; without a total only what is done (`3 packs`,
    `1.5 GiB`), and nothing at all while nothing is done."""
    if unit == "bytes":
        done = format_size(int(completed))
        return done if total is None else f"{done} / {format_size(int(total))}"
    if total is None:
        return f"{int(completed)} {unit}" if completed else ""
    return f"{int(completed)} / {int(total)} {unit}"


class _AmountColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        unit = task.fields.get("unit", "")
        if task.fields.get("ended"):
            return Text(amount_text(task.fields["done"], task.fields["planned"], unit))
        return Text(amount_text(task.completed, task.total, unit))


class _SpeedColumn(ProgressColumn):
    """Bytes per second in IEC units, for byte phases that are running."""

    def render(self, task: Task) -> Text:
        if task.fields.get("unit") != "bytes" or task.fields.get("ended"):
            return Text("")
        speed = task.finished_speed or task.speed
        return Text(f"{format_size(int(speed))}/s" if speed else "")


class BarProgress:
    """The engine's progress callbacks as rich progress rows on stderr, one per phase."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._bar: RichBar | None = None
        self._task: TaskID | None = None

    def _display(self) -> RichBar:
        if self._bar is None:
            self._bar = RichBar(
                _StateColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                _AmountColumn(),
                _SpeedColumn(),
                TimeElapsedColumn(),
                console=self._console,
                refresh_per_second=5,
            )
            self._bar.start()
        return self._bar

    def phase(self, name: str, total: int | None, unit: str = "bytes") -> None:
        """Finish the previous row and open one for this phase."""
        self._end_row()
        self._task = self._display().add_task(name, total=total, unit=unit, ended=False)

    def advance(self, amount: int) -> None:
        """Move the current row."""
        if self._bar is not None and self._task is not None:
            self._bar.advance(self._task, amount)

    def _end_row(self) -> None:
        if self._bar is None or self._task is None:
            return
        task = self._bar.tasks[self._task]
        done, planned = task.completed, task.total
        # A finished row is a full bar whatever was planned; its text says what was done.
        full = max(done, 1)
        self._bar.update(
            self._task, total=full, completed=full, ended=True, done=done, planned=planned
        )
        self._bar.stop_task(self._task)
        self._task = None

    def done(self) -> None:
        """Finish the last row and stop the display."""
        self._end_row()
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
