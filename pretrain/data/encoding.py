"""Worker side of preprocessing: a chunk of raw records in, flat token arrays out.

Each worker holds one single-threaded ``tokenizers.Tokenizer`` (built from JSON, no transformers,
no torch: a worker stays near 100 MB) and encodes a whole chunk with one ``encode_batch`` call.
Results are three flat numpy arrays per key, cheap to send back and to append to the ``.bin``.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from pretrain.corpus.json_path import parse_path
from pretrain.corpus.normalization import normalize
from pretrain.corpus.parsing import Problem, find_unencodable, parse_chunk, surrogate_problem
from pretrain.corpus.sources import Chunk
from pretrain.data.sentences import split_sentences


@dataclass(frozen=True)
class EncodeSettings:
    tokenizer_json: str
    keys: tuple[str, ...]
    split_sentences: bool
    append_eod: bool
    eod_id: int
    dtype: str
    normalization: str = "nfc"
    json_path: str | None = None
    bos_id: int | None = None  # with append_eod: the tokenizer's BOS, put before each document
    max_document_bytes: int = 16 << 20  # larger documents are bad input: encoding one takes ~300x its size in memory


@dataclass
class EncodedKey:
    tokens: np.ndarray
    sequence_lengths: np.ndarray
    sequences_per_document: np.ndarray
    empty: int  # documents with no text (or no sentence) for this key, skipped


@dataclass
class EncodedChunk:
    encoded: dict[str, EncodedKey]
    records: int
    text_bytes: int
    disk_bytes: int
    truncated: bool
    source: str
    problems: list[Problem] = field(default_factory=list)
    normalized: int = 0  # documents that were not in the normalization form


class ChunkEncoder:
    """Parse and encode chunks; one instance per worker process."""

    def __init__(self, settings: EncodeSettings) -> None:
        from tokenizers import Tokenizer

        self.settings = settings
        self.tokenizer = Tokenizer.from_str(settings.tokenizer_json)
        # encode_batch_fast skips character offsets, which token files do not need: ~8% faster
        self._encode_batch = getattr(self.tokenizer, "encode_batch_fast", self.tokenizer.encode_batch)
        self.dtype = np.dtype(settings.dtype)
        self.json_path = parse_path(settings.json_path) if settings.json_path else None

    def __call__(self, chunk: Chunk) -> EncodedChunk:
        parsed = parse_chunk(chunk, self.settings.keys, self.json_path)
        result = EncodedChunk({}, len(parsed.lines), input_bytes(chunk), chunk.disk_bytes, chunk.truncated,
                              chunk.source, parsed.problems)
        texts = parsed.texts
        too_large = self._too_large(texts)
        if too_large:
            result.problems += [Problem(chunk.source, parsed.lines[i], "document too large",
                                        f"{size / 2**20:,.0f} MB of text in one document, over --max-document-mb "
                                        f"{self.settings.max_document_bytes / 2**20:g}: encoding it would take about 300 "
                                        "times that in memory. Split it (e.g. at paragraphs), raise --max-document-mb, "
                                        "or pass --skip-bad-input to skip it") for i, size in too_large.items()]
            texts, parsed.lines = _without(texts, parsed.lines, set(too_large))
            result.records = len(parsed.lines)
        if self.settings.normalization != "none":
            for values in texts.values():
                for index, text in enumerate(values):
                    values[index], changed = normalize(text, self.settings.normalization)
                    result.normalized += changed
        try:
            result.encoded = {key: self._encode(texts[key]) for key in self.settings.keys}
        except Exception:  # noqa: BLE001 - tokenizers raises plain exceptions for bad strings
            bad = sorted({i for key in self.settings.keys for i in find_unencodable(texts[key])})
            if not bad:
                raise
            result.problems += [surrogate_problem(chunk.source, parsed.lines[i]) for i in bad]
            texts, lines = _without(texts, parsed.lines, set(bad))
            result.records = len(lines)
            result.encoded = {key: self._encode(texts[key]) for key in self.settings.keys}
        return result

    def _too_large(self, texts: dict[str, list[str]]) -> dict[int, int]:
        """Record index -> UTF-8 bytes of its largest text, for records over the limit (a string's length in
        characters bounds its bytes from below and a quarter of them from above: most need no encoding)."""
        limit, out = self.settings.max_document_bytes, {}
        for values in texts.values():
            for index, text in enumerate(values):
                if len(text) * 4 > limit and (size := len(text.encode("utf-8", "surrogatepass"))) > limit:
                    out[index] = max(size, out.get(index, 0))
        return out

    def _encode(self, documents: Sequence[str]) -> EncodedKey:
        if self.settings.split_sentences:
            per_document = [split_sentences(doc) for doc in documents]
            counts = np.fromiter(map(len, per_document), np.int64, len(per_document))
            pieces = list(itertools.chain.from_iterable(per_document))
        else:
            counts = np.fromiter((1 if doc.strip() else 0 for doc in documents), np.int64, len(documents))
            pieces = [doc for doc, n in zip(documents, counts) if n]
        ids = [e.ids for e in self._encode_batch(pieces, add_special_tokens=False)]
        kept = counts[counts > 0]
        if self.settings.append_eod:
            ends = np.cumsum(kept)
            for last in ends - 1:
                ids[last].append(self.settings.eod_id)
            if self.settings.bos_id is not None:  # as the tokenizer encodes a text for a causal LM
                for first in ends - kept:
                    ids[first].insert(0, self.settings.bos_id)
        lengths = np.fromiter(map(len, ids), np.int32, len(ids))
        tokens = np.fromiter(itertools.chain.from_iterable(ids), self.dtype, int(lengths.sum()))
        return EncodedKey(tokens, lengths, kept, int(len(counts) - len(kept)))


def _without(texts: dict[str, list[str]], lines: list[int], drop: set[int]) -> tuple[dict[str, list[str]], list[int]]:
    """The records' texts (per key) and line numbers, those at the indices ``drop`` left out."""
    keep = [i for i in range(len(lines)) if i not in drop]
    return {key: [values[i] for i in keep] for key, values in texts.items()}, [lines[i] for i in keep]


def input_bytes(chunk: Chunk) -> int:
    """The bytes of input a chunk holds (raw lines, a table's columns, or a dump's markup)."""
    if isinstance(chunk.data, bytes):
        return len(chunk.data)
    if isinstance(chunk.data, list):
        return sum(len(item[-1].encode("utf-8", "replace")) if isinstance(item[-1], str) else 0 for item in chunk.data)
    return chunk.data.nbytes


_encoder: ChunkEncoder | None = None  # this worker process's encoder, set once by the pool initializer


def init_worker(settings: EncodeSettings) -> None:
    global _encoder
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one thread per worker: workers are the parallelism
    os.environ["RAYON_NUM_THREADS"] = "1"
    _encoder = ChunkEncoder(settings)


def encode_in_worker(chunk: Chunk) -> EncodedChunk:
    assert _encoder is not None, "init_worker was not called"
    return _encoder(chunk)
