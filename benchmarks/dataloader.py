#!/usr/bin/env python
"""Sample fetching rate, beside the rate at which a GPT-2 small on one GPU consumes samples.

    python benchmarks/dataloader.py --gpu-tokens-per-s 320000

Builds random-token datasets (EOD-separated documents for CLM; documents of sentences for MLM),
then times, on one process: GPTDataset[i] at seq 1024 and MLMDataset[i] (pairs + whole-word
masking) at seq 512, in the shuffled serving order, and a DataLoader producing collated batches of
16. The baseline is the consumer: --gpu-tokens-per-s is a GPT-2 small's training throughput on one
GPU (from benchmarks/train_throughput.py on that GPU); the ratio says how much faster samples are
produced than one GPU eats them. The data loader must never be the bottleneck.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from pretrain.data.gpt_dataset import GPTDataset, build_gpt_indices, epochs_needed
from pretrain.data.indexed import IndexedDataset, IndexedDatasetWriter
from pretrain.data.masking import MaskingSpec
from pretrain.data.mlm_dataset import MLMDataset, build_mlm_indices


def rate(function, count: int) -> float:
    started = time.perf_counter()
    for i in range(count):
        function(i)
    return count / (time.perf_counter() - started)


def synthetic(folder: Path, tokens: int, sentences: bool) -> IndexedDataset:
    rng = np.random.default_rng(0)
    prefix = folder / ("sentences" if sentences else "documents")
    with IndexedDatasetWriter(prefix, np.uint16) as writer:
        written = 0
        while written < tokens:
            if sentences:
                doc = [rng.integers(10, 50000, int(rng.integers(5, 60))) for _ in range(int(rng.integers(1, 40)))]
            else:
                doc = [np.append(rng.integers(10, 50000, int(rng.integers(50, 3000))), 0)]
            writer.add_document(doc)
            written += sum(len(s) for s in doc)
        writer.finalize()
    return IndexedDataset(prefix)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=float, default=5e7, help="tokens per synthetic dataset")
    parser.add_argument("--samples", type=int, default=20000)
    parser.add_argument("--gpu-tokens-per-s", type=float, default=None,
                        help="GPT-2 small training tokens/s on one GPU; default: 50%% MFU on an H100")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="loader-"))
    if args.gpu_tokens_per_s is None:  # 6N + attention FLOPs per token of GPT-2 small at seq 1024, 50% of 989 TFLOP/s
        flops_per_token = 72 * 12 * 768**2 + 12 * 12 * 1024 * 768 + 6 * 768 * 50304
        args.gpu_tokens_per_s = 0.5 * 989e12 / flops_per_token
    consumed = args.gpu_tokens_per_s / 1024

    docs = synthetic(folder, int(args.tokens), sentences=False)
    lengths = docs.document_lengths()
    indices = build_gpt_indices(lengths, 0, epochs_needed(int(lengths.sum()), args.samples, 1024), 1024, seed=1)
    gpt = GPTDataset(docs, indices, 1024, args.samples)
    gpt_rate = rate(lambda i: gpt[i], args.samples)

    sentences = synthetic(folder, int(args.tokens), sentences=True)
    mlm_indices = build_mlm_indices(sentences, range(sentences.num_documents), args.samples, 512, 0.1, seed=1)
    starts = np.random.default_rng(2).random(50261) < 0.6
    spec = MaskingSpec(4, 0.15, True, starts, np.arange(5, 50261))
    mlm = MLMDataset(sentences, mlm_indices, 512, {"cls": 1, "sep": 2, "pad": 3}, spec, True, 1, args.samples)
    mlm_rate = rate(lambda i: mlm[i], args.samples // 4)

    loader = torch.utils.data.DataLoader(gpt, batch_size=16, num_workers=2)
    started, batches = time.perf_counter(), 0
    for _ in loader:
        batches += 1
    loader_rate = batches * 16 / (time.perf_counter() - started)

    print(f"consumer: GPT-2 small on one GPU at {args.gpu_tokens_per_s:,.0f} tokens/s = {consumed:,.0f} samples/s of 1024")
    print(f"{'source':<44} {'samples/s':>10} {'x consumer':>11}")
    for name, value in (("GPTDataset[i], seq 1024, 1 process", gpt_rate),
                        ("MLMDataset[i] (pairs + WWM), seq 512, 1 process", mlm_rate),
                        ("DataLoader, batch 16, 2 workers, seq 1024", loader_rate)):
        print(f"{name:<44} {value:>10,.0f} {value / consumed:>10.0f}x")


if __name__ == "__main__":
    main()
