#!/usr/bin/env python
"""Sample fetching rate, beside the rate at which a training step consumes samples, both measured here.

    python benchmarks/dataloader.py                      # on this machine's device (a GPU if there is one)
    python benchmarks/dataloader.py --consumer-steps 5   # more timed training steps (CPU default: 2)

Builds random-token datasets (EOD-separated documents for CLM; documents of sentences for MLM), then
times, in one process: GPTDataset[i] at seq 1024 and MLMDataset[i] (pairs + whole-word masking) at seq
512, in the shuffled serving order, each sample's ids checked against the vocabulary as in a run (and
GPTDataset once more without, for the check's cost); and a DataLoader producing collated batches of 16 with
2 workers.

The baseline is the consumer, measured in the same run on this machine's device: this project's model
(``build_model``: GPT-2 small for the CLM rows, BERT-base for the MLM row) taking training steps
(forward, backward, AdamW; bf16 autocast and the fused LM head on a GPU, fp32 on a CPU) on collated
batches of the same datasets, after --consumer-warmup steps. The ratio says how much faster samples are
produced than that device trains on them: the data loader must never be the bottleneck.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from pretrain.data.collate import collate
from pretrain.data.gpt_dataset import GPTDataset, build_gpt_indices, epochs_needed
from pretrain.data.indexed import IndexedDataset, IndexedDatasetWriter
from pretrain.data.masking import MaskingSpec
from pretrain.data.mlm_dataset import MLMDataset, build_mlm_indices
from pretrain.data.vocabulary import VocabularyBound

VOCAB = 50261
SPECIALS = {"cls": 1, "sep": 2, "pad": 3, "mask": 4, "eod": 0}


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


def consumer_rate(preset: str, dataset, micro_batch: int, warmup: int, steps: int, device: torch.device) -> float:
    """Samples per second that training steps of ``preset`` on ``device`` take from ``dataset``."""
    from pretrain.config.schema import ModelConfig
    from pretrain.model.build import build_model

    on_gpu = device.type == "cuda"
    model = build_model(ModelConfig(preset=preset, compile=False), VOCAB, SPECIALS, sentence_order=True, seed=0,
                        ds_config=None, on_gpu=on_gpu).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=on_gpu)
    batches = [collate([dataset[micro_batch * b + i] for i in range(micro_batch)]) for b in range(warmup + steps)]
    started = 0.0
    for index, batch in enumerate(batches):
        if index == warmup:
            if on_gpu:
                torch.cuda.synchronize()
            started = time.perf_counter()
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items() if k != "num_labels"}
        with torch.autocast(device.type, torch.bfloat16, enabled=on_gpu):
            loss, _ = model(batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if on_gpu:
        torch.cuda.synchronize()
    return steps * micro_batch / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=float, default=5e7, help="tokens per synthetic dataset")
    parser.add_argument("--samples", type=int, default=20000)
    parser.add_argument("--consumer-micro-batch", type=int, help="default: 8 on a GPU, 1 on a CPU")
    parser.add_argument("--consumer-warmup", type=int, help="training steps before the clock starts (GPU 3, CPU 1)")
    parser.add_argument("--consumer-steps", type=int, help="timed training steps per model (GPU 10, CPU 2)")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    on_gpu = device.type == "cuda"
    micro = args.consumer_micro_batch or (8 if on_gpu else 1)
    args.consumer_warmup = args.consumer_warmup if args.consumer_warmup is not None else (3 if on_gpu else 1)
    args.consumer_steps = args.consumer_steps or (10 if on_gpu else 2)
    folder = Path(tempfile.mkdtemp(prefix="loader-"))

    docs = synthetic(folder, int(args.tokens), sentences=False)
    lengths = docs.document_lengths()
    indices = build_gpt_indices(lengths, 0, epochs_needed(int(lengths.sum()), args.samples, 1024), 1024, seed=1)
    bound = VocabularyBound(VOCAB, "random tokens")  # each sample's ids checked, as the trainer's datasets do
    gpt = GPTDataset(docs, indices, 1024, args.samples, vocabulary=bound)
    gpt_rate = rate(lambda i: gpt[i], args.samples)
    unchecked = GPTDataset(docs, indices, 1024, args.samples)  # what the id check costs, measured beside it
    unchecked_rate = rate(lambda i: unchecked[i], args.samples)

    sentences = synthetic(folder, int(args.tokens), sentences=True)
    mlm_indices = build_mlm_indices(sentences, range(sentences.num_documents), args.samples, 512, 0.1, seed=1)
    starts = np.random.default_rng(2).random(VOCAB) < 0.6
    spec = MaskingSpec(SPECIALS["mask"], 0.15, True, starts, np.arange(5, VOCAB))
    mlm = MLMDataset(sentences, mlm_indices, 512, SPECIALS, spec, True, 1, args.samples, bound)
    mlm_rate = rate(lambda i: mlm[i], args.samples // 4)

    loader = torch.utils.data.DataLoader(gpt, batch_size=16, num_workers=2, collate_fn=collate)
    started, batches = time.perf_counter(), 0
    for _ in loader:
        batches += 1
    loader_rate = batches * 16 / (time.perf_counter() - started)

    steps = (args.consumer_warmup, args.consumer_steps)
    gpt_consumer = consumer_rate("gpt2-small", gpt, micro, *steps, device)
    bert_consumer = consumer_rate("bert-base", mlm, micro, *steps, device)
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"consumers, measured on {name}, micro batch {micro}, {args.consumer_steps} steps after "
          f"{args.consumer_warmup}: GPT-2 small (seq 1024) {gpt_consumer:,.3g} samples/s, BERT-base (seq 512) "
          f"{bert_consumer:,.3g} samples/s")
    print(f"{'source':<44} {'samples/s':>10} {'consumer':>18} {'x consumer':>11}")
    for label, value, consumer, who in (
            ("GPTDataset[i], seq 1024, 1 process", gpt_rate, gpt_consumer, "GPT-2 small"),
            ("  the same without the id check", unchecked_rate, gpt_consumer, "GPT-2 small"),
            ("MLMDataset[i] (pairs + WWM), seq 512, 1 process", mlm_rate, bert_consumer, "BERT-base"),
            ("DataLoader, batch 16, 2 workers, seq 1024", loader_rate, gpt_consumer, "GPT-2 small")):
        print(f"{label:<44} {value:>10,.0f} {who:>18} {value / consumer:>10,.0f}x")


if __name__ == "__main__":
    main()
