"""From the config to train / valid / test datasets: splits by document, cached indices, blending."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pretrain.config import DataConfig, data_prefixes, split_fractions
from pretrain.data.blend import BlendedDataset, blend_counts
from pretrain.data.gpt_dataset import (
    GPTDataset,
    build_gpt_indices,
    documents_end_with,
    epochs_needed,
    first_tokens,
    foreign_end_token,
    last_tokens,
)
from pretrain.data.index_cache import dataset_identity, load_or_build
from pretrain.data.indexed import IndexedDataset
from pretrain.data.masking import MaskingSpec
from pretrain.data.mlm_dataset import MLMDataset, build_mlm_mapping, serving_order
from pretrain.data.packed_mlm import WRAP, PackedMLMDataset, wrapped_lengths
from pretrain.data.provenance import mismatch
from pretrain.data.vocabulary import VocabularyBound
from pretrain.tokenization import LoadedTokenizer

log = logging.getLogger(__name__)
SPLITS = ("train", "valid", "test")


class DataError(ValueError):
    """Data that cannot train this model; the message says why and what to do."""


@dataclass
class SplitSizes:
    train: int
    valid: int
    test: int


def split_ranges(num_documents: int, split: str) -> dict[str, range]:
    fractions = split_fractions(split)
    bounds = [0]
    for fraction in fractions:
        bounds.append(min(num_documents, bounds[-1] + int(round(fraction * num_documents))))
    bounds[-1] = num_documents
    return {name: range(bounds[i], bounds[i + 1]) for i, name in enumerate(SPLITS)}


def check_datasets(data: DataConfig, tokenizer: LoadedTokenizer, objective: str) -> list[str]:
    """Problems that would make the data unusable with this tokenizer and objective (all of them)."""
    problems = []
    for prefix, _ in data_prefixes(data):
        try:
            indexed = IndexedDataset(prefix)
        except ValueError as exc:
            problems.append(str(exc))
            continue
        if other := mismatch(indexed, tokenizer.backend, tokenizer.source, "data.tokenizer"):
            problems.append(other)
            continue
        highest = _highest_token(indexed)
        ends = last_tokens(indexed, range(indexed.num_documents))  # of a sample of the documents
        if highest >= tokenizer.vocab_size:
            problems.append(f"{prefix} holds token id {highest} but the tokenizer {tokenizer.source} has only "
                            f"{tokenizer.vocab_size} tokens: {vocabulary_bound(tokenizer).cause(highest)}")
        elif objective == "clm" and not ends <= {tokenizer.specials.eod}:
            eod = f"the end-of-text token {tokenizer.specials.tokens['eod']!r} (id {tokenizer.specials.eod})"
            last = foreign_end_token(indexed, tokenizer.specials.eod)
            if last is not None:
                problems.append(f"{prefix}: every document ends with token id {last} (this tokenizer's "
                                f"{tokenizer.backend.id_to_token(last)!r}), not with {eod}. If the data was made with "
                                "--append-eod, it was made with another tokenizer: set data.tokenizer to the folder "
                                "used for preprocessing. Otherwise preprocess with --append-eod.")
            else:
                problems.append(f"{prefix}: documents do not end with {eod}: packed CLM samples need it between "
                                "documents. Preprocess with --append-eod.")
        bos = tokenizer.bos_id if objective == "clm" else None
        if bos is not None and not first_tokens(indexed, range(indexed.num_documents)) <= {bos}:
            log.warning("%s: documents do not start with the tokenizer's BOS %r, which a model using this tokenizer "
                        "(a Llama's, Mistral's) was trained to see first: preprocess again with --append-eod, which "
                        "starts each document with it", prefix, tokenizer.backend.id_to_token(bos))
        if objective == "mlm" and not data.document_mask and ends <= {tokenizer.specials.eod}:
            log.warning("%s: documents end with the end-of-document token %r (--append-eod): MLM sentence pairs "
                        "keep it as text. Preprocess MLM data without --append-eod.", prefix,
                        tokenizer.specials.tokens["eod"])
        if objective == "mlm" and not data.document_mask and indexed.num_sequences == indexed.num_documents:
            log.warning("%s has one sequence per document: MLM pairs are cut inside documents, not at sentences "
                        "(preprocess with --split-sentences for sentence pairs)", prefix)
    return problems


def vocabulary_bound(tokenizer: LoadedTokenizer) -> VocabularyBound:
    return VocabularyBound(tokenizer.vocab_size, tokenizer.source)


def _highest_token(indexed: IndexedDataset, windows: int = 64) -> int:
    """The largest id in (64 evenly spread 64k-token windows of) the data."""
    if indexed.num_tokens == 0:
        return -1
    width = 1 << 16
    starts = np.linspace(0, max(indexed.num_tokens - width, 0), num=windows).astype(np.int64)
    return max(int(indexed.tokens(int(s), int(s) + width).max()) for s in starts)


def build_datasets(data: DataConfig, tokenizer: LoadedTokenizer, objective: str, seed: int, sizes: SplitSizes,
                   may_build_index: bool) -> dict:
    """{split: dataset} for every split with samples requested (blended when several prefixes).

    ``objective``: "clm" (packed GPT samples) or "mlm" (BERT sentence pairs with masking; with
    data.document_mask, packed documents without padding); ``seed``: the run's, from which each split's
    shuffling and masking are drawn."""
    pairs = data_prefixes(data)
    per_prefix: dict[str, list] = {name: [] for name in SPLITS}
    weights = [w for _, w in pairs]
    for prefix, _ in pairs:
        indexed = IndexedDataset(prefix)
        ranges = split_ranges(indexed.num_documents, data.split)
        for name in SPLITS:
            wanted = getattr(sizes, name)
            if wanted == 0:
                per_prefix[name].append(None)
                continue
            count = blend_counts(weights, wanted)[len(per_prefix[name])] if len(pairs) > 1 else wanted
            if len(ranges[name]) == 0:
                raise DataError(f"{prefix}: the {name} split has no documents ({indexed.num_documents} documents, "
                                f"data.split={data.split}); use more data or change data.split.")
            per_prefix[name].append(_split_dataset(data, tokenizer, indexed, ranges[name], count, objective,
                                                   seed + SPLITS.index(name), name, may_build_index))
    out = {}
    for name in SPLITS:
        wanted = getattr(sizes, name)
        if wanted:
            parts = per_prefix[name]
            out[name] = parts[0] if len(parts) == 1 else BlendedDataset(parts, weights, wanted)
    return out


def _split_dataset(data: DataConfig, tokenizer: LoadedTokenizer, indexed: IndexedDataset, documents: range,
                   num_samples: int, objective: str, seed: int, split: str, may_build: bool) -> torch.utils.data.Dataset:
    key = {"dataset": dataset_identity(indexed.prefix), "documents": [documents.start, documents.stop],
           "seq_len": data.seq_len, "seed": seed, "objective": objective}
    cache_dir = Path(data.cache_dir) if data.cache_dir else Path(f"{indexed.prefix}.cache")
    describe = f"{os.path.basename(indexed.prefix)} ({split})"

    def packed_index(tokens_per_epoch: int, lengths: Callable[[], np.ndarray]) -> dict[str, np.ndarray]:
        """The cached index of the documents packed one after another: ``lengths()`` gives each one's length
        and is called only when the index is built; ``tokens_per_epoch`` (their sum, or a lower bound of it)
        sets the epochs it covers."""
        key["epochs"] = epochs_needed(tokens_per_epoch, num_samples, data.seq_len)
        return load_or_build(cache_dir, key, lambda: build_gpt_indices(lengths(), documents.start, key["epochs"],
                                                                       data.seq_len, seed),
                             describe, may_build, data.index_wait_minutes)

    lengths = indexed.document_lengths()[documents.start : documents.stop]
    if objective == "clm":
        return GPTDataset(indexed, packed_index(int(lengths.sum()), lambda: lengths), data.seq_len, num_samples,
                          tokenizer.specials.eod if data.document_mask else None, vocabulary_bound(tokenizer))
    specials = tokenizer.specials.ids
    special_ids = np.array(sorted(set(specials.values())))
    random_ids = np.setdiff1d(np.arange(tokenizer.vocab_size), special_ids)
    masking = MaskingSpec(specials["mask"], data.mask_prob, data.whole_word_masking,
                          tokenizer.unit_starts(data.whole_word_unit), random_ids)
    if data.document_mask:  # packed documents, no padding: the causal LM's index over the wrapped documents
        key["objective"] = "mlm-packed"
        eod = specials["eod"] if documents_end_with(indexed, documents, specials["eod"]) else None
        if eod is not None:  # made with --append-eod: [SEP] ends each document here, the EOD is left out
            key["trailing_eod_left_out"] = True
            log.info("%s: documents end with the end-of-document token (--append-eod); packed MLM leaves it out",
                     describe)
        # Which documents end with the EOD is known only by reading each one's last token from the .bin (a page
        # per document: the whole file on a cold cache), so that is left to the index build. The epochs come
        # from a lower bound of the tokens, as if every document ended with it: exact for --append-eod data, and
        # at worst an index one epoch longer than needed.
        tokens = int(lengths.sum()) + (WRAP - (eod is not None)) * len(documents)
        return PackedMLMDataset(indexed, packed_index(tokens, lambda: wrapped_lengths(indexed, documents, eod)),
                                data.seq_len, specials, masking, seed, num_samples, eod, vocabulary_bound(tokenizer))
    key["short_seq_prob"] = data.short_seq_prob
    cached = load_or_build(cache_dir, key, lambda: {"mapping": build_mlm_mapping(indexed, documents, data.seq_len,
                                                                                 data.short_seq_prob, seed)},
                           describe, may_build, data.index_wait_minutes)
    indices = {"mapping": cached["mapping"], "shuffle_index": serving_order(len(cached["mapping"]), num_samples, seed)}
    return MLMDataset(indexed, indices, data.seq_len, specials, masking, data.sentence_order_prediction, seed,
                      num_samples, vocabulary_bound(tokenizer))
