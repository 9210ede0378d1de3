"""Progress rows a terminal user sees (issue 16, item 6): rows that finish, no `0/?`, IEC units."""

from __future__ import annotations

import io
import re

from rich.console import Console

from amber.cli.bars import DONE_MARK, BarProgress, amount_text


def _screen(out: io.StringIO) -> str:
    return re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", out.getvalue())


def _final_rows(text: str) -> list[str]:
    """The rows as the display left them (the last frame: the last line of each row)."""
    rows: dict[str, str] = {}
    for line in re.split(r"[\r\n]", text):
        for name in ("comparing extent maps", "reading every chunk", "committing"):
            if name in line:
                rows[name] = line
    return list(rows.values())


def test_rows_finish_without_unknown_totals_and_in_iec_units() -> None:
    out = io.StringIO()
    bars = BarProgress(Console(file=out, force_terminal=True, no_color=True, width=120))
    bars.phase("comparing extent maps", None, "chunks")
    bars.phase("reading every chunk", 4 * 1024 * 1024, "bytes")
    bars.advance(4 * 1024 * 1024)
    bars.phase("committing", None, "objects")
    bars.done()
    text = _screen(out)
    assert "/?" not in text
    assert "MB" not in text  # decimal units nowhere
    assert "4.0 MiB / 4.0 MiB" in text
    rows = _final_rows(text)
    assert len(rows) == 3
    assert all(row.lstrip().startswith(DONE_MARK) for row in rows), rows
    assert "0 chunks" not in rows[0]


def test_amounts() -> None:
    assert amount_text(0, None, "chunks") == ""
    assert amount_text(3, None, "packs") == "3 packs"
    assert amount_text(3, 10, "packs") == "3 / 10 packs"
    assert amount_text(1536 * 1024 * 1024, None, "bytes") == "1.5 GiB"
    assert amount_text(2 * 1024**2, 4 * 1024**2, "bytes") == "2.0 MiB / 4.0 MiB"
