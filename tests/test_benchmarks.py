"""The benchmarks' own inputs, which the README's figures stand on: a benchmark that cannot start where
../shared is missing (a stranger's clone) quotes nothing anyone can check."""

from __future__ import annotations

import numpy as np

from pretrain.data.indexed import IndexedDataset
from pretrain.tokenization import load_tokenizer


def test_the_throughput_benchmarks_documents_hold_ordinary_ids_of_any_tokenizer(tmp_path, tokenizer_dir):
    """The tokenizer the benchmark trains where ../shared is missing has its specials first (EOD is id 0): the
    data took EOD for the last id, wrote -1 (65,535 in uint16) and every launch was refused."""
    from benchmarks.train_throughput import make_data

    tokenizer = load_tokenizer(tokenizer_dir)
    specials = sorted(set(tokenizer.specials.ids.values()))
    eod = tokenizer.specials.eod
    assert eod < tokenizer.vocab_size - 1  # not the last id: the case that broke
    dataset = IndexedDataset(make_data(tmp_path, tokenizer.vocab_size, specials, eod, 50_000))
    assert dataset.num_tokens >= 50_000
    tokens = dataset.tokens(0, dataset.num_tokens).astype(np.int64)
    assert tokens.min() >= 0 and tokens.max() < tokenizer.vocab_size
    ends = dataset.document_token_offsets()[1:] - 1
    assert (tokens[ends] == eod).all()
    inside = np.delete(tokens, ends)
    assert not np.isin(inside, specials).any() and len(np.unique(inside)) > 100  # a spread of ordinary ids
