#!/usr/bin/env python
"""The figures docs/scaling.md scales to 512 nodes, measured on this machine.

    python benchmarks/scaling_inputs.py                       # everything but the op build (minutes)
    python benchmarks/scaling_inputs.py --only imports store  # some of them
    python benchmarks/scaling_inputs.py --only ops            # DeepSpeed's CPU Adam built from scratch

  imports   wall time of the imports a training rank makes before its first step (median of 3, warm page
            cache), and the file-system calls they make (strace -f -c: openat, stat, ...): what 4,096 ranks
            ask of a shared file system at once;
  store     the c10d TCPStore that every rendezvous goes through: one client's round trip, and the
            operations per second the server answers with 8 client processes at once;
  index     pretrain.data.gpt_dataset.build_gpt_indices (document order, sample index, shuffle) at two
            corpus sizes, to check it is linear and take the cost per token;
  disk      sequential write with fsync, sequential and random 4 KiB reads with O_DIRECT (no page cache);
  ckpt      torch.save of a 1 GiB state dict with fsync, torch.load of it, and xxHash3 over it (the
            manifest's checksum);
  ops       DeepSpeed's CPU Adam extension compiled into an empty TORCH_EXTENSIONS_DIR (the first-use build).
The baselines are measured in the same run where there is one: the index at the smaller size, the disk's
sequential rate beside checkpoint writing.
"""

from __future__ import annotations

import argparse
import datetime
import mmap
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RANK_IMPORTS = "import torch, deepspeed, transformers; import pretrain.cli.train, pretrain.trainer, pretrain.data.builder"


def imports() -> None:
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "PYTHONWARNINGS": "ignore"}
    times = []
    for _ in range(3):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", RANK_IMPORTS], check=True, env=env, cwd=ROOT)
        times.append(time.perf_counter() - started)
    print(f"imports: {statistics.median(times):.2f} s wall (median of 3: {', '.join(f'{t:.2f}' for t in times)})")
    out = subprocess.run(["strace", "-f", "-c", "-e", "trace=%file", sys.executable, "-c", RANK_IMPORTS],
                         capture_output=True, text=True, env=env, cwd=ROOT)
    calls = {}
    for line in out.stderr.splitlines():
        fields = line.split()
        if len(fields) >= 5 and fields[0].replace(".", "").isdigit() and fields[-1].isidentifier() and fields[-1] != "total":
            calls[fields[-1]] = int(fields[3])
    total = sum(calls.values())
    top = ", ".join(f"{name} {count:,}" for name, count in sorted(calls.items(), key=lambda kv: -kv[1])[:5])
    print(f"imports: {total:,} file-system calls per rank ({top})")


def _store_client(port: int, ops: int) -> None:
    from torch.distributed import TCPStore

    store = TCPStore("127.0.0.1", port, is_master=False, timeout=datetime.timedelta(seconds=60))
    for _ in range(ops):
        store.add("counter", 1)
    store.set(f"done-{os.getpid()}", "1")


def store() -> None:
    import multiprocessing

    from torch.distributed import TCPStore

    from pretrain.distributed import free_port

    port = free_port()
    server = TCPStore("127.0.0.1", port, is_master=True, wait_for_workers=False,
                      timeout=datetime.timedelta(seconds=60))
    started = time.perf_counter()
    for _ in range(2000):
        server.add("single", 1)
    latency = (time.perf_counter() - started) / 2000
    context = multiprocessing.get_context("spawn")
    clients, ops = 8, 2000
    procs = [context.Process(target=_store_client, args=(port, ops)) for _ in range(clients)]
    for proc in procs:
        proc.start()
    server.wait(["counter"])
    started = time.perf_counter()
    while int(server.add("counter", 0)) < clients * ops:
        time.sleep(0.01)
    elapsed = time.perf_counter() - started
    for proc in procs:
        proc.join()
    print(f"store: one client's add round trip {latency * 1e6:.0f} us; {clients} client processes: "
          f"{clients * ops / elapsed:,.0f} operations/s answered (from the first to the last counted)")


