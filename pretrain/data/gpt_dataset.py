"""Packed causal-LM samples: ``seq_len + 1`` tokens cut from the stream of shuffled documents.

Documents (each ending with the end-of-text token) are concatenated in a shuffled order, epoch
after epoch, and the stream is cut into samples every ``seq_len`` tokens; a sample reads one token
more so inputs and targets can be shifted. Three arrays describe it, built vectorized (numpy) in a
fraction of a second for a billion tokens:

    document_index  the document order, one permutation per epoch
    sample_index    per sample boundary: (position in document_index, token offset), S + 1 rows
    shuffle_index   the order samples are served in

With document masking (``data.document_mask``) a sample also carries ``position_ids``: each input
token's position within its document, 0 at a sample's first token and after every end-of-document
token. The model keeps attention within documents from them; they are computed here, on the host,
where the tokens already are, so the device never has to find the boundaries.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from pretrain.data.indexed import IndexedDataset
from pretrain.data.vocabulary import VocabularyBound


def samples_per_epoch(tokens_per_epoch: int, seq_len: int) -> int:
    """Samples cut from one pass: seq_len + 1 tokens each, overlapping by one; the last partial
    sample of every epoch is dropped (fewer than seq_len tokens), so epochs are independent."""
    return max(0, (tokens_per_epoch - 1) // seq_len)


def epochs_needed(tokens_per_epoch: int, num_samples: int, seq_len: int) -> int:
    per_epoch = samples_per_epoch(tokens_per_epoch, seq_len)
    if per_epoch == 0:
        raise ValueError(f"the split holds {tokens_per_epoch} tokens, fewer than one sample of seq_len + 1 = "
                         f"{seq_len + 1}: lower data.seq_len or use more data")
    return max(1, math.ceil(num_samples / per_epoch))


def sample_boundaries(lengths_in_order: np.ndarray, seq_len: int, rows: int, out: np.ndarray, offset: int = 0) -> None:
    """Fill ``out`` (rows x 2) with (document position, token offset) of the sample boundaries at
    0, seq_len, 2 seq_len, ... of one epoch's stream: a ``np.repeat`` over documents, linear time."""
    starts = np.cumsum(lengths_in_order)
    starts -= lengths_in_order
    first_row = np.minimum(-(-starts // seq_len), rows)  # first boundary at or after each document's start
    where = np.repeat(np.arange(len(starts), dtype=out.dtype), np.diff(first_row, append=rows))
    out[:, 0] = where + out.dtype.type(offset)
    out[:, 1] = np.arange(0, rows * seq_len, seq_len, dtype=np.int64) - starts[where]


def build_gpt_indices(document_lengths: np.ndarray, first_document: int, epochs: int, seq_len: int,
                      seed: int) -> dict[str, np.ndarray]:
    """Index arrays for ``epochs`` passes over documents ``first_document + range(len(lengths))``.

    Each epoch is shuffled and cut on its own, from a generator keyed by (seed, epoch): a longer run
    (more epochs) appends samples without changing earlier ones. Samples are served epoch by epoch,
    each epoch's samples in a shuffled order. The permutations are drawn in threads (numpy releases
    the GIL while shuffling); the sample index is a ``np.repeat`` over documents, linear in their count.
    """
    lengths = np.asarray(document_lengths, dtype=np.int64)
    count = len(lengths)
    tokens_per_epoch = int(lengths.sum())
    per_epoch = samples_per_epoch(tokens_per_epoch, seq_len)
    if per_epoch == 0:
        raise ValueError(f"the split holds {tokens_per_epoch} tokens, fewer than seq_len + 1 = {seq_len + 1}")
    if int(lengths.max()) >= 2**32:
        raise ValueError("a document longer than 2**32 tokens")
    rows = per_epoch + 1  # sample boundaries per epoch
    # a row holds a document id and an offset into that document, which reaches its length
    wide = first_document + count * epochs >= 2**31 or rows * epochs >= 2**31 or int(lengths.max()) >= 2**31
    index_type = np.int64 if wide else np.int32

    def documents_in_order(key: list[int]) -> np.ndarray:
        """One epoch's documents shuffled, each packed with its length (id << 32 | length) so the
        lengths come along with the shuffle instead of a random-access gather afterwards."""
        packed = (np.arange(count, dtype=np.int64) << 32) | lengths
        np.random.default_rng(key).shuffle(packed)
        return packed

    def samples_in_order(epoch: int) -> np.ndarray:
        order = np.arange(per_epoch, dtype=index_type)
        np.random.default_rng([seed, epoch, 1]).shuffle(order)
        return order + index_type(epoch * rows)

    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        epoch_orders = [pool.submit(documents_in_order, [seed, e]) for e in range(epochs)]
        epoch_samples = [pool.submit(samples_in_order, e) for e in range(epochs)]
        sample_index = np.empty((epochs * rows, 2), dtype=index_type)
        orders = []
        for epoch, future in enumerate(epoch_orders):
            packed = future.result()
            orders.append((packed >> 32).astype(index_type))
            block = sample_index[epoch * rows : (epoch + 1) * rows]
            sample_boundaries(packed & 0xFFFFFFFF, seq_len, rows, block, offset=epoch * count)
        order = np.concatenate(orders) if epochs > 1 else orders[0]
        shuffle_index = np.concatenate([f.result() for f in epoch_samples])
    if first_document:
        order += index_type(first_document)
    return {"document_index": order, "sample_index": sample_index, "shuffle_index": shuffle_index}


def document_positions(inputs: np.ndarray, eod: int) -> np.ndarray:
    """Each token's position within its document: 0 at the first token and after every ``eod``, counting up
    in between (int64)."""
    starts = np.empty(len(inputs), dtype=bool)
    starts[:1] = True
    np.equal(inputs[:-1], eod, out=starts[1:])
    return positions_from_starts(starts)


def positions_from_starts(starts: np.ndarray) -> np.ndarray:
    """Each token's position counted from the last True of ``starts`` at or before it (``starts[0]`` True)."""
    index = np.arange(len(starts), dtype=np.int64)
    return index - np.maximum.accumulate(np.where(starts, index, 0))


class GPTDataset(torch.utils.data.Dataset):
    """``dataset[i]`` -> {"tokens": int64 tensor of seq_len + 1} (with ``document_eod``, also "position_ids":
    the seq_len inputs' positions within their documents)."""

    def __init__(self, indexed: IndexedDataset, indices: dict[str, np.ndarray], seq_len: int, num_samples: int,
                 document_eod: int | None = None, vocabulary: VocabularyBound | None = None) -> None:
        self.indexed = indexed
        self.document_eod = document_eod
        self.vocabulary = vocabulary
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
        (first, offset), (last, end_offset) = self.sample_index[sample : sample + 2].tolist()
        document = self.indexed.document
        out = np.empty(self.seq_len + 1, dtype=np.int64)
        if first == last:
            out[:] = document(int(self.document_index[first]), offset, end_offset + 1)
            return out
        # read only the pieces the sample holds, each straight into the output: no concatenate, no second cast
        filled = 0
        for position, doc in enumerate(self.document_index[first : last + 1].tolist()):
            piece = (document(doc, offset) if position == 0 else document(doc) if position < last - first
                     else document(doc, 0, end_offset + 1))
            out[filled : filled + len(piece)] = piece
            filled += len(piece)
        return out

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        tokens = self.tokens(index)
        if self.vocabulary is not None:
            self.vocabulary.check(tokens, f"{self.indexed.prefix}: sample {index}")
        if self.document_eod is None:
            return {"tokens": torch.from_numpy(tokens)}
        return {"tokens": torch.from_numpy(tokens),
                "position_ids": torch.from_numpy(document_positions(tokens[:-1], self.document_eod))}


def documents_end_with(indexed: IndexedDataset, documents: range, token: int, probes: int = 256) -> bool:
    """Do (a sample of) these documents end with ``token``? Packing needs a separator between them."""
    return last_tokens(indexed, documents, probes) <= {token}


def last_tokens(indexed: IndexedDataset, documents: range, probes: int = 256) -> set[int]:
    """The tokens that (a sample of ``probes``, evenly spread, of) these documents end with."""
    return {int(doc[-1]) for doc in probe_documents(indexed, documents, probes) if len(doc)}


def foreign_end_token(indexed: IndexedDataset, end_of_document: int) -> int | None:
    """The token every document (of a sample) ends with where it is not ``end_of_document`` and never occurs
    inside them: the end-of-document token of another tokenizer, the one the data was made with (--append-eod).
    None otherwise."""
    ends = last_tokens(indexed, range(indexed.num_documents))
    if len(ends) != 1 or indexed.num_documents < 2:
        return None
    last = next(iter(ends))
    if last == end_of_document or _inside_documents(indexed, last):
        return None
    return last


def _inside_documents(indexed: IndexedDataset, token: int, probes: int = 256) -> bool:
    """Does ``token`` occur before the last position of (a sample of) the documents?"""
    return any(bool((doc[:-1] == token).any()) for doc in probe_documents(indexed, range(indexed.num_documents), probes))


def first_tokens(indexed: IndexedDataset, documents: range, probes: int = 256) -> set[int]:
    """The tokens that (a sample of ``probes``, evenly spread, of) these documents start with."""
    return {int(doc[0]) for doc in probe_documents(indexed, documents, probes) if len(doc)}


def probe_documents(indexed: IndexedDataset, documents: range, probes: int) -> Iterator[np.ndarray]:
    """``probes`` of ``documents``, evenly spread (all of them where there are fewer)."""
    if len(documents) == 0:
        return iter(())
    picks = np.linspace(documents.start, documents.stop - 1, num=min(probes, len(documents))).astype(np.int64)
    return map(indexed.document, picks.tolist())
