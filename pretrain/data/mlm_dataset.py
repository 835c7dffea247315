"""BERT samples from sentence datasets: ``[CLS] A [SEP] B [SEP]`` with segment ids and masking.

The mapping groups consecutive sentences of a document into samples of about the target length
(``seq_len - 3`` tokens, or a random shorter target for ``short_seq_prob`` of the documents), built
vectorized. At fetch time, a generator seeded by (seed, sample index) picks where A ends and B
begins, swaps them for sentence-order prediction, truncates to fit, and masks: the same sample
index always gives the same sample, so a resumed run sees exactly the same data.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from pretrain.data.indexed import IndexedDataset
from pretrain.data.masking import IGNORE_INDEX, MaskingSpec, mask_tokens, max_predictions
from pretrain.data.vocabulary import VocabularyBound


def build_mlm_mapping(indexed: IndexedDataset, documents: range, seq_len: int, short_seq_prob: float,
                      seed: int) -> np.ndarray:
    """One epoch of samples: (first sentence, end sentence) rows."""
    rng = np.random.default_rng([seed, 0])
    doc_index = np.asarray(indexed.document_indices[documents.start : documents.stop + 1], dtype=np.int64)
    first_sentence, end_sentence = int(doc_index[0]), int(doc_index[-1])
    lengths = np.asarray(indexed.sequence_lengths[first_sentence:end_sentence], dtype=np.int64)
    sentences_per_doc = np.diff(doc_index)
    doc_of_sentence = np.repeat(np.arange(len(sentences_per_doc)), sentences_per_doc)
    max_tokens = seq_len - 3
    targets = np.where(rng.random(len(sentences_per_doc)) < short_seq_prob,
                       rng.integers(2, max_tokens + 1, len(sentences_per_doc)), max_tokens)
    # tokens before each sentence within its document decide its chunk
    cumulative = np.cumsum(lengths) - lengths
    # each sentence's document's first sentence; picked per sentence, so an empty document (a record
    # megatron-core's preprocessing wrote for an empty text) indexes nothing, even as the split's last one
    before_in_doc = cumulative - cumulative[(doc_index[:-1] - first_sentence)[doc_of_sentence]]
    chunk = before_in_doc // targets[doc_of_sentence]
    new_sample = np.ones(len(lengths), dtype=bool)
    new_sample[1:] = (doc_of_sentence[1:] != doc_of_sentence[:-1]) | (chunk[1:] != chunk[:-1])
    starts = np.flatnonzero(new_sample)
    ends = np.append(starts[1:], len(lengths))
    sizes = np.add.reduceat(lengths, starts) if len(starts) else np.zeros(0, np.int64)
    keep = sizes >= 2
    mapping = np.stack([starts[keep], ends[keep]], axis=1) + first_sentence
    if len(mapping) == 0:
        raise ValueError("the split has no sentences to build MLM samples from")
    return mapping


def serving_order(mapping_size: int, num_samples: int, seed: int) -> np.ndarray:
    """Mapping rows in serving order: epoch after epoch, each shuffled by (seed, epoch) alone, so
    asking for more samples later appends without reordering."""
    epochs = math.ceil(num_samples / mapping_size)
    return np.concatenate([np.random.default_rng([seed, e + 1]).permutation(mapping_size) for e in range(epochs)])


def build_mlm_indices(indexed: IndexedDataset, documents: range, num_samples: int, seq_len: int, short_seq_prob: float,
                      seed: int) -> dict[str, np.ndarray]:
    """The mapping and the serving order for ``num_samples`` (uncached; the builder caches the mapping)."""
    mapping = build_mlm_mapping(indexed, documents, seq_len, short_seq_prob, seed)
    return {"mapping": mapping, "shuffle_index": serving_order(len(mapping), num_samples, seed)}


class MLMDataset(torch.utils.data.Dataset):
    """``dataset[i]`` -> input_ids, token_type_ids, attention_mask, labels, masked_positions (+ sop_label).

    ``masked_positions`` lists the positions to predict, padded with 0 (the [CLS] position, whose label is
    -100) to the fixed width ``max_predictions(seq_len, mask_prob)``: the model gathers that many rows per
    sample, a shape known before the batch reaches the GPU."""

    def __init__(self, indexed: IndexedDataset, indices: dict[str, np.ndarray], seq_len: int, specials: dict[str, int],
                 masking: MaskingSpec, sentence_order: bool, seed: int, num_samples: int,
                 vocabulary: VocabularyBound | None = None) -> None:
        if num_samples > len(indices["shuffle_index"]):
            raise ValueError(f"asked for {num_samples} samples but the index holds {len(indices['shuffle_index'])}")
        self.num_samples = num_samples
        self.indexed = indexed
        self.mapping = indices["mapping"]
        self.shuffle_index = indices["shuffle_index"]
        self.seq_len = seq_len
        self.cls, self.sep, self.pad = specials["cls"], specials["sep"], specials["pad"]
        self.masking = masking
        self.predictions = max_predictions(seq_len, masking.mask_prob)
        self.sentence_order = sentence_order
        self.seed = seed
        self.vocabulary = vocabulary

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, index])
        start, end = (int(v) for v in self.mapping[self.shuffle_index[index]])
        # the sentences of a sample are contiguous in the .bin: read them as one block, cut where each begins
        starts = self.indexed.sequence_pointers[start:end] // self.indexed.dtype.itemsize
        length = int(starts[-1] - starts[0]) + int(self.indexed.sequence_lengths[end - 1])
        block = self.indexed.get(start, 0, length).astype(np.int64)
        if self.vocabulary is not None:
            self.vocabulary.check(block, f"{self.indexed.prefix}: sample {index}")
        a, b, swapped = self._segments(block, starts[1:] - starts[0], rng)
        a, b = _truncate_pair(a, b, self.seq_len - 3 if len(b) else self.seq_len - 2, rng)
        length = len(a) + len(b) + (3 if len(b) else 2)
        tokens = np.empty(length, dtype=np.int64)
        tokens[0], tokens[1 : len(a) + 1], tokens[len(a) + 1] = self.cls, a, self.sep
        if len(b):
            tokens[len(a) + 2 : -1], tokens[-1] = b, self.sep
        maskable = np.ones(length, dtype=bool)
        maskable[[0, len(a) + 1, length - 1]] = False
        inputs, labels = mask_tokens(tokens, maskable, self.masking, rng)
        sample = {
            "input_ids": np.full(self.seq_len, self.pad, dtype=np.int64),
            "token_type_ids": np.zeros(self.seq_len, dtype=np.int64),
            "attention_mask": np.zeros(self.seq_len, dtype=np.int64),
            "labels": np.full(self.seq_len, IGNORE_INDEX, dtype=np.int64),
        }
        sample["input_ids"][:length] = inputs
        sample["token_type_ids"][len(a) + 2 : length] = 1
        sample["attention_mask"][:length] = 1
        sample["labels"][:length] = labels
        chosen = np.flatnonzero(labels != IGNORE_INDEX)
        sample["masked_positions"] = np.zeros(self.predictions, dtype=np.int64)
        sample["masked_positions"][: len(chosen)] = chosen
        sample = {name: torch.from_numpy(array) for name, array in sample.items()}
        if self.sentence_order:
            sample["sop_label"] = torch.tensor(int(swapped))
        return sample

    def _segments(self, block: np.ndarray, cuts: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, bool]:
        """Split the sample's sentences (``block``, with sentence ends at ``cuts``) into A and B."""
        if len(cuts):
            split = int(cuts[int(rng.integers(0, len(cuts)))])
        elif self.sentence_order:  # one long sentence: cut it in two so there is an order to predict
            split = int(rng.integers(1, len(block)))
        else:
            return block, block[:0], False
        a, b = block[:split], block[split:]
        swapped = self.sentence_order and bool(rng.random() < 0.5)
        return (b, a, True) if swapped else (a, b, False)


def _truncate_pair(a: np.ndarray, b: np.ndarray, budget: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Trim the longer segment, tokens from either end at random, until both fit (BERT's
    truncate_seq_pair, a slice at a time instead of a token at a time)."""
    while len(a) + len(b) > budget:
        excess = len(a) + len(b) - budget
        trim_a = len(a) >= len(b)
        longer, shorter = (a, b) if trim_a else (b, a)
        cut = min(excess, max(1, len(longer) - len(shorter)))
        front = int(rng.binomial(cut, 0.5))
        longer = longer[front : len(longer) - (cut - front)]
        a, b = (longer, b) if trim_a else (a, longer)
    return a, b
