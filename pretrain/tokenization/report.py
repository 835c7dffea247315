"""How well a tokenizer fits real text, per language: the measurements behind ``pretrain-tokenizer-report``.

For each document (its language decided from its letters: ko, de or other) the tokenizer's ids and
offsets give, without any analyzer:
  * tokens per word: tokens / whitespace-delimited words (a Korean eojeol is one word),
  * characters and UTF-8 bytes per token,
  * the share of words cut into three or more pieces (tokens overlapping the word),
  * the fallback rate: tokens that are the unknown token, a SentencePiece byte piece (<0xEA>), or a
    byte-level piece that is not a whole character (a syllable spelled in bytes),
  * the share of the vocabulary used (ordinary pieces, special tokens left out),
  * round-trip exactness: documents whose decode(encode(text)) is the text (or its NFC form).
With ``morphemes`` (Korean, needs the analyzer) also the share of Korean tokens that span a morpheme
boundary inside an eojeol, and the share of the distinct pieces used that ever do.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from pretrain.tokenization.loading import LoadedTokenizer

LANGUAGES = ("ko", "de", "other")
_WORD = re.compile(r"\S+")
_GERMAN = frozenset("der die das und ist nicht ein eine einen zu den mit von sich auf für im dem des "
                    "wird werden sie es ich auch oder wenn als bei aus nach wie noch nur".split())
_SPM_BYTE = re.compile(r"^<0x[0-9A-F]{2}>$")
_BATCH = 64


def document_language(text: str) -> str:
    """ko where a fifth of the letters are Hangul (as the cleaner decides); de where the Latin words
    hold German function words (8% or more of them); other otherwise."""
    letters = hangul = 0
    for ch in text[:20000]:
        if ch.isalpha():
            letters += 1
            hangul += "\uac00" <= ch <= "\ud7a3" or "\u1100" <= ch <= "\u11ff" or "\u3130" <= ch <= "\u318f"
    if letters and hangul / letters >= 0.2:
        return "ko"
    words = [w.strip(".,;:!?()\"'").lower() for w in text[:20000].split()]
    if words and sum(w in _GERMAN for w in words) / len(words) >= 0.08:
        return "de"
    return "other"


def byte_level_alphabet() -> dict[str, int]:
    """GPT-2's byte-level alphabet, character -> byte: printable bytes stand for themselves, the others
    (space, control bytes...) for the characters from U+0100 on, in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping = {chr(b): b for b in printable}
    shifted = 0
    for byte in range(256):
        if byte not in printable:
            mapping[chr(256 + shifted)] = byte
            shifted += 1
    return mapping


def fallback_ids(tokenizer: LoadedTokenizer) -> np.ndarray:
    """Per id: is it an unknown token, a SentencePiece byte piece, or a byte-level piece that is not a
    whole UTF-8 character sequence?"""
    flags = np.zeros(tokenizer.vocab_size, dtype=bool)
    vocab = tokenizer.backend.get_vocab(with_added_tokens=True)
    unk = getattr(tokenizer.backend.model, "unk_token", None)
    to_byte = byte_level_alphabet()
    for token, index in vocab.items():
        if token == unk or _SPM_BYTE.match(token):
            flags[index] = True
        elif tokenizer.family == "byte_bpe" and all(ch in to_byte for ch in token):
            try:
                bytes(to_byte[ch] for ch in token).decode("utf-8")
            except UnicodeDecodeError:
                flags[index] = True
    return flags


@dataclass
class LanguageStats:
    """Running sums for one tokenizer and one language."""

    documents: int = 0
    words: int = 0
    characters: int = 0
    bytes: int = 0
    tokens: int = 0
    words_3plus: int = 0
    fallback: int = 0
    round_trip_exact: int = 0
    hangul_tokens: int = 0
    crossing_tokens: int = 0
    used: np.ndarray | None = None
    crossing_pieces: set = field(default_factory=set)

    def summary(self, ordinary: np.ndarray, morphemes: bool) -> dict:
        out = {
            "documents": self.documents, "words": self.words, "tokens": self.tokens,
            "tokens_per_word": self.tokens / max(self.words, 1),
            "chars_per_token": self.characters / max(self.tokens, 1),
            "bytes_per_token": self.bytes / max(self.tokens, 1),
            "words_3plus_pieces": self.words_3plus / max(self.words, 1),
            "fallback_rate": self.fallback / max(self.tokens, 1),
            "vocab_used": float((self.used & ordinary).sum() / max(ordinary.sum(), 1)) if self.used is not None else 0.0,
            "round_trip_exact": self.round_trip_exact / max(self.documents, 1),
        }
        if morphemes:
            pieces = int((self.used & ordinary).sum()) if self.used is not None else 0
            out["tokens_crossing_morphemes"] = self.crossing_tokens / max(self.hangul_tokens, 1)
            out["pieces_crossing_morphemes"] = len(self.crossing_pieces) / max(pieces, 1)
        return out


