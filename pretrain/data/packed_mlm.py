"""Packed masked-LM samples: whole documents ``[CLS] text [SEP]`` one after another, cut every ``seq_len``
tokens: no padding anywhere (ModernBERT's "unpadding" and sequence packing, as a sample layout).

Padded sentence pairs (pretrain/data/mlm_dataset.py) end at a sentence boundary and a tenth of them at a
shorter random length, and nearly every batch of them holds padding the GPU still computes (97.4% of the
positions are real on Namuwiki at 512 tokens: benchmarks/mlm_lengths.json); here every position is a real
token and a document is never cut into pairs. Documents are wrapped in [CLS] ... [SEP] and packed
as the causal-LM samples are (pretrain/data/gpt_dataset.py's index: documents shuffled per epoch, the stream
cut every ``seq_len`` tokens; a document longer than a sample continues in the next one), and each sample
carries ``position_ids``: each token's position within its document piece, 0 at every [CLS] and at the
sample's first token. The model keeps attention within a piece from them (data.document_mask), so a sample
scores as its documents would alone. Masking is BERT's (pretrain/data/masking.py), [CLS] and [SEP] never
chosen (nor a sample's first token: the fixed-width list of masked positions pads with it), drawn from a
generator seeded by (seed, sample index): a resumed run sees the same samples. Data preprocessed with
--append-eod (documents ending with the end-of-document token) is read without that token: [SEP] ends each
document here, and the token would otherwise be text to predict.
"""

from __future__ import annotations

import numpy as np
import torch

from pretrain.data.gpt_dataset import positions_from_starts
from pretrain.data.indexed import IndexedDataset
from pretrain.data.masking import IGNORE_INDEX, MaskingSpec, mask_tokens, max_predictions
from pretrain.data.vocabulary import VocabularyBound

WRAP = 2  # [CLS] before a document, [SEP] after it


def wrapped_lengths(indexed: IndexedDataset, documents: range, eod: int | None) -> np.ndarray:
    """Each document's length in a packed sample: [CLS], its tokens less a last one that is ``eod``, [SEP]."""
    lengths = indexed.document_lengths()[documents.start : documents.stop]
    if eod is not None:
        lengths = lengths - (indexed.last_tokens(documents) == eod)
    return lengths + WRAP


class PackedMLMDataset(torch.utils.data.Dataset):
    """``dataset[i]`` -> input_ids, labels, position_ids (``seq_len`` each) and masked_positions: the chosen
    positions, padded to the fixed width ``max_predictions(packed=True)`` with position 0, which is never chosen (its
    label is -100), as MLMDataset pads with its [CLS].

    ``indices``: build_gpt_indices over the documents' wrapped lengths (``wrapped_lengths``); ``eod``: the
    end-of-document token to leave out where a document ends with it (data made with --append-eod), or None."""

    def __init__(self, indexed: IndexedDataset, indices: dict[str, np.ndarray], seq_len: int, specials: dict[str, int],
                 masking: MaskingSpec, seed: int, num_samples: int, eod: int | None = None,
                 vocabulary: VocabularyBound | None = None) -> None:
        if num_samples > len(indices["shuffle_index"]):
            raise ValueError(f"asked for {num_samples} samples but the index holds {len(indices['shuffle_index'])}")
        self.indexed = indexed
        self.document_index = indices["document_index"]
        self.sample_index = indices["sample_index"]
        self.shuffle_index = indices["shuffle_index"]
        self.seq_len = seq_len
        self.cls, self.sep = specials["cls"], specials["sep"]
        self.masking = masking
        self.predictions = max_predictions(seq_len, masking.mask_prob, packed=True)
        self.seed = seed
        self.num_samples = num_samples
        self.eod = eod
        self.vocabulary = vocabulary

    def __len__(self) -> int:
        return self.num_samples

    def document_length(self, doc: int) -> int:
        """Tokens of document ``doc`` read: its sentences' lengths, less a last token that is ``eod`` (no table
        of every document is held)."""
        first, last = (int(v) for v in self.indexed.document_indices[doc : doc + 2])
        length = int(self.indexed.sequence_lengths[first:last].sum())
        if self.eod is not None and length and int(self.indexed.document(doc, length - 1, length)[0]) == self.eod:
            length -= 1
        return length

    def pieces(self, index: int) -> list[tuple[int, int, int, int]]:
        """(document, first, end, its tokens n) of each wrapped document piece in sample ``index``, in order;
        wrapped coordinates: 0 is the [CLS], 1..n the document's tokens, n + 1 the [SEP]."""
        sample = int(self.shuffle_index[index])
        (first, offset), (last, _) = self.sample_index[sample : sample + 2].tolist()
        out, remaining = [], self.seq_len
        for position, doc in enumerate(self.document_index[first : last + 1].tolist()):
            start = offset if position == 0 else 0
            length = self.document_length(doc)
            stop = min(length + WRAP, start + remaining)
            if stop > start:
                out.append((doc, start, stop, length))
                remaining -= stop - start
            if remaining == 0:
                break
        return out

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        tokens = np.empty(self.seq_len, dtype=np.int64)
        special = np.zeros(self.seq_len, dtype=bool)
        starts = np.zeros(self.seq_len, dtype=bool)
        starts[0] = True
        filled = 0
        for doc, start, stop, length in self.pieces(index):
            piece = tokens[filled : filled + stop - start]
            # the document's tokens that fall in [start, stop), read straight into place
            first, last = max(start, 1), min(stop, length + 1)
            if last > first:
                piece[first - start : last - start] = self.indexed.document(doc, first - 1, last - 1)
            if start == 0:
                piece[0], special[filled], starts[filled] = self.cls, True, True
            if stop == length + WRAP:
                piece[-1], special[filled + stop - start - 1] = self.sep, True
            filled += stop - start
        if self.vocabulary is not None:
            self.vocabulary.check(tokens[:filled], f"{self.indexed.prefix}: sample {index}")
        maskable = ~special
        maskable[0] = False  # where masked_positions pads
        inputs, labels = mask_tokens(tokens, maskable, self.masking, np.random.default_rng([self.seed, index]))
        positions = positions_from_starts(starts)
        chosen = np.flatnonzero(labels != IGNORE_INDEX)
        masked = np.zeros(self.predictions, dtype=np.int64)
        masked[: len(chosen)] = chosen
        return {"input_ids": torch.from_numpy(inputs), "labels": torch.from_numpy(labels),
                "position_ids": torch.from_numpy(positions), "masked_positions": torch.from_numpy(masked)}
