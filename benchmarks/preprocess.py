#!/usr/bin/env python
"""Preprocessing throughput and memory, beside two baselines measured in the same run.

    python benchmarks/preprocess.py --size-mb 200 --workers 1 2

On one corpus (the real ko/de jsonl in ../shared/corpora repeated to --size-mb of text) it times:
  limit     the tokenizer's bare ``encode_batch`` on one thread over the texts already in memory,
            nothing parsed or written, times the worker count: what W cores can do at best;
  megatron  Megatron-LM's tools/preprocess_data.py method at its best: a process pool (fork,
            imap chunksize 32) encoding each document straight to ids, written through
            megatron-core's IndexedDatasetBuilder;
  pretrain  tools/preprocess_data.py of this project.
Throughput is MB of document text (UTF-8) per second of wall time, start-up included. Memory is
the peak over the whole process tree, as the sum of PSS (shared pages split between processes)
and of RSS, sampled every 0.1 s. Everything is measured --rounds times, alternating; rates are medians.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def build_corpus(size_mb: float, corpora: Path, out: Path) -> tuple[Path, int]:
    """Write jsonl of real documents, repeated round-robin, until size_mb MB of text."""
    import zstandard

    target = int(size_mb * 1e6)
    path = out / f"corpus-{size_mb:g}MB.jsonl"
    meta = path.with_suffix(".bytes")
    if path.exists() and meta.exists():
        return path, int(meta.read_text())
    docs = []
    for file in sorted(corpora.glob("*.jsonl.zst")):
        with zstandard.open(file, "rt", encoding="utf-8") as handle:
            docs += [json.loads(line)["text"] for line in handle]
    docs.sort(key=lambda d: zlib.crc32(d.encode("utf-8")))  # interleave languages and sources, reproducibly
    text_bytes = 0
    with open(path, "w", encoding="utf-8") as handle:
        while text_bytes < target:
            for doc in docs:
                handle.write(json.dumps({"text": doc}, ensure_ascii=False) + "\n")
                text_bytes += len(doc.encode("utf-8"))
                if text_bytes >= target:
                    break
    meta.write_text(str(text_bytes))
    return path, text_bytes


def measure(cmd: list[str], env: dict | None = None) -> tuple[float, float, float]:
    """Wall seconds, peak PSS MiB and peak RSS MiB of the process tree of ``cmd``."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak_pss = peak_rss = 0.0
    while proc.poll() is None:
        pss, rss = _tree_memory(proc.pid)
        peak_pss, peak_rss = max(peak_pss, pss), max(peak_rss, rss)
        time.sleep(0.5)  # reading smaps walks page tables: sampling faster steals a core from the run it measures
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr.read().decode()[-3000:]}")
    return seconds, peak_pss, peak_rss


def _tree_memory(pid: int) -> tuple[float, float]:
    pids, pss, rss = [pid], 0, 0
    while pids:
        current = pids.pop()
        try:
            for line in open(f"/proc/{current}/smaps_rollup"):
                if line.startswith("Pss:"):
                    pss += int(line.split()[1])
                elif line.startswith("Rss:"):
                    rss += int(line.split()[1])
            for task in os.listdir(f"/proc/{current}/task"):
                pids += [int(c) for c in open(f"/proc/{current}/task/{task}/children").read().split()]
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return pss / 1024, rss / 1024


def bare_encode_rate(corpus: Path, tokenizer: str, limit_mb: float) -> float:
    """MB/s of encode_batch on one thread over the first ``limit_mb`` MB of texts (preloaded; run in
    this process)."""
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    os.environ["RAYON_NUM_THREADS"] = "1"
    from pretrain.tokenization import load_tokenizer

    backend = load_tokenizer(tokenizer).backend
    texts, size = [], 0
    with open(corpus, encoding="utf-8") as handle:
        for line in handle:
            texts.append(json.loads(line)["text"])
            size += len(texts[-1].encode("utf-8"))
            if size >= limit_mb * 1e6:
                break
    start = time.perf_counter()
    for i in range(0, len(texts), 1000):
        backend.encode_batch(texts[i : i + 1000], add_special_tokens=False)
    return size / (time.perf_counter() - start) / 1e6