def pieces_per_word(text: str, offsets: list[tuple[int, int]]) -> np.ndarray:
    """How many tokens overlap each whitespace-delimited word of ``text``."""
    spans = np.array([m.span() for m in _WORD.finditer(text)], dtype=np.int64).reshape(-1, 2)
    counts = np.zeros(len(spans) + 1, dtype=np.int64)
    if len(spans) == 0 or not offsets:
        return counts[:-1]
    token = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    token = token[token[:, 1] > token[:, 0]]
    first = np.searchsorted(spans[:, 1], token[:, 0], side="right")  # first word ending after the token starts
    last = np.searchsorted(spans[:, 0], token[:, 1], side="left") - 1  # last word starting before it ends
    hit = first <= last
    np.add.at(counts, first[hit], 1)
    np.add.at(counts, last[hit] + 1, -1)
    return np.cumsum(counts)[:-1]


class TokenizerMeasure:
    """Feeds documents through one tokenizer and keeps per-language sums."""

    def __init__(self, tokenizer: LoadedTokenizer, morphemes: bool = False) -> None:
        self.tokenizer = tokenizer
        self.morphemes = morphemes
        self.fallback = fallback_ids(tokenizer)
        self.ordinary = np.ones(tokenizer.vocab_size, dtype=bool)
        self.ordinary[list(tokenizer.specials.ids.values())] = False
        for token in tokenizer.backend.get_added_tokens_decoder().values():
            if token.special and tokenizer.backend.token_to_id(token.content) is not None:
                self.ordinary[tokenizer.backend.token_to_id(token.content)] = False
        self.stats = {language: LanguageStats(used=np.zeros(tokenizer.vocab_size, dtype=bool)) for language in LANGUAGES}

    def add(self, documents: list[tuple[str, str, list[int] | None]]) -> None:
        """(text, language, morpheme boundaries or None) per document."""
        encodings = self.tokenizer.backend.encode_batch([d[0] for d in documents], add_special_tokens=False)
        decoded = self.tokenizer.backend.decode_batch([e.ids for e in encodings], skip_special_tokens=False)
        for (text, language, cuts), encoding, back in zip(documents, encodings, decoded):
            stats = self.stats[language]
            ids = np.asarray(encoding.ids, dtype=np.int64)
            pieces = pieces_per_word(text, encoding.offsets)
            stats.documents += 1
            stats.words += len(pieces)
            stats.words_3plus += int((pieces >= 3).sum())
            stats.characters += len(text)
            stats.bytes += len(text.encode("utf-8", "replace"))
            stats.tokens += len(ids)
            stats.fallback += int(self.fallback[ids].sum())
            stats.used[ids] = True
            stats.round_trip_exact += back == text or back == unicodedata.normalize("NFC", text)
            if cuts is not None:
                self._crossings(stats, text, ids, encoding.offsets, cuts)

    def _crossings(self, stats: LanguageStats, text: str, ids: np.ndarray, offsets, cuts: list[int]) -> None:
        spans = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
        hangul = np.fromiter(("\uac00" <= text[s] <= "\ud7a3" if s < len(text) else False for s, _ in offsets),
                             dtype=bool, count=len(offsets))
        # first cut at or after each token's start + 1; it crosses when that cut is before the token's end
        cut = np.asarray(sorted(cuts), dtype=np.int64)
        nxt = np.searchsorted(cut, spans[:, 0], side="right")
        crossing = np.zeros(len(spans), dtype=bool)
        inside = nxt < len(cut)
        crossing[inside] = cut[nxt[inside]] < spans[inside, 1]
        stats.hangul_tokens += int(hangul.sum())
        stats.crossing_tokens += int((crossing & hangul).sum())
        stats.crossing_pieces.update(ids[crossing & hangul].tolist())

    def results(self) -> dict[str, dict]:
        return {language: {"vocab_size": self.tokenizer.vocab_size,
                           **stats.summary(self.ordinary, self.morphemes and language == "ko")}
                for language, stats in self.stats.items() if stats.documents}


def measure(tokenizers: dict[str, LoadedTokenizer], texts: Iterable[str], morphemes: bool = False,
            analyzer: str | None = None) -> dict[str, dict[str, dict]]:
    """{tokenizer name: {language: measurements}} over ``texts`` (streamed in batches)."""
    from pretrain.tokenization.morpheme_starts import unmark
    from pretrain.tokenization.morphemes import DEFAULT_ANALYZER, MorphemeMarker

    marker = MorphemeMarker(analyzer or DEFAULT_ANALYZER, "none") if morphemes else None
    measures = {name: TokenizerMeasure(tok, morphemes) for name, tok in tokenizers.items()}
    batch: list[tuple[str, str, list[int] | None]] = []

    def flush() -> None:
        for m in measures.values():
            m.add(batch)
        batch.clear()

    for text in texts:
        language = document_language(text)
        cuts = None
        if marker is not None and language == "ko":
            text, positions = unmark(marker(text))
            cuts = positions.tolist()
        batch.append((text, language, cuts))
        if len(batch) >= _BATCH:
            flush()
    if batch:
        flush()
    return {name: m.results() for name, m in measures.items()}
