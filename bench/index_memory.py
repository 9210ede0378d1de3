"""Bytes per entry of the in-memory index and of a decoded manifest's chunk map (issue 17).

Builds synthetic structures of `--entries` chunks (random 32-byte ids, packs of 64 entries, as
1 MiB chunks in 16 MiB packs; 4x as many per pack for 256 KiB chunks does not change the
per-entry cost) and reports what tracemalloc sees allocated for them, the chunk ids included
(the dict's keys are bytes objects of their own, as when it is loaded from index objects):

- the index as it was (a dict of chunk id -> `IndexEntry`) and as it is (`ChunkTable`);
- a chunk map as `decode_chunk_map` returns it, and as a `ChunkMap` holds it.

Usage: .venv/bin/python bench/index_memory.py [--entries 1000000]
"""

from __future__ import annotations

import argparse
import gc
import os
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

from amber.backup.index import ChunkTable, IndexEntry
from amber.backup.manifest import ChunkMap, decode_chunk_map, encode_chunk_map
from amber.backup.pack import PackEntry

PER_PACK = 64


def measure(label: str, entries: int, build: Callable[[], Any]) -> Any:
    gc.collect()
    tracemalloc.start()
    started = time.process_time()
    built = build()
    seconds = time.process_time() - started
    size, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(
        f"{label:<44} {size / entries:7.1f} B/entry (peak {peak / entries:6.1f})"
        f"  build {seconds:5.2f} s CPU"
    )
    return built


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    n = parser.parse_args().entries
    ids = [os.urandom(32) for _ in range(n)]
    packs = [os.urandom(32) for _ in range(n // PER_PACK + 1)]

    def entry(i: int) -> PackEntry:
        return PackEntry(ids[i], (i % PER_PACK) * 600_000, 600_000, 1 << 20, 1)

    def old_index() -> dict[bytes, IndexEntry]:
        out: dict[bytes, IndexEntry] = {}
        for i in range(n):
            e = entry(i)
            out[e.chunk_id[:16] + e.chunk_id[16:]] = IndexEntry(
                packs[i // PER_PACK], e.offset, e.length, e.raw_length, 1
            )
        return out

    def new_index() -> ChunkTable:
        table = ChunkTable()
        for i in range(n):
            table.add(ids[i], packs[i // PER_PACK], entry(i))
        return table

    print(f"{n} entries; each structure holds its own copy of the ids")
    measure("index: dict[bytes, IndexEntry] (before)", n, old_index)
    table = measure("index: ChunkTable", n, new_index)
    started = time.process_time()
    found = sum(1 for chunk_id in ids if chunk_id in table)
    absent = sum(1 for _ in range(100_000) if os.urandom(32) in table)
    print(
        f"  {found} + 100000 absent lookups ({absent} found): "
        f"{time.process_time() - started:.2f} s CPU"
    )
    del table
    table, runs = encode_chunk_map(ids)

    def fresh_table() -> bytes:  # each decoded map owns its table, as when read from a manifest
        return bytes(bytearray(table))

    measure(
        "chunk map: decode_chunk_map list", n, lambda: decode_chunk_map(fresh_table(), runs, n, "m")
    )
    measure("chunk map: ChunkMap", n, lambda: ChunkMap.decode(fresh_table(), runs, n, "m"))


if __name__ == "__main__":
    main()