def megatron_method(corpus: str, tokenizer: str, prefix: str, workers: int) -> None:
    """Megatron-LM tools/preprocess_data.py's pipeline, with the tokenizer encoding straight to ids."""
    import multiprocessing

    import numpy as np
    from megatron.core.datasets.indexed_dataset import DType, IndexedDatasetBuilder

    from pretrain.tokenization import load_tokenizer

    loaded = load_tokenizer(tokenizer)
    builder = IndexedDatasetBuilder(prefix + ".bin", dtype=DType.optimal_dtype(loaded.vocab_size))
    with open(corpus, encoding="utf-8") as handle, multiprocessing.Pool(workers, _megatron_init, (loaded.to_json(),)) as pool:
        for ids in pool.imap(_megatron_encode, handle, 32):
            if ids:
                builder.add_document(np.array(ids), [len(ids)])
    builder.finalize(prefix + ".idx")


_megatron_tokenizer = None  # per worker process, as Megatron's Encoder.initializer does


def _megatron_init(tokenizer_json: str) -> None:
    global _megatron_tokenizer
    from tokenizers import Tokenizer

    _megatron_tokenizer = Tokenizer.from_str(tokenizer_json)


def _megatron_encode(line: str) -> list[int]:
    return _megatron_tokenizer.encode(json.loads(line)["text"], add_special_tokens=False).ids


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size-mb", type=float, default=200)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--tokenizer", default=str(SHARED / "tokenizers" / "multilingual-bpe"))
    p.add_argument("--corpora", type=Path, default=SHARED / "corpora")
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "pretrain-bench")
    p.add_argument("--only", choices=["limit", "megatron", "pretrain"], nargs="+",
                   default=["limit", "megatron", "pretrain"])
    p.add_argument("--rounds", type=int, default=2, help="alternate all runs this many times; medians are shown")
    p.add_argument("--limit-mb", type=float, default=50, help="MB of text the bare-encode limit is timed on")
    p.add_argument("--megatron-run", nargs=4, metavar=("CORPUS", "TOKENIZER", "PREFIX", "WORKERS"),
                   help=argparse.SUPPRESS)  # internal: run the Megatron method in a child process
    args = p.parse_args()
    if args.megatron_run:
        corpus, tokenizer, prefix, workers = args.megatron_run
        megatron_method(corpus, tokenizer, prefix, int(workers))
        return
    args.workdir.mkdir(parents=True, exist_ok=True)
    corpus, text_bytes = build_corpus(args.size_mb, args.corpora, args.workdir)
    mb = text_bytes / 1e6
    print(f"corpus: {corpus} ({mb:,.1f} MB of text), tokenizer: {args.tokenizer}", flush=True)
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore"}
    rows: dict[tuple[int, str], list[tuple[float, float, float]]] = {}
    limits = []
    for _ in range(args.rounds):  # alternate everything: this machine's speed drifts between minutes
        if "limit" in args.only:
            limits.append(bare_encode_rate(corpus, args.tokenizer, min(args.limit_mb, mb)))
        for workers in args.workers:
            out = args.workdir / f"out-w{workers}"
            if "megatron" in args.only:
                rows.setdefault((workers, "megatron"), []).append(measure(
                    [sys.executable, __file__, "--megatron-run", str(corpus), args.tokenizer, f"{out}-megatron",
                     str(workers)], env))
            if "pretrain" in args.only:
                rows.setdefault((workers, "pretrain"), []).append(measure(
                    [sys.executable, str(ROOT / "tools" / "preprocess_data.py"), "--input", str(corpus), "--tokenizer",
                     args.tokenizer, "--output-prefix", f"{out}-ours", "--workers", str(workers), "--no-progress",
                     "--overwrite"], env))
    limit = statistics.median(limits) if limits else None
    limit_note = (f"limit = one thread's bare encode_batch (median {limit:.2f} MB/s over {min(args.limit_mb, mb):g} MB)"
                  " x workers" if limit else "limit not measured (--only)")
    print(f"\nmedian of {args.rounds} round(s); {limit_note}")
    print(f"{'workers':>7} {'method':<9} {'MB/s':>7} {'% of limit':>10} {'peak PSS MiB':>12} {'peak RSS MiB':>12}")
    for workers in args.workers:
        if limit:
            print(f"{workers:>7} {'limit':<9} {limit * workers:>7.2f} {100.0:>9.1f}%")
        for name in ("megatron", "pretrain"):
            if (workers, name) in rows:
                runs = rows[(workers, name)]
                rate = statistics.median(mb / seconds for seconds, _, _ in runs)
                pss, rss = max(r[1] for r in runs), max(r[2] for r in runs)
                share = f"{100 * rate / (limit * workers):>9.1f}%" if limit else f"{'-':>10}"
                print(f"{workers:>7} {name:<9} {rate:>7.2f} {share} {pss:>12.0f} {rss:>12.0f}")


if __name__ == "__main__":
    main()
