"""Describe an indexed dataset: counts, document length statistics and a length histogram."""

from __future__ import annotations

import numpy as np

from pretrain.data.indexed import IndexedDataset
from pretrain.data.provenance import tokenizer_record


def describe(dataset: IndexedDataset, bins: int = 12) -> list[str]:
    lengths = dataset.document_lengths()
    lines = [
        f"{dataset.prefix}: {dataset.num_documents:,} documents, {dataset.num_sequences:,} sequences, "
        f"{dataset.num_tokens:,} tokens ({dataset.dtype})",
    ]
    record = tokenizer_record(dataset)
    lines.append(f"tokenizer: {record.source} ({record.vocab_size:,} tokens, vocabulary sha256 {record.vocabulary[:12]})"
                 if record else "tokenizer: not recorded (made by another tool or an older version)")
    if len(lengths) == 0:
        return lines
    lines.append(
        f"tokens per document: min {lengths.min():,}, median {int(np.median(lengths)):,}, "
        f"mean {lengths.mean():,.1f}, max {lengths.max():,}"
    )
    if dataset.num_sequences != dataset.num_documents:
        per_doc = np.diff(dataset.document_indices)
        lines.append(f"sequences per document: mean {per_doc.mean():.1f}, max {per_doc.max():,}")
    lines.append("document length histogram (tokens):")
    lines += histogram(lengths, bins)
    return lines


def histogram(lengths: np.ndarray, bins: int) -> list[str]:
    """Log2-spaced buckets, so short and very long documents both show."""
    top = max(int(lengths.max()), 1)
    edges = np.unique(np.concatenate([[0], 2 ** np.arange(int(np.log2(top)) + 2)]))
    if len(edges) > bins + 1:
        edges = np.unique(np.concatenate([edges[:1], edges[-bins:]]))
    counts, _ = np.histogram(lengths, bins=edges)
    widest = max(counts.max(), 1)
    return [f"  [{lo:>9,}, {hi:>9,}) {count:>10,} {'#' * int(40 * count / widest)}"
            for lo, hi, count in zip(edges[:-1], edges[1:], counts)]
