"""How many UTF-8 bytes of text each token id stands for: the denominator of bits per byte.

Bits per byte (``-sum log2 p / bytes``) compares models across tokenizers, which loss per token does
not. Summing this table over the predicted tokens gives the bytes they cover without decoding:

  * byte-level BPE: exact. Every character of a vocabulary entry is the image of one byte (GPT-2's
    byte-to-unicode map), so an entry's length is its byte count; the table summed over a text's ids
    is the text's UTF-8 length.
  * WordPiece: approximate. ``##x`` continues a word (the bytes of ``x``); any other entry starts one
    and is counted with the space before it (punctuation, which has none, is counted one byte high).
  * SentencePiece: approximate. ``▁`` is a space (one byte, not ▁'s three); byte-fallback entries
    ``<0xNN>`` are one byte; a text's first word is counted with the space SentencePiece prefixes.

Special tokens (end of document, padding, [CLS], ...) stand for no text: 0 bytes. Added tokens that
are not special are their own text.
"""

from __future__ import annotations

import re

import numpy as np

from pretrain.tokenization import LoadedTokenizer

_BYTE_FALLBACK = re.compile(r"<0x[0-9A-Fa-f]{2}>")


def token_byte_lengths(tokenizer: LoadedTokenizer) -> np.ndarray:
    """int64 per id (``tokenizer.vocab_size`` entries): the UTF-8 bytes of text the token stands for."""
    lengths = np.zeros(tokenizer.vocab_size, dtype=np.int64)
    added = tokenizer.backend.get_added_tokens_decoder()
    for token, index in tokenizer.backend.get_vocab(with_added_tokens=False).items():
        lengths[index] = _entry_bytes(token, tokenizer.family)
    for index, token in added.items():
        lengths[index] = 0 if token.special else len(token.content.encode("utf-8"))
    lengths[list(set(tokenizer.specials.ids.values()))] = 0
    return lengths


def _entry_bytes(token: str, family: str) -> int:
    if family == "byte_bpe":
        return len(token)
    if family == "wordpiece":
        return len(token[2:].encode("utf-8")) if token.startswith("##") else len(token.encode("utf-8")) + 1
    if _BYTE_FALLBACK.fullmatch(token):
        return 1
    return len(token.replace("▁", " ").encode("utf-8"))
