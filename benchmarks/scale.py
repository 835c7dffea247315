#!/usr/bin/env python
"""Preprocessing and cleaning as the corpus grows: time per GB and peak memory at each size, the dedup
stage's memory per million documents, and the duplicates found against those planted.

    python benchmarks/scale.py --preprocess-gb 0.1 0.3 --clean-gb 0.1 0.3 --rounds 2    # a check, minutes
    python benchmarks/scale.py --preprocess-gb 1 5 10 --clean-gb 1 5 --workdir /work/scale --keep-corpus

The corpus (benchmarks/scale_corpus.py) is Korean and German documents grown from ../shared/corpora with
5% exact and 5% near copies planted; a size is the first parts of it (100 MB of text each), so every size
has the same mix. At each size it times, with the peak memory of the whole process tree (PSS, shared pages
split; RSS beside it; sampled every 0.5 s as benchmarks/preprocess.py does):
  preprocess  pretrain-preprocess with the shared multilingual BPE, --append-eod;
  clean       pretrain-clean as its two stages, each measured alone: filter (read, rules, hashes and
              signatures, streamed) and dedup (exact and near duplicates over all documents, the parts, the
              report): the stage whose memory grows with the corpus.
The baseline, measured in the same run, is the smallest size: each size's seconds per GB and peak memory
are shown against it (flat is the goal). The dedup stage's memory per million documents is the growth of
its peak between the smallest and largest size divided by the documents added. Duplicates found are
checked against the planted ones: of the copies whose original and copy both passed the rules, how many
the dedup removed, and which other documents it removed. With --rounds 2 the sizes run in alternating
order (the machine drifts); the medians are shown. Outputs are removed after each run; the corpus at the
end unless --keep-corpus.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]
from preprocess import ROOT, SHARED  # noqa: E402
from scale_corpus import EXACT, NEAR, TRUTH, build, truth_path  # noqa: E402


def measure(cmd: list[str]) -> dict:
    """Wall seconds and the peaks of the process tree of ``cmd`` (MiB): PSS (shared pages split, as
    benchmarks/preprocess.py measures it), its anonymous part (heap: what the process needs; the rest is
    file pages mapped, e.g. memory-mapped inputs, which the kernel can drop), and RSS; sampled every 0.5 s."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peaks = {"pss": 0.0, "anon": 0.0, "rss": 0.0}
    while True:
        for key, value in _tree(proc.pid).items():
            peaks[key] = max(peaks[key], value)
        try:
            proc.wait(timeout=0.5)  # returns at the exit: a sleep would add up to 0.5 s to the run's time
            break
        except subprocess.TimeoutExpired:
            continue
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr.read().decode()[-3000:]}")
    return {"seconds": seconds, **peaks}


def _tree(pid: int) -> dict[str, float]:
    fields = {"Pss:": "pss", "Pss_Anon:": "anon", "Rss:": "rss"}
    totals, pids = dict.fromkeys(fields.values(), 0.0), [pid]
    while pids:
        current = pids.pop()
        try:
            for line in open(f"/proc/{current}/smaps_rollup"):
                name = line.split(":")[0] + ":"
                if name in fields:
                    totals[fields[name]] += int(line.split()[1]) / 1024
            for task in os.listdir(f"/proc/{current}/task"):
                pids += [int(c) for c in open(f"/proc/{current}/task/{task}/children").read().split()]
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return totals


def prefix(parts: list[dict], size_gb: float) -> tuple[list[str], int, int]:
    """(paths, documents, bytes of text) of the first parts that make ``size_gb``."""
    count = int(np.ceil(size_gb * 1e9 / parts[0]["bytes"] - 1e-6))
    chosen = parts[:count]
    return [p["path"] for p in chosen], sum(p["documents"] for p in chosen), sum(p["bytes"] for p in chosen)


def run_preprocess(paths: list[str], workdir: Path, tokenizer: str, workers: int) -> dict:
    out = workdir / "tokenized"
    cmd = [sys.executable, str(ROOT / "tools" / "preprocess_data.py"), "--input", *paths, "--tokenizer", tokenizer,
           "--output-prefix", str(out), "--append-eod", "--workers", str(workers), "--no-progress", "--overwrite"]
    result = measure(cmd)
    tokens = (Path(f"{out}_text_document.bin").stat().st_size) // 2  # uint16: the shared BPE has 50,256 tokens
    for suffix in (".bin", ".idx"):
        Path(f"{out}_text_document{suffix}").unlink()
    return {**result, "tokens": tokens}


