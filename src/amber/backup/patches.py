"""Patches: the bytes an incremental changed inside a chunk, stored without the rest of it.

A manifest's chunk map names one chunk per aligned position; its patches (`manifest.Patch`)
write byte ranges over that map. This module holds the pure logic around them:

- **Reading a manifest**: `pieces` cuts a manifest into the disjoint pieces that make up the
  volume (`(volume offset, length, chunk id, chunk offset)`): the base positions minus their
  patched bytes, plus the patches. Restore writes exactly these; holes and zeros are not pieces.
- **Writing one**: an incremental backup looks at each position the extent map says changed.
  It *patches* the position when the changed bytes are few (`PatchPolicy`): it reads only the
  changed ranges (coalesced across small gaps), stores each as a chunk of its own, keeps the
  base chunk, and keeps the older patches of the position where the new ones do not cover them
  (`overlay`). Otherwise it *rewrites* the position: reads it whole and drops its patches.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from amber.backup.manifest import Manifest, Patch
from amber.domain.units import KiB

ByteRange = tuple[int, int]
"""`[start, end)` of the volume."""


class Piece(NamedTuple):
    """Volume bytes `[offset, offset + length)` are `[chunk_offset, +length)` of `chunk_id`."""

    offset: int
    length: int
    chunk_id: bytes
    chunk_offset: int


@dataclass(frozen=True)
class PatchPolicy:
    """When an incremental patches a changed position instead of rewriting it.

    Measured with `bench/mix_bench.py --mixes mixed,database,vm-image` (docs/benchmarks.md,
    issue 17, "patches")."""

    coalesce_gap: int = 16 * KiB
    """Changed ranges closer than this are read (and stored) as one range: a 4 KiB gap costs
    less to read through than a chunk and a patch entry of its own."""
    max_fraction: float = 0.25
    """Patch only when the changed bytes are at most this part of the position."""
    max_patches: int = 8
    """Rewrite a position that would otherwise carry more patches than this (restore reads
    one chunk per patch, so a position's patches must not grow without bound)."""


def coalesce(ranges: Sequence[ByteRange], gap: int) -> list[ByteRange]:
    """Sorted `[start, end)` ranges merged where they are less than `gap` bytes apart."""
    merged: list[ByteRange] = []
    for start, end in ranges:
        if merged and start - merged[-1][1] < gap:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def by_position(patches: Sequence[Patch], chunk_size: int) -> dict[int, list[Patch]]:
    """The patches of each position, a patch that crosses a position boundary split there."""
    grouped: dict[int, list[Patch]] = {}
    for patch in patches:
        offset = patch.offset
        while offset < patch.end:
            position = offset // chunk_size
            end = min(patch.end, (position + 1) * chunk_size)
            skip = offset - patch.offset
            piece = Patch(offset, end - offset, patch.chunk_id, patch.chunk_offset + skip)
            grouped.setdefault(position, []).append(piece)
            offset = end
    return grouped


def subtract(patches: Sequence[Patch], ranges: Sequence[ByteRange]) -> list[Patch]:
    """What stays visible of sorted, disjoint `patches` once sorted `ranges` are written over
    them: patches trimmed or split (their chunk offsets moved along)."""
    kept: list[Patch] = []
    for patch in patches:
        offset = patch.offset
        for start, end in ranges:
            if end <= offset or start >= patch.end:
                continue
            if start > offset:
                kept.append(_part(patch, offset, start))
            offset = max(offset, end)
        if offset < patch.end:
            kept.append(_part(patch, offset, patch.end))
    return kept


def _part(patch: Patch, start: int, end: int) -> Patch:
    return Patch(start, end - start, patch.chunk_id, patch.chunk_offset + start - patch.offset)


def overlay(old: Sequence[Patch], new: Sequence[Patch]) -> list[Patch]:
    """Sorted, disjoint patches for `new` written over `old` (both sorted and disjoint)."""
    kept = subtract(old, [(p.offset, p.end) for p in new])
    return sorted([*kept, *new], key=lambda p: p.offset)


def should_patch(
    length: int, ranges: Sequence[ByteRange], old: Sequence[Patch], policy: PatchPolicy
) -> bool:
    """Whether a position of `length` bytes whose `ranges` changed is patched (True) or
    rewritten, given its older patches `old`."""
    changed = sum(end - start for start, end in ranges)
    if not ranges or changed > length * policy.max_fraction:
        return False
    return len(subtract(old, ranges)) + len(ranges) <= policy.max_patches


def pieces(manifest: Manifest) -> Iterator[Piece]:
    """The disjoint pieces that make up the backed-up volume, in volume order (holes and zero
    chunks, never written, are not pieces). Generated, not listed: a large volume has
    hundreds of thousands."""
    overlaid = (Piece(p.offset, p.length, p.chunk_id, p.chunk_offset) for p in manifest.patches)
    return heapq.merge(_base_pieces(manifest), overlaid)


def _base_pieces(manifest: Manifest) -> Iterator[Piece]:
    """The data positions' bytes that no patch covers, in volume order."""
    patches = manifest.patches
    ends = [p.end for p in patches]
    size = manifest.chunk_size
    for position, ref in enumerate(manifest.chunk_map):
        if not isinstance(ref, bytes):
            continue
        start, end = manifest.chunk_range(position)
        cursor = start
        for i in range(bisect.bisect_right(ends, start), len(patches)):  # ending after `start`
            patch = patches[i]
            if patch.offset >= end:
                break
            if patch.offset > cursor:
                yield Piece(cursor, patch.offset - cursor, ref, cursor - position * size)
            cursor = max(cursor, patch.end)
        if cursor < end:
            yield Piece(cursor, end - cursor, ref, cursor - position * size)
