"""Packed causal-LM samples: ``seq_len + 1`` tokens cut from the stream of shuffled documents.

Documents (each ending with the end-of-text token) are concatenated in a shuffled order, epoch
after epoch, and the stream is cut into samples every ``seq_len`` tokens; a sample reads one token
more so inputs and targets can be shifted. Three arrays describe it, built vectorized (numpy) in a
fraction of a second for a billion tokens:

    document_index  the document order, one permutation per epoch
    sample_index    per sample boundary: (position in document_index, token offset), S + 1 rows
    shuffle_index   the order samples are served in
"""

from __future__ import annotations

import math

import numpy as np
import torch

from pretrain.data.indexed import IndexedDataset


def epochs_needed(tokens_per_epoch: int, num_samples: int, seq_len: int) -> int:
    """Fewest epochs whose samples (those starting inside them) number at least ``num_samples``."""
    return max(1, math.ceil(num_samples * seq_len / tokens_per_epoch))


def build_gpt_indices(document_lengths: np.ndarray, first_document: int, epochs: int, seq_len: int,
                      seed: int) -> dict[str, np.ndarray]:
    """Index arrays for the samples that start in ``epochs`` passes over documents
    ``first_document + range(len(lengths))``.

    Each epoch's document order, and the order of the samples starting in it, depend only on
    (seed, epoch), so a longer run (more epochs) appends samples without reordering earlier ones.
    The documents of one more epoch follow, to complete the samples that cross the last boundary.
    """
    lengths = np.asarray(document_lengths, dtype=np.int64)
    tokens_per_epoch = int(lengths.sum())
    if tokens_per_epoch == 0:
        raise ValueError("the split holds no tokens")
    tail_epochs = math.ceil((seq_len + 1) / tokens_per_epoch)
    index_type = np.int32 if first_document + len(lengths) < 2**31 else np.int64
    order = np.concatenate([np.random.default_rng([seed, e]).permutation(len(lengths))
                            for e in range(epochs + tail_epochs)])
    starts_of_documents = np.concatenate([[0], np.cumsum(lengths[order])])
    served = math.ceil(epochs * tokens_per_epoch / seq_len)  # samples starting inside the first `epochs`
    positions = np.arange(served + 1, dtype=np.int64) * seq_len
    where = np.searchsorted(starts_of_documents, positions, side="right") - 1
    sample_index = np.stack([where, positions - starts_of_documents[where]], axis=1)
    # the samples that start in each epoch are shuffled among themselves
    bounds = np.minimum(-(-np.arange(epochs + 1) * tokens_per_epoch // seq_len), served)
    shuffle_index = np.concatenate([
        bounds[e] + np.random.default_rng([seed, e, 1]).permutation(bounds[e + 1] - bounds[e]) for e in range(epochs)])
    return {"document_index": order.astype(index_type) + index_type(first_document), "sample_index": sample_index,
            "shuffle_index": shuffle_index.astype(np.int64 if served >= 2**31 else np.int32)}


class GPTDataset(torch.utils.data.Dataset):
    """``dataset[i]`` -> {"tokens": int64 tensor of seq_len + 1}."""

    def __init__(self, indexed: IndexedDataset, indices: dict[str, np.ndarray], seq_len: int, num_samples: int) -> None:
        self.indexed = indexed
        self.document_index = indices["document_index"]
        self.sample_index = indices["sample_index"]
        self.shuffle_index = indices["shuffle_index"]
        self.seq_len = seq_len
        if num_samples > len(self.shuffle_index):
            raise ValueError(f"asked for {num_samples} samples but the index holds {len(self.shuffle_index)}")
        self.num_samples = num_samples

    def __len__(self) -> int:
        return self.num_samples

    def tokens(self, index: int) -> np.ndarray:
        sample = int(self.shuffle_index[index])
        first, offset = (int(v) for v in self.sample_index[sample])
        last, end_offset = (int(v) for v in self.sample_index[sample + 1])
        document = self.indexed.document
        if first == last:
            return np.asarray(document(int(self.document_index[first]))[offset : end_offset + 1], dtype=np.int64)
        pieces = [document(int(self.document_index[first]))[offset:]]
        pieces += [document(int(self.document_index[d])) for d in range(first + 1, last)]
        pieces.append(document(int(self.document_index[last]))[: end_offset + 1])
        return np.concatenate(pieces).astype(np.int64)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"tokens": torch.from_numpy(self.tokens(index))}


def documents_end_with(indexed: IndexedDataset, documents: range, token: int, probes: int = 256) -> bool:
    """Do (a sample of) these documents end with ``token``? Packing needs a separator between them."""
    if len(documents) == 0:
        return True
    picks = np.linspace(documents.start, documents.stop - 1, num=min(probes, len(documents))).astype(np.int64)
    for k in picks:
        doc = indexed.document(int(k))
        if len(doc) and int(doc[-1]) != token:
            return False
    return True
