"""The progress bars a terminal user sees during long backup work."""

from __future__ import annotations

import io
import re

from rich.console import Console

from amber.cli.bars import BarProgress


def test_each_phase_gets_a_bar_with_its_unit() -> None:
    out = io.StringIO()
    bars = BarProgress(Console(file=out, force_terminal=True, no_color=True, width=120))
    bars.phase("reading changed chunks", 4 * 1024 * 1024, "bytes")
    bars.advance(2 * 1024 * 1024)
    bars.phase("committing", 3, "objects")
    bars.advance(3)
    bars.done()
    text = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", out.getvalue())  # drop cursor/style codes
    assert "reading changed chunks" in text
    assert "2.0 MiB / 4.0 MiB" in text
    assert "3 / 3 objects" in text
