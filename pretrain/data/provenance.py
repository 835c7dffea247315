"""Which tokenizer made a dataset, so that training or merging it with another one is refused, not run.

A ``.bin``/``.idx`` pair holds ids and nothing says whose: a tokenizer trained again (same size, other
corpus) and a dataset preprocessed before that pass every check on the ids, and the model learns noise.
Each dataset this project writes therefore gets ``PREFIX.meta.json`` (Megatron-LM ignores it) with its
counts and its tokenizer: the folder's path, its size, and a SHA-256 of its tokens in id order. A later
load of the same tokenizer may add special tokens past the end (an MLM's ``[MASK]``); the ids the data
can hold, the first ``vocab_size``, are what is compared. A dataset without the file (Megatron's, or
older) or whose counts are not its ``.idx``'s (replaced by another tool) is simply not checked.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass

from pretrain.data.indexed import IndexedDataset, meta_path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TokenizerRecord:
    source: str
    """The tokenizer folder or hub name the data was preprocessed with (said in messages, not compared)."""
    vocab_size: int
    """Its number of ids, added tokens included, as preprocessing loaded it."""
    vocabulary: str
    """SHA-256 of its first ``vocab_size`` tokens in id order: what the comparison is made on."""


def vocabulary_digest(backend, size: int) -> str | None:
    """SHA-256 of the tokens of ids ``0..size-1`` of a ``tokenizers.Tokenizer``; None if it has fewer ids."""
    if backend.get_vocab_size(with_added_tokens=True) < size:
        return None
    tokens = [backend.id_to_token(i) for i in range(size)]
    return hashlib.sha256(json.dumps(tokens, ensure_ascii=False).encode("utf-8")).hexdigest()


def record_of(tokenizer) -> TokenizerRecord:
    """The record of a LoadedTokenizer, for the datasets it writes."""
    size = tokenizer.vocab_size
    return TokenizerRecord(tokenizer.source, size, vocabulary_digest(tokenizer.backend, size))


def meta_body(record: TokenizerRecord | None) -> dict | None:
    """What ``IndexedDatasetWriter.finalize`` writes beside its counts; None writes no file."""
    return None if record is None else {"tokenizer": asdict(record)}


def tokenizer_record(dataset: IndexedDataset) -> TokenizerRecord | None:
    """The record written with ``dataset``; None where there is none to trust (none written, another tool's
    ``.idx`` since, or a file this version cannot read)."""
    path = meta_path(dataset.prefix)
    try:
        with open(path, encoding="utf-8") as handle:
            body = json.load(handle)
        counts = (body["documents"], body["sequences"], body["tokens"])
        record = TokenizerRecord(**body["tokenizer"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("%s cannot be read (%s): which tokenizer made %s is not checked", path, exc, dataset.prefix)
        return None
    if counts != (dataset.num_documents, dataset.num_sequences, dataset.num_tokens):
        log.warning("%s describes another dataset than %s.idx (rewritten by another tool?): which tokenizer made it "
                    "is not checked", path, dataset.prefix)
        return None
    return record


def mismatch(dataset: IndexedDataset, backend, source: str, name: str) -> str | None:
    """Why ``dataset`` was not made by the tokenizer ``backend`` (loaded from ``source``, called ``name`` in the
    message), with the fix; None when it was, or when nothing was recorded."""
    record = tokenizer_record(dataset)
    if record is None:
        return None
    digest = vocabulary_digest(backend, record.vocab_size)
    if digest is None or digest == record.vocabulary:  # fewer ids: the data's own checks name any id past them
        return None
    same_place = os.path.abspath(os.path.expanduser(record.source)) == os.path.abspath(os.path.expanduser(source))
    return (f"{dataset.prefix} was preprocessed with another tokenizer than {name} {source}: the same ids stand for "
            "other tokens in it" + (" (the folder was changed since: a tokenizer trained again?)" if same_place else
                                    f" (the data was made with {record.source})")
            + f". Use the tokenizer the data was made with, or preprocess the data again with {source}.")
