#!/usr/bin/env python
"""How full real BERT samples are: the length (tokens before padding) of MLM samples this project builds
from real articles, written to benchmarks/mlm_lengths.json for the GPU benchmark's BERT batches.

Synthetic full-length BERT batches carry no padding mask and run on SDPA's flash kernel; real ones are
nearly always padded (a sample ends at a sentence boundary) and carry a mask. The speed benchmark draws
its BERT sample lengths from this file, so its figures are those of real padded batches.

    python benchmarks/mlm_lengths.py            # the Namuwiki sample in ../shared, the shared BPE, seq 512
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared"


def sample_lengths(prefix: Path, tokenizer: str, seq_len: int, samples: int) -> list[int]:
    from pretrain.config import DataConfig
    from pretrain.data.builder import SplitSizes, build_datasets
    from pretrain.model.families import get_family
    from pretrain.tokenization import load_tokenizer

    data = DataConfig(tokenizer=tokenizer, prefixes=[str(prefix)], seq_len=seq_len, split="100,0,0", mask_prob=0.15)
    tokenizer = load_tokenizer(tokenizer, get_family("bert").tokenizer_roles)  # as a BERT run loads it
    train = build_datasets(data, tokenizer, "mlm", 1234, SplitSizes(samples, 0, 0), may_build_index=True)["train"]
    return [int(train[i]["attention_mask"].sum()) for i in range(min(samples, len(train)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", default=str(SHARED / "corpora" / "samples" / "namuwiki-sample.json"))
    parser.add_argument("--tokenizer", default=str(SHARED / "tokenizers" / "multilingual-bpe"))
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--samples", type=int, default=4000)
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "mlm_lengths.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        subprocess.run([sys.executable, str(ROOT / "tools" / "preprocess_data.py"), "--input", args.input,
                        "--tokenizer", args.tokenizer, "--output-prefix", f"{folder}/d", "--split-sentences",
                        "--workers", "2", "--no-progress"], check=True, capture_output=True)
        lengths = sample_lengths(Path(folder) / "d_text_sentence", args.tokenizer, args.seq_len, args.samples)
    counts = Counter(lengths)
    full = sum(c for length, c in counts.items() if length == args.seq_len) / len(lengths)
    record = {"source": Path(args.input).name, "tokenizer": Path(args.tokenizer).name, "seq_len": args.seq_len,
              "samples": len(lengths), "mean_fill": sum(lengths) / len(lengths) / args.seq_len,
              "share_full_length": full, "lengths": {str(k): counts[k] for k in sorted(counts)}}
    Path(args.output).write_text(json.dumps(record, indent=1) + "\n")
    print(f"{len(lengths)} samples of at most {args.seq_len} tokens from {record['source']}: mean fill "
          f"{100 * record['mean_fill']:.1f}%, {100 * full:.1f}% full length (no padding) -> {args.output}")


if __name__ == "__main__":
    main()
