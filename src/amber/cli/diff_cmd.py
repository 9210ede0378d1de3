"""`amber snapshot diff`: the byte ranges that differ between two snapshots of one volume.

The ranges come from the images' extent maps (`amber.pool.changes`), the same change tracking
the backup engine and the CSI SnapshotMetadata service use: no data is read, so a diff of a
100 GiB volume takes as long as its extent maps, not its size. Ranges are exact at the pool
filesystem's block size (4 KiB on XFS).
"""

from __future__ import annotations

import typer

from amber.cli import output
from amber.cli.state import state
from amber.domain.units import format_size
from amber.pool.changes import Delta, delta


def diff(ctx: typer.Context, snap_a: str, snap_b: str) -> None:
    """Byte ranges of SNAP_B that differ from SNAP_A (two snapshots of one volume)."""
    st = state(ctx)
    pool = st.open_pool()
    base, target = pool.snapshots.get(snap_a), pool.snapshots.get(snap_b)
    found = delta(base, target, reflink=pool.ctx.reflink)
    if st.json:
        output.print_json(
            {
                "base": base.name,
                "target": target.name,
                "volume": target.volume_name,
                "capacity": found.capacity,
                "block_size": found.block_size,
                "changed_bytes": found.changed_bytes,
                "ranges": [{"offset": start, "length": length} for start, length in found.ranges],
            }
        )
        return
    _print(snap_a, snap_b, found)


def _print(snap_a: str, snap_b: str, found: Delta) -> None:
    share = found.changed_bytes / found.capacity * 100 if found.capacity else 0.0
    lines = [f"{'OFFSET':>16}  {'LENGTH':>14}"]
    lines += [f"{start:>16}  {length:>14}" for start, length in found.ranges]
    lines.append(
        f"{snap_b} differs from {snap_a} in {len(found.ranges)} range(s): "
        f"{format_size(found.changed_bytes)} of {format_size(found.capacity)} ({share:.2f}%), "
        f"exact to {format_size(found.block_size)} blocks"
    )
    typer.echo("\n".join(lines))
