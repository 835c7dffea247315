#!/usr/bin/env python
"""Morpheme-aware BPE against plain BPE: what it buys (quality) and what it costs (time, memory).

    python benchmarks/tokenizers_morphemes.py quality [--vocab-size 32000] [--reference NAME=FOLDER ...]
    python benchmarks/tokenizers_morphemes.py cost --size-mb 1024 [--workers 2]

quality: trains byte-level BPE with and without ``--morphemes ko`` at the same size on the shared
Korean and German text (all but every 10th document of each file), then measures both on the held-out
documents with ``pretrain.tokenization.report`` (the numbers pretrain-tokenizer-report prints): tokens
per eojeol / word, the share of Korean tokens that span a morpheme boundary and of the pieces used that
ever do, beside the reference tokenizers given (default: the shared multilingual BPE; kogpt2-base-v2 or
german-gpt2 folders when you have them).

cost: grows the shared Korean text to --size-mb MB (repeated, a tenth of each pass with words replaced,
the rest spliced from two documents, as benchmarks/clean.py does) and runs
``tools/train_tokenizer.py --type bpe --max-mb SIZE`` on all of it with and without ``--morphemes ko``,
alternating the order per round; wall time, CPU time of all its processes (what the work costs whatever
else shares the machine), the peak memory of the whole process tree (PSS and RSS, sampled every 0.5 s),
and the same at a quarter of the size to show how memory grows.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]
from clean import edited, spliced  # noqa: E402 - the cleaning benchmark's corpus growth
from preprocess import ROOT, SHARED, measure  # noqa: E402 - the process-tree sampler

CORPORA = SHARED / "corpora"


def documents(pattern: str) -> list[tuple[str, str]]:
    import zstandard

    docs = []
    for file in sorted(CORPORA.glob(pattern)):
        with zstandard.open(file, "rt", encoding="utf-8") as handle:
            docs += [(file.name, json.loads(line)["text"]) for line in handle]
    return docs


def quality(args: argparse.Namespace) -> None:
    from pretrain.tokenization import load_tokenizer
    from pretrain.tokenization.report import measure as measure_text
    from pretrain.tokenization.training import TokenizerTrainingOptions, train_tokenizer

    docs = documents("ko.*.jsonl.zst") + documents("de.*.jsonl.zst")
    train = [text for index, (_, text) in enumerate(docs) if index % 10]
    held = [text for index, (_, text) in enumerate(docs) if index % 10 == 0]
    work = Path(tempfile.mkdtemp(prefix="tok-bench-"))
    try:
        with open(work / "train.jsonl", "w", encoding="utf-8") as handle:
            for text in train:
                handle.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
        tokenizers, seconds = {}, {}
        for name, morphemes in (("plain BPE", None), ("morpheme BPE", "ko")):
            started = time.perf_counter()
            folder = work / name.replace(" ", "-")
            train_tokenizer(TokenizerTrainingOptions(kind="bpe", inputs=[str(work / "train.jsonl")], output=str(folder),
                                                     vocab_size=args.vocab_size, max_bytes=1 << 40, morphemes=morphemes,
                                                     workers=args.workers))
            seconds[name] = time.perf_counter() - started
            tokenizers[name] = load_tokenizer(folder)
        for spec in args.reference:
            name, _, path = spec.partition("=")
            tokenizers[name] = load_tokenizer(path)
        results = measure_text(tokenizers, held, morphemes=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"trained on {len(train):,} documents ({sum(len(t.encode()) for t in train) / 1e6:.1f} MB), measured on "
          f"{len(held):,} held-out documents; training took "
          + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items()))
    print("| tokenizer | vocabulary | ko tokens / eojeol | ko chars / token | ko tokens across a morpheme boundary | "
          "ko pieces ever across one | ko words in 3+ pieces | de tokens / word | de words in 3+ pieces | "
          "round trip (ko, de) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, result in results.items():
        ko, de = result["ko"], result["de"]
        print(f"| {name} | {ko['vocab_size']:,} | {ko['tokens_per_word']:.3f} | {ko['chars_per_token']:.2f} | "
              f"{ko['tokens_crossing_morphemes']:.2%} | {ko['pieces_crossing_morphemes']:.2%} | "
              f"{ko['words_3plus_pieces']:.1%} | {de['tokens_per_word']:.3f} | {de['words_3plus_pieces']:.1%} | "
              f"{ko['round_trip_exact']:.0%}, {de['round_trip_exact']:.0%} |")
    print(json.dumps(results))


def korean_corpus(size_mb: float, out: Path) -> Path:
    """A jsonl of about ``size_mb`` MB grown from the shared Korean documents, built once and reused."""
    path = out / f"ko-corpus-{size_mb:g}MB.jsonl"
    if path.exists():
        return path
    docs = [text for _, text in documents("ko.*.jsonl.zst")]
    rng = random.Random(0)
    target, written = int(size_mb * 1e6), 0
    temp = path.with_suffix(".tmp")
    with open(temp, "w", encoding="utf-8") as handle:
        while written < target:
            for doc in docs:
                if written and rng.random() >= 0.1:
                    doc = spliced(doc, docs[rng.randrange(len(docs))], rng)
                elif written:
                    doc = edited(doc, rng)
                handle.write(json.dumps({"text": doc}, ensure_ascii=False) + "\n")
                written += len(doc.encode("utf-8"))
                if written >= target:
                    break
    temp.rename(path)
    return path


def cost(args: argparse.Namespace) -> None:
    out = Path(args.work)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for size in (args.size_mb,) if args.no_quarter else (args.size_mb / 4, args.size_mb):
        corpus = korean_corpus(size, out)
        for round_index in range(args.rounds):
            order = [None, "ko"] if round_index % 2 == 0 else ["ko", None]
            for morphemes in order:
                target = out / f"tok-{size:g}-{morphemes}"
                cmd = [sys.executable, str(ROOT / "tools" / "train_tokenizer.py"), "--type", "bpe", "--input", str(corpus),
                       "--output", str(target), "--vocab-size", str(args.vocab_size), "--max-mb", str(size * 2),
                       "--overwrite"]
                if morphemes:
                    cmd += ["--morphemes", "ko", "--workers", str(args.workers)]
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                seconds, pss, rss = measure(cmd)
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime  # the whole tree, reaped
                rows.append({"size_mb": size, "morphemes": morphemes, "seconds": seconds, "cpu_seconds": cpu,
                             "peak_pss_mib": pss, "peak_rss_mib": rss})
                print(f"{size:g} MB {'morpheme' if morphemes else 'plain':8} BPE: {seconds:7.1f} s, CPU {cpu:7.1f} s, "
                      f"peak PSS {pss:,.0f} MiB, RSS {rss:,.0f} MiB", flush=True)
                shutil.rmtree(target, ignore_errors=True)
    print("| Korean text | tokenizer | wall time | CPU time (all processes) | peak PSS of the process tree | peak RSS |")
    print("|---:|---|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['size_mb']:g} MB | {'morpheme-aware' if row['morphemes'] else 'plain'} BPE | "
              f"{row['seconds']:.0f} s | {row['cpu_seconds']:.0f} s | {row['peak_pss_mib']:,.0f} MiB | "
              f"{row['peak_rss_mib']:,.0f} MiB |")
    print(json.dumps(rows))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    q = sub.add_parser("quality")
    q.add_argument("--vocab-size", type=int, default=32000)
    q.add_argument("--reference", nargs="*", default=[f"multilingual BPE={SHARED / 'tokenizers' / 'multilingual-bpe'}"],
                   metavar="NAME=FOLDER")
    q.add_argument("--workers", type=int, default=2)
    c = sub.add_parser("cost")
    c.add_argument("--size-mb", type=float, default=1024)
    c.add_argument("--vocab-size", type=int, default=32000)
    c.add_argument("--workers", type=int, default=2)
    c.add_argument("--rounds", type=int, default=1)
    c.add_argument("--no-quarter", action="store_true", help="only --size-mb (no run at a quarter of it)")
    c.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "tokenizer-bench"))
    args = p.parse_args()
    quality(args) if args.command == "quality" else cost(args)


if __name__ == "__main__":
    main()
