#!/usr/bin/env python
"""Throughput and memory of the cleaning step, beside tokenizing the same corpus in the same run.

    python benchmarks/clean.py --size-mb 2000 --workers 2

The corpus is made from the real ko/de documents in ../shared/corpora, repeated and edited until it
holds --size-mb MB of text: each pass after the first writes a tenth of the documents unchanged
(exact duplicates), a tenth with a few words replaced (near duplicates) and the rest as new
documents spliced from the paragraphs of two others (distinct), so every rule and both dedup stages
have real work. It times, with the peak memory of the whole process tree (PSS, sampled every 0.5 s):
  tokenize  tools/preprocess_data.py on the corpus (the baseline: the goal is cleaning within 2x);
  clean     tools/clean_corpus.py on the corpus (rules, exact and near dedup, zstd parts, report);
  clean/4   the same on the corpus's first quarter: memory apart from the dedup index stays flat,
            so the peak grows only by the index (bytes per document stated in dedup.py).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]
from preprocess import ROOT, SHARED, measure  # noqa: E402 - the sibling benchmark's process-tree sampler


def real_documents(corpora: Path) -> list[str]:
    import zstandard

    docs = []
    for file in sorted(corpora.glob("*.jsonl.zst")):
        with zstandard.open(file, "rt", encoding="utf-8") as handle:
            docs += [json.loads(line)["text"] for line in handle]
    return docs


def edited(text: str, rng: random.Random) -> str:
    """A near copy: about one word in 25 replaced by a neighbour, as a re-crawled page differs."""
    words = text.split(" ")
    for _ in range(max(1, len(words) // 25)):
        i = rng.randrange(len(words))
        words[i] = words[(i + 1) % len(words)]
    return " ".join(words)


def spliced(a: str, b: str, rng: random.Random) -> str:
    """A distinct document: the paragraphs (or lines) of two documents, interleaved."""
    parts = a.split("\n") + b.split("\n")
    rng.shuffle(parts)
    return "\n".join(parts)


def build_corpus(size_mb: float, corpora: Path, out: Path) -> tuple[Path, int, int]:
    """(path, documents, MB of text x 1e6) of a jsonl of about ``size_mb`` MB, built once and reused."""
    path = out / f"clean-corpus-{size_mb:g}MB.jsonl"
    meta = path.with_suffix(".meta")
    if path.exists() and meta.exists():
        documents, text_bytes = map(int, meta.read_text().split())
        return path, documents, text_bytes
    docs = real_documents(corpora)
    rng = random.Random(0)
    target, text_bytes, documents = int(size_mb * 1e6), 0, 0
    temp = path.with_suffix(".tmp")
    with open(temp, "w", encoding="utf-8") as handle:
        for repeat in range(1 << 30):
            for doc in docs:
                roll = rng.random()
                if repeat and roll >= 0.2:
                    doc = spliced(doc, docs[rng.randrange(len(docs))], rng)
                elif repeat and roll >= 0.1:
                    doc = edited(doc, rng)
                handle.write(json.dumps({"text": doc}, ensure_ascii=False) + "\n")
                documents += 1
                text_bytes += len(doc.encode("utf-8"))
                if text_bytes >= target:
                    break
            if text_bytes >= target:
                break
    temp.rename(path)
    meta.write_text(f"{documents} {text_bytes}")
    return path, documents, text_bytes


def head(path: Path, share: float) -> tuple[Path, int, int]:
    """The first ``share`` of the corpus's lines, as its own file."""
    documents, text_bytes = map(int, path.with_suffix(".meta").read_text().split())
    small = path.with_name(f"{path.stem}-head{share:g}.jsonl")
    keep, kept_bytes = int(documents * share), 0
    with open(path, encoding="utf-8") as src, open(small, "w", encoding="utf-8") as dst:
        for _, line in zip(range(keep), src):
            dst.write(line)
            kept_bytes += len(json.loads(line)["text"].encode("utf-8"))
    return small, keep, kept_bytes


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size-mb", type=float, default=2000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--tokenizer", default=str(SHARED / "tokenizers" / "multilingual-bpe"))
    p.add_argument("--corpora", type=Path, default=SHARED / "corpora")
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "pretrain-bench")
    p.add_argument("--share", type=float, default=0.25, help="the smaller run's share of the corpus")
    args = p.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    corpus, documents, text_bytes = build_corpus(args.size_mb, args.corpora, args.workdir)
    small, small_documents, small_bytes = head(corpus, args.share)
    print(f"corpus: {corpus} ({documents:,} documents, {text_bytes / 1e6:,.0f} MB of text); "
          f"{args.workers} workers", flush=True)
    tool = str(ROOT / "tools")
    out = args.workdir / "clean-out"
    runs = {
        "tokenize": ([sys.executable, f"{tool}/preprocess_data.py", "--input", str(corpus), "--tokenizer",
                      args.tokenizer, "--output-prefix", str(args.workdir / "clean-tokenized"), "--workers",
                      str(args.workers), "--no-progress", "--overwrite"], documents, text_bytes),
        "clean": ([sys.executable, f"{tool}/clean_corpus.py", "--input", str(corpus), "--output", str(out),
                   "--workers", str(args.workers), "--no-progress", "--overwrite"], documents, text_bytes),
        f"clean/{1 / args.share:g}": ([sys.executable, f"{tool}/clean_corpus.py", "--input", str(small), "--output",
                                       str(out), "--workers", str(args.workers), "--no-progress", "--overwrite"],
                                      small_documents, small_bytes),
    }
    results = {}
    for name, (cmd, docs, size) in runs.items():
        seconds, pss, rss = measure(cmd)
        results[name] = (seconds, pss, rss, docs, size)
        print(f"  {name}: {seconds:,.1f} s", flush=True)
    report = json.loads((out / "report.json").read_text())  # the small run's; the full run's was replaced
    shutil.rmtree(out, ignore_errors=True)
    print(f"\n{'run':<9} {'documents/s':>12} {'MB/s':>7} {'seconds':>8} {'peak PSS MiB':>12} {'peak RSS MiB':>12}")
    for name, (seconds, pss, rss, docs, size) in results.items():
        print(f"{name:<9} {docs / seconds:>12,.0f} {size / 1e6 / seconds:>7.2f} {seconds:>8.1f} {pss:>12.0f} "
              f"{rss:>12.0f}")
    clean_s, tokenize_s = results["clean"][0], results["tokenize"][0]
    print(f"\ncleaning takes {clean_s / tokenize_s:.2f}x the time of tokenizing the same corpus (goal: at most 2x)")
    from pretrain.corpus.cleaning.dedup import NearDupSettings

    bands = NearDupSettings().bands[0]
    small_name = f"clean/{1 / args.share:g}"
    grown = (results["clean"][1] - results[small_name][1]) * 2**20 / max(documents - small_documents, 1)
    print(f"peak PSS grows by {grown:,.0f} bytes per added document ({grown:,.0f} MB per million): the dedup index "
          f"(stated: 8 + 8 x bands = {8 + 8 * bands} bytes in memory per document)")
    print(f"kept {report['kept']['documents']:,} of {report['input']['documents']:,} documents of the smaller run; "
          + ", ".join(f"{rule} {r['documents']:,}" for rule, r in report["removed"].items() if r["documents"]))


if __name__ == "__main__":
    main()
