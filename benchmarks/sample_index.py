#!/usr/bin/env python
"""GPT sample-index build time, beside megatron-core's C++ builder in the same run.

    python benchmarks/sample_index.py --documents 2000000 --tokens 1.2e9 --seq-len 1024

Document lengths are drawn so that the corpus has --tokens tokens in --documents documents (one
epoch). Two scopes are timed, best of --repeats:
  sample index  only the (document, offset) boundaries of every sample, given a document order:
                megatron-core's helpers_cpp.build_sample_idx vs this project's vectorized numpy;
  all indices   document order + sample index + shuffle, as each project builds them for a run
                (megatron-core's GPTDataset code path vs pretrain.data.gpt_dataset.build_gpt_indices).
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

from pretrain.data.gpt_dataset import build_gpt_indices, sample_boundaries, samples_per_epoch


def best_of(repeats: int, function) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return min(times)


def ours_sample_index(lengths: np.ndarray, order: np.ndarray, seq_len: int) -> np.ndarray:
    """This project's sample-index step on its own, for one epoch in a given order."""
    rows = samples_per_epoch(int(lengths.sum()), seq_len) + 1
    out = np.empty((rows, 2), dtype=np.int32)
    sample_boundaries(lengths[order].astype(np.int64), seq_len, rows, out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--documents", type=int, default=2_000_000)
    parser.add_argument("--tokens", type=float, default=1.2e9)
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from megatron.core.datasets import helpers
        from megatron.core.datasets.gpt_dataset import _build_document_index, _build_shuffle_index


    rng = np.random.default_rng(0)
    mean = args.tokens / args.documents
    lengths = np.maximum(1, rng.exponential(mean, args.documents)).astype(np.int32)
    tokens = int(lengths.sum())
    order = rng.permutation(args.documents).astype(np.int32)
    print(f"{args.documents:,} documents, {tokens:,} tokens, seq_len {args.seq_len}: "
          f"{tokens // args.seq_len:,} samples; best of {args.repeats}")

    megatron_sample = best_of(args.repeats, lambda: helpers.build_sample_idx(
        lengths, order, args.seq_len, 1, tokens, True, True))
    ours_sample = best_of(args.repeats, lambda: ours_sample_index(lengths, order, args.seq_len))

    def megatron_all():
        state = np.random.RandomState(1234)
        document_index = _build_document_index(np.arange(args.documents, dtype=np.int32), 1, state, False)
        sample_index = helpers.build_sample_idx(lengths, document_index, args.seq_len, 1, tokens, True, True)
        _build_shuffle_index(sample_index.shape[0] - 1, sample_index.shape[0] - 1, state)

    megatron_full = best_of(args.repeats, megatron_all)
    ours_full = best_of(args.repeats, lambda: build_gpt_indices(lengths, 0, 1, args.seq_len, seed=1234))
    print(f"{'scope':<14} {'megatron-core C++':>18} {'pretrain (numpy)':>17} {'speed-up':>9}")
    print(f"{'sample index':<14} {megatron_sample:>17.3f}s {ours_sample:>16.3f}s {megatron_sample / ours_sample:>8.2f}x")
    print(f"{'all indices':<14} {megatron_full:>17.3f}s {ours_full:>16.3f}s {megatron_full / ours_full:>8.2f}x")


if __name__ == "__main__":
    main()
