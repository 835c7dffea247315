"""Which tokenizer made a dataset, so that training or merging it with another one is refused, not run.

A ``.bin``/``.idx`` pair holds ids and nothing says whose: a tokenizer trained again (same size, other
corpus) and a dataset preprocessed before that pass every check on the ids, and the model learns noise.
Each dataset this project writes therefore gets ``PREFIX.meta.json`` (Megatron-LM ignores it) with its
counts and its tokenizer: the folder's path, its size, SHA-256 digests of its tokens in id order (blocks of
256 ids), and the tokens past the last whole block as they are.

Two loads of one tokenizer may differ in size: a load adds the special tokens its model needs past the
end (an MLM's ``[MASK]``), and a run saves its tokenizer with them. So two tokenizers are compared on the
ids both have: block by block, then token by token past the last whole block (where chat and special
tokens are). A dataset without the file (Megatron's, or older) or whose counts are not its
``.idx``'s (replaced by another tool) is simply not checked.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass

from pretrain.data.indexed import IndexedDataset, meta_path

log = logging.getLogger(__name__)
BLOCK = 256  # ids per block digest: byte-level BPEs share their first 256-odd ids (specials and bytes), not more


@dataclass(frozen=True)
class TokenizerRecord:
    source: str
    """The tokenizer folder or hub name the data was preprocessed with (said in messages, not compared)."""
    vocab_size: int
    """Its number of ids, added tokens included, as preprocessing loaded it."""
    vocabulary: str
    """SHA-256 of its ``vocab_size`` tokens in id order (shown by inspect_dataset)."""
    blocks: list[str]
    """The first 16 hex digits of SHA-256 of each whole block of ``BLOCK`` ids."""
    tail: list[str | None]
    """The tokens past the last whole block, as they are: where added tokens (specials, chat tokens) live."""


def _tokens(backend, size: int) -> list[str | None]:
    return [backend.id_to_token(i) for i in range(size)]


def _digest(tokens: list[str | None]) -> str:
    return hashlib.sha256(json.dumps(tokens, ensure_ascii=False).encode("utf-8")).hexdigest()


def _blocks(tokens: list[str | None]) -> list[str]:
    return [_digest(tokens[start:start + BLOCK])[:16] for start in range(0, len(tokens) - BLOCK + 1, BLOCK)]


def _as_record(source: str, tokens: list[str | None]) -> TokenizerRecord:
    whole = len(tokens) // BLOCK * BLOCK
    return TokenizerRecord(source, len(tokens), _digest(tokens), _blocks(tokens), tokens[whole:])


def record_of(tokenizer) -> TokenizerRecord:
    """The record of a LoadedTokenizer, for the datasets it writes."""
    return _as_record(tokenizer.source, _tokens(tokenizer.backend, tokenizer.vocab_size))


def agree(one: TokenizerRecord, other: TokenizerRecord) -> bool:
    """Do the ids both records have stand for the same tokens? Whole blocks by their digests; the ids past the
    last whole block the two share, token by token where both records list them (each lists its own tail: a
    remainder inside the larger one's whole blocks, under 256 ids of its base vocabulary, is not compared)."""
    shared = min(one.vocab_size, other.vocab_size)
    whole = shared // BLOCK
    if one.blocks[:whole] != other.blocks[:whole]:
        return False
    start, tails = whole * BLOCK, []
    for record in (one, other):
        if record.vocab_size // BLOCK != whole:  # the remainder lies inside one of its whole blocks
            return True
        tails.append(record.tail[: shared - start])
    return tails[0] == tails[1]


def same_ids(record: TokenizerRecord, backend) -> bool:
    """Do the ids ``record`` and the ``tokenizers.Tokenizer`` both have stand for the same tokens?"""
    size = min(backend.get_vocab_size(with_added_tokens=True), record.vocab_size)
    return agree(record, _as_record("", _tokens(backend, size)))


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
    if record is None or same_ids(record, backend):
        return None
    same_place = os.path.abspath(os.path.expanduser(record.source)) == os.path.abspath(os.path.expanduser(source))
    return (f"{dataset.prefix} was preprocessed with another tokenizer than {name} {source}: the same ids stand for "
            "other tokens in it" + (" (the folder was changed since: a tokenizer trained again?)" if same_place else
                                    f" (the data was made with {record.source})")
            + f". Use the tokenizer the data was made with, or preprocess the data again with {source}.")
