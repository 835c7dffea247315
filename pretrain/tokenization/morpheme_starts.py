"""Which pieces of a morpheme-aware vocabulary begin a morpheme, for whole-morpheme masking.

A piece such as "에" begins a morpheme after 학교 but may also sit inside one elsewhere; the vocabulary
alone does not say. So training holds back the first few MB of the marked sample, encodes it with the
finished tokenizer (plain text, as at encode time), and calls a piece a morpheme start when most of its
occurrences begin at a marked boundary or a word start.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from pretrain.tokenization.loading import LoadedTokenizer
from pretrain.tokenization.morphemes import MARKER

HELD_BYTES = 4 << 20


class HeldBack:
    """Passes marked texts through, keeping the first ``limit`` characters of them and counting all."""

    def __init__(self, limit: int = HELD_BYTES) -> None:
        self.limit = limit
        self.texts: list[str] = []
        self.kept = 0
        self.documents = 0
        self.boundaries = 0

    def watch(self, texts: Iterable[str]) -> Iterator[str]:
        for text in texts:
            self.documents += 1
            self.boundaries += text.count(MARKER)
            if self.kept < self.limit and MARKER in text:
                self.texts.append(text)
                self.kept += len(text)
            yield text


def unmark(text: str) -> tuple[str, np.ndarray]:
    """The text without marks, and the positions (in it) where marks were."""
    pieces = text.split(MARKER)
    lengths = np.fromiter((len(p) for p in pieces), dtype=np.int64, count=len(pieces))
    return "".join(pieces), np.cumsum(lengths)[:-1]


def morpheme_starts(tokenizer: LoadedTokenizer, marked: list[str]) -> list[int]:
    """Ids whose occurrences in ``marked`` (encoded without the marks) mostly begin a morpheme."""
    initial = np.zeros(tokenizer.vocab_size, dtype=np.int64)
    inside = np.zeros(tokenizer.vocab_size, dtype=np.int64)
    for start in range(0, len(marked), 64):
        batch = [unmark(t) for t in marked[start:start + 64]]
        encodings = tokenizer.backend.encode_batch([text for text, _ in batch], add_special_tokens=False)
        for (text, cuts), encoding in zip(batch, encodings):
            ids = np.asarray(encoding.ids, dtype=np.int64)
            if len(ids) == 0:
                continue
            starts = np.asarray([s for s, _ in encoding.offsets], dtype=np.int64)
            # a start: at a mark, at the text's start, on or after whitespace (byte-level BPE's "Ġ" pieces
            # start at the space); not a piece that shares its start with the previous one (bytes of one
            # character)
            at_mark = np.isin(starts, cuts)
            space = np.fromiter((c.isspace() for c in text), dtype=bool, count=len(text))
            after_space = np.zeros(len(starts), dtype=bool)
            valid = (starts > 0) & (starts <= len(text))
            after_space[valid] = space[starts[valid] - 1]
            on_space = np.zeros(len(starts), dtype=bool)
            inside_text = starts < len(text)
            on_space[inside_text] = space[starts[inside_text]]
            first = at_mark | after_space | on_space | (starts == 0)
            first[1:] &= starts[1:] != starts[:-1]
            np.add.at(initial, ids[first], 1)
            np.add.at(inside, ids[~first], 1)
    return [int(i) for i in np.flatnonzero(initial > inside)]
