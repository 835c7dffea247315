#!/usr/bin/env python
"""Preprocessing throughput and memory, beside two baselines measured in the same run.

    python benchmarks/preprocess.py --size-mb 200 --workers 1 2

On one corpus (the real ko/de jsonl in ../shared/corpora repeated to --size-mb of text) it times:
  limit     what these cores can do at best: W processes at the same time (started together), each
            running the bare loop on its 1/W of the corpus (split at line boundaries): parse each line
            with orjson (the workers' parser) and call the tokenizer's ``encode_batch_fast`` on 1 MB
            batches, nothing checked, counted or written; the blocks are read into memory before the
            clock starts. Total text over the time from the first loop's start to the last one's end;
  megatron  Megatron-LM's tools/preprocess_data.py method at its best: a process pool (fork,
            imap chunksize 32) encoding each document straight to ids, written through
            megatron-core's IndexedDatasetBuilder;
  pretrain  tools/preprocess_data.py of this project with --workers W.
Throughput is MB of document text (UTF-8) per second of wall time (the project's and Megatron's with
start-up included). Memory is the peak over the whole process tree, as the sum of PSS (shared pages
split between processes) and of RSS, sampled every 0.5 s. Everything is measured --rounds times,
alternating; rates are medians, and shares of the limit are medians of each round's ratio to the limit
measured right before it.

With --readers it also times this project's dump readers end to end (read, clean the markup, encode,
write) in MB of input per second: a MediaWiki XML dump (the jawiki excerpt's complete pages, repeated)
and a Namuwiki JSON array (the excerpt's articles, repeated), from ../shared/corpora/samples.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
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
    while True:
        pss, rss = _tree_memory(proc.pid)
        peak_pss, peak_rss = max(peak_pss, pss), max(peak_rss, rss)
        try:  # reading smaps walks page tables: sampling faster steals a core from the run it measures
            proc.wait(timeout=0.5)  # returns at the exit, where a sleep(0.5) added up to 0.5 s to the run's time
            break
        except subprocess.TimeoutExpired:
            continue
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr.read().decode()[-3000:]}")
    return seconds, peak_pss, peak_rss


def children_cpu() -> float:
    """User + system CPU seconds of this process's children that have ended, and of the children they
    waited for (a pool's workers are counted once their command ends)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


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


def concurrent_limit(corpus: Path, tokenizer: str, limit_mb: float | None, processes: int) -> tuple[float, float]:
    """MB/s of text of the bare loop in ``processes`` processes at once, each on its share of the corpus (its
    first ``limit_mb`` MB of file, default all): the most these cores give when all are busy; and the CPU
    seconds the loops took, all processes together."""
    size = corpus.stat().st_size if limit_mb is None else min(corpus.stat().st_size, int(limit_mb * 1e6))
    cuts = [_line_start(corpus, size * k // processes) for k in range(processes)] + [size]
    procs = [subprocess.Popen([sys.executable, __file__, "--bare-run", str(corpus), tokenizer, str(start), str(end)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for start, end in zip(cuts, cuts[1:])]
    for proc in procs:  # every process has loaded the tokenizer and read its part: start the loops together
        if proc.stdout.readline().strip() != b"ready":
            raise SystemExit(f"the bare-encode run failed:\n{proc.communicate()[1].decode()[-3000:]}")
    for proc in procs:
        proc.stdin.write(b"go\n")
        proc.stdin.flush()
    outputs = [proc.communicate()[0].split() for proc in procs]
    if any(proc.returncode for proc in procs):
        raise SystemExit("the bare-encode run failed")
    text = sum(int(out[0]) for out in outputs)
    seconds = max(float(out[2]) for out in outputs) - min(float(out[1]) for out in outputs)
    return text / seconds / 1e6, sum(float(out[3]) for out in outputs)


def _line_start(path: Path, offset: int) -> int:
    """The first line start at or after ``offset``."""
    if offset == 0:
        return 0
    with open(path, "rb") as handle:
        handle.seek(offset - 1)
        handle.readline()
        return handle.tell()


def bare_encode(corpus: Path, tokenizer: str, start: int, end: int) -> None:
    """One process of the limit: read bytes ``start:end`` of the corpus into 1 MB blocks (whole lines), say
    ready, wait for the go, then parse and encode them; prints text bytes, the loop's start and end, and the
    CPU seconds it took."""
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    os.environ["RAYON_NUM_THREADS"] = "1"
    import orjson  # the parser the workers use

    from pretrain.tokenization import load_tokenizer

    backend = load_tokenizer(tokenizer).backend
    blocks = []
    with open(corpus, "rb") as handle:
        handle.seek(start)
        while handle.tell() < end:
            block = handle.read(min(1 << 20, end - handle.tell()))
            if not block:
                break
            if not block.endswith(b"\n"):
                block += handle.readline()
            blocks.append(block)
    print("ready", flush=True)
    sys.stdin.readline()
    text = 0
    started, cpu = time.time(), time.process_time()
    for block in blocks:
        texts = [orjson.loads(line)["text"] for line in block.splitlines()]
        text += sum(len(t.encode("utf-8")) for t in texts)
        backend.encode_batch_fast(texts, add_special_tokens=False)
    print(text, started, time.time(), time.process_time() - cpu)


def reader_inputs(samples: Path, out: Path, size_mb: float) -> dict[str, Path]:
    """A MediaWiki XML dump and a Namuwiki array of about ``size_mb`` MB each, from the real excerpts."""
    import lzma

    xml_path, namu_path = out / f"jawiki-{size_mb:g}MB-pages-articles.xml", out / f"namuwiki-{size_mb:g}MB.json"
    if not xml_path.exists():
        raw = lzma.open(samples / "jawiki-sample-pages-articles.xml.xz").read().decode("utf-8")
        head, _, rest = raw.partition("<page>")
        pages = "<page>" + rest[: rest.rindex("</page>") + len("</page>")] + "\n"
        with open(xml_path, "w", encoding="utf-8") as handle:
            handle.write(head)
            for _ in range(max(1, int(size_mb * 1e6 / len(pages.encode())))):
                handle.write(pages)
            handle.write("</mediawiki>\n")
    if not namu_path.exists():
        records = json.loads((samples / "namuwiki-sample.json").read_text(encoding="utf-8"))
        body = ",".join(json.dumps(r, ensure_ascii=False) for r in records)
        repeats = max(1, int(size_mb * 1e6 / len(body.encode())))
        namu_path.write_text("[" + ",".join([body] * repeats) + "]", encoding="utf-8")
    return {"mediawiki XML": xml_path, "namuwiki JSON": namu_path}


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
    p.add_argument("--limit-mb", type=float, help="MB of the corpus file the limit is timed on (default: all of it)")
    p.add_argument("--readers", type=float, metavar="MB", help="also time the dump readers on inputs of this size")
    p.add_argument("--bare-run", nargs=4, metavar=("CORPUS", "TOKENIZER", "START", "END"),
                   help=argparse.SUPPRESS)  # internal: one process of the limit
    p.add_argument("--megatron-run", nargs=4, metavar=("CORPUS", "TOKENIZER", "PREFIX", "WORKERS"),
                   help=argparse.SUPPRESS)  # internal: run the Megatron method in a child process
    args = p.parse_args()
    if args.bare_run:
        bare_encode(Path(args.bare_run[0]), args.bare_run[1], int(args.bare_run[2]), int(args.bare_run[3]))
        return
    if args.megatron_run:
        corpus, tokenizer, prefix, workers = args.megatron_run
        megatron_method(corpus, tokenizer, prefix, int(workers))
        return
    args.workdir.mkdir(parents=True, exist_ok=True)
    corpus, text_bytes = build_corpus(args.size_mb, args.corpora, args.workdir)
    mb = text_bytes / 1e6
    print(f"corpus: {corpus} ({mb:,.1f} MB of text), tokenizer: {args.tokenizer}", flush=True)
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore"}
    # every round measures the limit right before the runs it is compared with, and shares are medians
    # of per-round ratios: this VM's speed drifts by 30% or more between minutes
    # per round: MB/s, peak PSS, peak RSS, the limit's MB/s before it, CPU seconds of all its processes
    runs: dict[tuple[int, str], list[tuple[float, float, float, float, float]]] = {}
    for _ in range(args.rounds):
        for workers in args.workers:
            limit = 0.0
            if "limit" in args.only:
                limit, loops_cpu = concurrent_limit(corpus, args.tokenizer, args.limit_mb, workers)
                runs.setdefault((workers, "limit"), []).append((limit, 0, 0, limit, loops_cpu))
            out = args.workdir / f"out-w{workers}"
            commands = {
                "megatron": [sys.executable, __file__, "--megatron-run", str(corpus), args.tokenizer,
                             f"{out}-megatron", str(workers)],
                "pretrain": [sys.executable, str(ROOT / "tools" / "preprocess_data.py"), "--input", str(corpus),
                             "--tokenizer", args.tokenizer, "--output-prefix", f"{out}-ours", "--workers",
                             str(workers), "--no-progress", "--overwrite"]}
            for name in (n for n in ("megatron", "pretrain") if n in args.only):
                before = children_cpu()
                seconds, pss, rss = measure(commands[name], env)
                runs.setdefault((workers, name), []).append((mb / seconds, pss, rss, limit, children_cpu() - before))
    readers = {}
    if args.readers:
        for name, path in reader_inputs(args.corpora / "samples", args.workdir, args.readers).items():
            for workers in args.workers:
                seconds, pss, rss = measure([sys.executable, str(ROOT / "tools" / "preprocess_data.py"), "--input",
                                             str(path), "--tokenizer", args.tokenizer, "--output-prefix",
                                             str(args.workdir / "reader"), "--workers", str(workers), "--no-progress",
                                             "--overwrite"], env)
                readers[(name, workers)] = (path.stat().st_size / 1e6 / seconds, pss, rss)
    limit_part = "the whole corpus" if args.limit_mb is None else f"its first {args.limit_mb:g} MB"
    print(f"\nmedian of {args.rounds} round(s); limit = W processes at once, each parsing (orjson) and encoding "
          f"(encode_batch_fast) its 1/W of {limit_part}; shares are medians of per-round ratios; CPU s = "
          "user + system seconds of all the run's processes (the limit's: its loops alone)")
    print(f"{'workers':>7} {'method':<9} {'MB/s':>7} {'of limit':>9} {'CPU s':>7} {'peak PSS MiB':>12} "
          f"{'peak RSS MiB':>12}")
    for (workers, name), rows in runs.items():
        rate = statistics.median(r[0] for r in rows)
        share = f"{100 * statistics.median(r[0] / r[3] for r in rows):>8.1f}%" if rows[0][3] else f"{'-':>9}"
        per_round = " ".join(f"{r[0]:.2f}" for r in rows)
        cpu = statistics.median(r[4] for r in rows)
        memory = f" {max(r[1] for r in rows):>12.0f} {max(r[2] for r in rows):>12.0f}" if rows[0][1] else f"{'':>26}"
        print(f"{workers:>7} {name:<9} {rate:>7.2f} {share} {cpu:>7.1f}{memory}   rounds: {per_round}")
    if readers:
        print("\ndump readers, end to end (read, clean markup, encode, write), MB of input per second, 1 round:")
        for (name, workers), (rate, pss, rss) in readers.items():
            print(f"{workers:>7} {name:<14} {rate:>7.2f} MB/s  peak PSS {pss:,.0f} MiB, RSS {rss:,.0f} MiB")


if __name__ == "__main__":
    main()
