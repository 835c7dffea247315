#!/usr/bin/env python
"""What verifying a checkpoint costs: the manifest's checksum (xxHash3-64 over a file, ``manifest.checksum``)
beside reading the same file without hashing, both on one core in the same run.

    python benchmarks/checkpoint_hash.py --size-mb 512 --rounds 5

Writes a file of random bytes (a checkpoint shard does not compress either), reads it once so that it is
in the page cache, then alternates --rounds times: reading it in the manifest's 8 MiB blocks and doing
nothing with them (the baseline: what any verification must pay), ``manifest.checksum`` of it, and
xxh3_64 over one 8 MiB block already in memory, repeated to the file's size (the hash alone). Rates are
GB/s (1e9 bytes) of file per second, medians over rounds; each run is one thread.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from pretrain import manifest


def read_only(path: Path) -> None:
    with open(path, "rb") as handle:
        while handle.read(manifest._BLOCK):
            pass


def hash_in_memory(size: int) -> None:
    import xxhash

    block = os.urandom(manifest._BLOCK)
    digest = xxhash.xxh3_64()
    for _ in range(size // len(block)):
        digest.update(block)
    digest.hexdigest()


def timed(function, *args) -> float:
    started = time.perf_counter()
    function(*args)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=512, help="size of the file hashed (MB)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()), help="where the file is written")
    args = parser.parse_args()
    path = args.dir / f"checkpoint-hash-{os.getpid()}.bin"
    size = args.size_mb * 1_000_000 // manifest._BLOCK * manifest._BLOCK
    try:
        with open(path, "wb") as handle:
            for _ in range(size // manifest._BLOCK):
                handle.write(os.urandom(manifest._BLOCK))
        read_only(path)  # into the page cache: the rates below are the CPU's, not the disk's
        seconds: dict[str, list[float]] = {"read only (baseline)": [], "manifest.checksum": [], "hash alone": []}
        for _ in range(args.rounds):
            seconds["read only (baseline)"].append(timed(read_only, path))
            seconds["manifest.checksum"].append(timed(manifest.checksum, path))
            seconds["hash alone"].append(timed(hash_in_memory, size))
    finally:
        path.unlink(missing_ok=True)
    print(f"{size / 1e6:,.0f} MB file in the page cache, one thread, median of {args.rounds} alternated rounds")
    print(f"{'run':<22} {'GB/s':>6}   rounds (GB/s)")
    for name, values in seconds.items():
        rates = [size / 1e9 / s for s in values]
        print(f"{name:<22} {statistics.median(rates):>6.2f}   {' '.join(f'{r:.2f}' for r in rates)}")


if __name__ == "__main__":
    main()