def run_clean(paths: list[str], workdir: Path, workers: int) -> dict:
    out = workdir / "cleaned"
    shutil.rmtree(out, ignore_errors=True)
    base = [sys.executable, str(ROOT / "tools" / "clean_corpus.py"), "--input", *paths, "--output", str(out),
            "--workers", str(workers), "--no-progress"]
    starts = dict(zip(paths, np.cumsum([0] + [len(np.load(truth_path(Path(p)))) for p in paths[:-1]]).tolist()))
    filtered = measure([*base, "--stage", "filter"])
    passed = positions(sorted((out / ".stage").glob("*.records.jsonl.zst")), starts)  # before dedup removes them
    deduped = measure([*base, "--stage", "dedup"])
    report = json.loads((out / "report.json").read_text())
    kept = positions(sorted(out.glob("part-*.jsonl.zst")), starts)
    shutil.rmtree(out)
    return {"filter": filtered, "dedup": deduped, "passed": passed, "kept": kept, "report": report}


def positions(files: list[Path], starts: dict[str, int]) -> np.ndarray:
    """The corpus-wide index of every record in cleaning's zstd jsonl files (from its source and line)."""
    import orjson
    import zstandard

    found = []
    for file in files:
        with open(file, "rb") as handle:
            for line in io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(handle)):
                record = orjson.loads(line)
                found.append(starts[record["source"]] + record["position"] - 1)
    return np.array(found, dtype=np.int64)


def evaluate(paths: list[str], passed_ix: np.ndarray, kept_ix: np.ndarray, threshold: float) -> dict:
    """Duplicates removed by the dedup stage against the planted ones (documents by corpus-wide index)."""
    truth = np.concatenate([np.load(truth_path(Path(p))) for p in paths]).view(TRUTH)
    is_passed = np.zeros(len(truth), dtype=bool)
    is_passed[passed_ix] = True
    removed = np.zeros(len(truth), dtype=bool)
    removed[np.setdiff1d(passed_ix, kept_ix)] = True
    original_passed = np.where(truth["original"] >= 0, is_passed[np.maximum(truth["original"], 0)], False)
    out = {"documents": len(truth), "passed": int(is_passed.sum()), "removed": int(removed.sum())}
    for name, kind in (("exact", EXACT), ("near", NEAR)):
        planted = truth["kind"] == kind
        expected = planted & is_passed & original_passed & (truth["jaccard"] >= threshold if kind == NEAR else True)
        out[name] = {"planted": int(planted.sum()), "expected": int(expected.sum()),
                     "found": int((expected & removed).sum())}
    near = truth["kind"] == NEAR
    out["near"]["below_threshold"] = int((near & (truth["jaccard"] < threshold)).sum())
    out["near"]["jaccard_median"] = float(np.median(truth["jaccard"][near])) if near.any() else None
    out["unplanted_removed"] = int((removed & (truth["kind"] != EXACT) & (truth["kind"] != NEAR)).sum())
    out["planted_near_below_threshold_removed"] = int((removed & near & (truth["jaccard"] < threshold)).sum())
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preprocess-gb", type=float, nargs="*", default=[0.1, 0.3], help="sizes to preprocess (GB of text)")
    p.add_argument("--clean-gb", type=float, nargs="*", default=[0.1, 0.3], help="sizes to clean")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--rounds", type=int, default=1, help="run every size this many times, alternating the order")
    p.add_argument("--part-mb", type=float, default=100, help="MB of text per corpus part (the size granularity)")
    p.add_argument("--exact-share", type=float, default=0.05)
    p.add_argument("--near-share", type=float, default=0.05)
    p.add_argument("--tokenizer", default=str(SHARED / "tokenizers" / "multilingual-bpe"))
    p.add_argument("--corpora", type=Path, default=SHARED / "corpora")
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "pretrain-scale")
    p.add_argument("--keep-corpus", action="store_true", help="keep the grown corpus for later runs")
    p.add_argument("--results", type=Path, help="append every measurement to this jsonl file")
    args = p.parse_args()
    largest = max([*args.preprocess_gb, *args.clean_gb])
    need = largest * 1.3e9 + max(args.preprocess_gb or [0]) * 1.0e9 + max(args.clean_gb or [0]) * 1.6e9
    free = shutil.disk_usage(args.workdir.parent if not args.workdir.exists() else args.workdir).free
    if free < need:
        raise SystemExit(f"{args.workdir}: {free / 1e9:.0f} GB free, these sizes need about {need / 1e9:.0f} GB "
                         "(corpus, tokenized output, cleaning's stage files and parts)")
    print(f"building or reusing a {largest:g} GB corpus in {args.workdir}", flush=True)
    parts = build(args.workdir / "corpus", largest, args.part_mb, args.corpora, args.exact_share, args.near_share)
    results: dict[tuple[str, float], list[dict]] = {}
    try:
        for round_ in range(args.rounds):
            order = 1 if round_ % 2 == 0 else -1
            for size in sorted(args.preprocess_gb)[::order]:
                paths, docs, text = prefix(parts, size)
                result = {"documents": docs, "bytes": text, **run_preprocess(paths, args.workdir, args.tokenizer,
                                                                             args.workers)}
                results.setdefault(("preprocess", size), []).append(result)
                report(args.results, "preprocess", size, round_, result)
            for size in sorted(args.clean_gb)[::order]:
                paths, docs, text = prefix(parts, size)
                cleaned = run_clean(paths, args.workdir, args.workers)
                duplicates = evaluate(paths, cleaned.pop("passed"), cleaned.pop("kept"), 0.8)
                result = {"documents": docs, "bytes": text, **cleaned, "duplicates": duplicates}
                results.setdefault(("clean", size), []).append(result)
                report(args.results, "clean", size, round_, result)
    finally:
        if not args.keep_corpus:
            shutil.rmtree(args.workdir / "corpus", ignore_errors=True)
    summarize(results, args.workers)