def index() -> None:
    from pretrain.data.gpt_dataset import build_gpt_indices

    rng = np.random.default_rng(0)
    results = []
    for documents, tokens in ((2_000_000, 1.2e9), (20_000_000, 12e9), (60_000_000, 36e9)):
        lengths = np.maximum(1, rng.exponential(tokens / documents, documents)).astype(np.int32)
        best = float("inf")
        for _ in range(3 if documents < 50_000_000 else 2):
            started = time.perf_counter()
            arrays = build_gpt_indices(lengths, 0, 1, 1024, 1234)
            best = min(best, time.perf_counter() - started)
        size = sum(a.nbytes for a in arrays.values())
        del arrays
        results.append((int(lengths.sum()), best, size))
        print(f"index: {documents:,} documents, {int(lengths.sum()):,} tokens, seq 1024: {best:.2f} s (best of "
              f"{3 if documents < 50_000_000 else 2}), {size / 2**20:,.0f} MiB of index arrays", flush=True)
    (t0, s0, _), (t1, s1, b1) = results[0], results[-1]
    print(f"index: x{t1 / t0:.0f} the tokens took x{s1 / s0:.1f} the time; at the largest size {s1 / t1 * 1e9:.3f} s and "
          f"{b1 / t1 * 1e9 / 2**20:.1f} MiB of arrays per billion tokens")


def disk(folder: Path, size: int = 2 << 30) -> None:
    path = folder / "disk.bin"
    block = os.urandom(16 << 20)
    started = time.perf_counter()
    with open(path, "wb") as handle:
        for _ in range(size // len(block)):
            handle.write(block)
        handle.flush()
        os.fsync(handle.fileno())
    write = size / (time.perf_counter() - started)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    buffer = mmap.mmap(-1, 16 << 20)
    started = time.perf_counter()
    while os.readv(fd, [buffer]):
        pass
    read = size / (time.perf_counter() - started)
    small = mmap.mmap(-1, 4096)
    rng = np.random.default_rng(0)
    offsets = rng.integers(0, size // 4096, 20000) * 4096
    started = time.perf_counter()
    for offset in offsets:
        os.preadv(fd, [small], int(offset))
    iops = len(offsets) / (time.perf_counter() - started)
    os.close(fd)
    path.unlink()
    print(f"disk: sequential write with fsync {write / 1e9:.2f} GB/s; O_DIRECT sequential read {read / 1e9:.2f} GB/s; "
          f"random 4 KiB O_DIRECT reads {iops:,.0f}/s (one thread)")


def ckpt(folder: Path) -> None:
    import torch
    import xxhash

    state = {f"layer{i}": torch.randn(1 << 22) for i in range(64)}  # 64 x 16 MiB = 1 GiB of fp32
    size = sum(t.numel() * t.element_size() for t in state.values())
    path = folder / "ckpt.pt"
    started = time.perf_counter()
    with open(path, "wb") as handle:
        torch.save(state, handle)
        handle.flush()
        os.fsync(handle.fileno())
    save = size / (time.perf_counter() - started)
    started = time.perf_counter()
    digest = xxhash.xxh3_64()
    with open(path, "rb") as handle:
        while chunk := handle.read(64 << 20):
            digest.update(chunk)
    hashing = size / (time.perf_counter() - started)
    started = time.perf_counter()
    torch.load(path, weights_only=True)
    load = size / (time.perf_counter() - started)
    path.unlink()
    print(f"ckpt: torch.save 1 GiB + fsync {save / 1e9:.2f} GB/s; read + xxHash3 (page cache) {hashing / 1e9:.2f} GB/s; "
          f"torch.load (page cache) {load / 1e9:.2f} GB/s")


def ops(folder: Path) -> None:
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": str(folder / "ext"), "DS_ACCELERATOR": "cpu"}
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "from deepspeed.ops.op_builder import CPUAdamBuilder; CPUAdamBuilder().load()"],
                   check=True, env=env, capture_output=True)
    print(f"ops: DeepSpeed CPU Adam built from scratch in {time.perf_counter() - started:.0f} s ({os.cpu_count()} cores)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="+", choices=["imports", "store", "index", "disk", "ckpt", "ops"],
                   default=["imports", "store", "index", "disk", "ckpt"])
    p.add_argument("--workdir", type=Path, default=ROOT.parent, help="a folder on the disk to measure (not tmpfs)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(dir=args.workdir, prefix="scaling-inputs-") as folder:
        for name in args.only:
            function = globals()[name]
            function(Path(folder)) if name in ("disk", "ckpt", "ops") else function()


if __name__ == "__main__":
    main()
