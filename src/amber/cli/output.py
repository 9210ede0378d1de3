"""Rendering results for people (rich tables) or scripts (`--output json`)."""

from __future__ import annotations

import dataclasses
import functools
import json
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from amber.domain.models import Attachment, PoolStatus, Snapshot, Volume
from amber.domain.units import format_size

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table


PIPE_WIDTH = 10_000
"""Columns of output that is not a terminal: wide enough that nothing is wrapped or cut, so
`amber volume list | grep NAME` finds whole names."""


@functools.cache
def console() -> Console:
    """The console for results (stdout). rich is imported on first use only: a command run
    with `--output json` never needs it (a cold import costs ~50 ms of every such command).
    Not a terminal: lines as long as their content (rich would wrap them at 80 columns)."""
    from rich.console import Console

    found = Console()
    return found if found.is_terminal else Console(width=PIPE_WIDTH)


@functools.cache
def err_console() -> Console:
    """The console for progress and messages (stderr)."""
    from rich.console import Console

    return Console(stderr=True)


def new_table(**options: Any) -> Table:
    """A rich table (rich imported on first use, see `console`)."""
    from rich.table import Table

    return Table(**options)


def fit(table: Table, *identifiers: str) -> Table:
    """`table` made never to cut a value: every column wraps what does not fit instead of
    ending it in `...`, and the columns named in `identifiers` (names, IDs, handles: what a
    person copies into the next command) keep each value whole on one line, the other columns
    giving way to them."""
    for column in table.columns:
        column.overflow = "fold"
        if column.header in identifiers:
            column.no_wrap = True
            column.min_width = max(
                len(line)
                for text in (column.header, *column.cells)
                for line in str(text).splitlines() or [""]
            )
    return table


def to_jsonable(value: Any) -> Any:
    """Dataclasses, enums and paths as plain JSON values (sizes stay in bytes)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    return value


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(to_jsonable(value), indent=2, sort_keys=True) + "\n")


def when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def volume_table(
    volumes: Sequence[Volume],
    attachments: Sequence[Attachment],
    labels: Mapping[str, Mapping[str, str]] | None = None,
) -> Table:
    table = new_table(title="Volumes", title_justify="left")
    for column in ("NAME", "SIZE", "MODE", "FS", "SOURCE", "IN USE", "LABELS", "CREATED"):
        table.add_column(column)
    used: dict[str, list[str]] = {}
    for att in attachments:
        used.setdefault(att.object_uid, []).append(str(att.path))
    for v in volumes:
        source = f"{v.source_kind.value}:{v.source_name}" if v.source_name else "-"
        table.add_row(
            v.name,
            format_size(v.size),
            v.mode.value,
            v.fs_type or "-",
            source,
            ", ".join(used.get(v.uid, [])) or "-",
            label_text((labels or {}).get(v.name, {})),
            when(v.created),
        )
    return fit(table, "NAME", "SOURCE")


def label_text(labels: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "-"


def snapshot_table(snapshots: Sequence[Snapshot]) -> Table:
    table = new_table(title="Snapshots", title_justify="left")
    for column in ("NAME", "VOLUME", "SIZE", "ALLOCATED", "MODE", "CREATED"):
        table.add_column(column)
    for s in snapshots:
        table.add_row(
            s.name,
            s.volume_name,
            format_size(s.size),
            format_size(s.allocated),
            s.mode.value,
            when(s.created),
        )
    return fit(table, "NAME", "VOLUME")


def details(title: str, rows: Sequence[tuple[str, str]]) -> Table:
    table = new_table(title=title, title_justify="left", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for key, value in rows:
        table.add_row(key, value)
    return fit(table, "field")


def volume_details(
    v: Volume, attachments: Sequence[Attachment], labels: Mapping[str, str] | None = None
) -> Table:
    rows = [
        ("name", v.name),
        ("size", f"{format_size(v.size)} ({v.size} bytes)"),
        ("mode", v.mode.value),
        ("filesystem", v.fs_type or "-"),
        ("source", f"{v.source_kind.value} {v.source_name}" if v.source_name else "-"),
        ("created", when(v.created)),
        ("image", str(v.image)),
        ("labels", label_text(labels or {})),
    ]
    if v.fs_resize_pending:
        rows.append(("filesystem growth", "pending: grows at the next mount"))
    for att in attachments:
        mode = "ro" if att.read_only else "rw"
        rows.append((f"{att.kind.value}", f"{att.path} via {att.loop_device} ({mode})"))
    if not attachments:
        rows.append(("in use", "no"))
    return details(f"Volume {v.name}", rows)


def snapshot_details(s: Snapshot, attachments: Sequence[Attachment]) -> Table:
    rows = [
        ("name", s.name),
        ("volume", s.volume_name),
        ("size", f"{format_size(s.size)} ({s.size} bytes)"),
        ("allocated", f"{format_size(s.allocated)} (shared with its source through reflink)"),
        ("mode", s.mode.value),
        ("filesystem", s.fs_type or "-"),
        ("created", when(s.created)),
        ("image", str(s.image)),
    ]
    rows += [(f"{a.kind.value}", f"{a.path} via {a.loop_device} (ro)") for a in attachments]
    return details(f"Snapshot {s.name}", rows)


def pool_details(st: PoolStatus) -> Table:
    return details(
        f"Pool {st.path}",
        [
            ("image", str(st.image) if st.image else "- (a directory pool)"),
            ("filesystem", st.fs_type),
            ("reflink", "yes" if st.reflink else "NO: copies are full sparse copies"),
            ("size", format_size(st.size)),
            ("used", format_size(st.used)),
            ("free", format_size(st.free)),
            ("space", f"FULL: {st.space_problem}" if st.full else "ok"),
            ("provisioned", format_size(st.provisioned)),
            (
                "capacity",
                f"{format_size(st.capacity)} (size x overprovisioning {st.overprovisioning:g})",
            ),
            (
                "overprovisioned",
                f"{st.provisioned / st.size:.2f}x of the pool size" if st.size else "-",
            ),
            ("volumes", str(st.volumes)),
            ("snapshots", str(st.snapshots)),
            ("attachments", str(st.attachments)),
            (
                "backup bases",
                f"{st.backup_bases} ({format_size(st.backup_bases_bytes)} allocated; "
                "amber backup bases)",
            ),
        ],
    )
