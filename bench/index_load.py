"""Time to load an index of N entries (decode the objects' plaintext, merge into a table).

    .venv/bin/python bench/index_load.py --entries 1000000 [--reps 3]

Synthetic entries (random ids, 100 per pack), one index object's plaintext; no store, no
decryption: the Python per entry that opening a repository pays. Prints µs per entry for the
decode and the merge, and the total; run it with PYTHONPATH set to compare source trees.
"""

from __future__ import annotations

import argparse
import os
import time

from amber.backup.index import PackRecord, decode_index, encode_index, merge_objects
from amber.backup.pack import PackEntry

PER_PACK = 100


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    n = args.entries - args.entries % PER_PACK
    records = [
        PackRecord(
            os.urandom(32),
            16 << 20,
            tuple(
                PackEntry(os.urandom(32), i * 70_000, 60_000, 262_144, 1) for i in range(PER_PACK)
            ),
        )
        for _ in range(n // PER_PACK)
    ]
    plaintext = encode_index(records)
    del records
    key = "index/" + "a" * 64
    for _ in range(args.reps):
        started = time.process_time()
        decoded = decode_index(plaintext, key)
        decoded_at = time.process_time()
        index = merge_objects({key: decoded})
        done = time.process_time()
        assert len(index) == n
        print(
            f"{n} entries: decode {(decoded_at - started) * 1e6 / n:.2f} µs/entry, "
            f"merge {(done - decoded_at) * 1e6 / n:.2f} µs/entry, total {done - started:.2f} s CPU"
        )


if __name__ == "__main__":
    main()
