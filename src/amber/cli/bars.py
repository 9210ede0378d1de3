"""Progress bars for the engine's long work (rich, on stderr): imported only when stderr is a
terminal, so a scripted `--output json` run never loads rich."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    ProgressColumn,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.progress import Progress as RichBar


class BarProgress:
    """The engine's progress callbacks as rich progress bars on stderr, one per phase."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._bar: RichBar | None = None
        self._task: TaskID | None = None

    def phase(self, name: str, total: int | None, unit: str = "bytes") -> None:
        """Close the previous bar and open one for this phase."""
        self.done()
        columns: list[ProgressColumn] = [SpinnerColumn(), TextColumn("{task.description}")]
        if unit == "bytes":
            columns += [BarColumn(), DownloadColumn(), TransferSpeedColumn()]
        else:
            columns += [BarColumn(), MofNCompleteColumn(), TextColumn(unit)]
        columns += [TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn()]
        self._bar = RichBar(*columns, console=self._console, refresh_per_second=5)
        self._task = self._bar.add_task(name, total=total)
        self._bar.start()

    def advance(self, amount: int) -> None:
        """Move the current bar."""
        if self._bar is not None and self._task is not None:
            self._bar.advance(self._task, amount)

    def done(self) -> None:
        """Stop the current bar."""
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