def report(path: Path | None, stage: str, size: float, round_: int, result: dict) -> None:
    line = {"stage": stage, "size_gb": size, "round": round_, **{k: v for k, v in result.items() if k != "report"}}
    seconds = result["seconds"] if stage == "preprocess" else result["filter"]["seconds"] + result["dedup"]["seconds"]
    print(f"  {stage} {size:g} GB (round {round_ + 1}): {seconds:,.1f} s", flush=True)
    if path:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(line) + "\n")


def summarize(results: dict, workers: int) -> None:
    def median(runs: list[dict], *keys: str) -> float:
        values = []
        for run in runs:
            value = run
            for key in keys:
                value = value[key]
            values.append(value)
        return statistics.median(values)

    print(f"\n{workers} workers; medians of {len(next(iter(results.values())))} round(s); x = against the smallest size "
          "of the same run")
    print(f"{'stage':<13} {'GB':>5} {'documents':>11} {'s/GB':>8} {'x':>6} {'MB/s':>6} {'peak PSS MiB':>13} {'x':>6} "
          f"{'anonymous':>10} {'peak RSS MiB':>13}")
    for stage, phases in (("preprocess", [()]), ("clean", [("filter",), ("dedup",)])):
        sizes = sorted(size for name, size in results if name == stage)
        for phase in phases:
            base = None
            for size in sizes:
                runs = results[(stage, size)]
                seconds, pss, anon, rss = (median(runs, *phase, key) for key in ("seconds", "pss", "anon", "rss"))
                per_gb = seconds / (runs[0]["bytes"] / 1e9)
                base = base or (per_gb, pss)
                label = f"{stage}:{phase[0]}" if phase else stage
                print(f"{label:<13} {size:>5g} {runs[0]['documents']:>11,} {per_gb:>8,.0f} {per_gb / base[0]:>6.2f} "
                      f"{runs[0]['bytes'] / 1e6 / seconds:>6.2f} {pss:>13,.0f} {pss / base[1]:>6.2f} {anon:>10,.0f} "
                      f"{rss:>13,.0f}")
    clean_sizes = sorted(size for name, size in results if name == "clean")
    if len(clean_sizes) >= 2:
        small, large = results[("clean", clean_sizes[0])], results[("clean", clean_sizes[-1])]
        entering = large[0]["duplicates"]["passed"] - small[0]["duplicates"]["passed"]
        for key, what in (("pss", "peak PSS"), ("anon", "its anonymous part (heap)")):
            grown = (median(large, "dedup", key) - median(small, "dedup", key)) * 2**20
            print(f"dedup stage: {what} grew {grown / 2**20:,.1f} MiB for {entering:,} more documents entering it: "
                  f"{grown / entering:,.0f} bytes per document, {grown / entering * 1e6 / 2**20:,.0f} MiB per million")
    for size in clean_sizes:
        d = results[("clean", size)][0]["duplicates"]
        removed = results[("clean", size)][0]["report"]["removed"]
        print(f"\nclean {size:g} GB: {d['documents']:,} documents, {d['passed']:,} passed the rules, dedup removed "
              f"{d['removed']:,} (report: exact {removed['exact']['documents']:,}, near {removed['near']['documents']:,})")
        for name in ("exact", "near"):
            x = d[name]
            print(f"  planted {name}: {x['planted']:,}; both copy and original passed the rules"
                  f"{' and Jaccard >= 0.8' if name == 'near' else ''}: {x['expected']:,}; removed: {x['found']:,} "
                  f"({x['found'] / max(x['expected'], 1):.2%})")
        print(f"  planted near copies below Jaccard 0.8: {d['near']['below_threshold']:,} (median Jaccard of all near "
              f"copies {d['near']['jaccard_median']:.3f}), of them removed: {d['planted_near_below_threshold_removed']:,}")
        print(f"  documents removed that were not planted copies: {d['unplanted_removed']:,}")


if __name__ == "__main__":
    main()
