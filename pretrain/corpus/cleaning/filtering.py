"""Worker side of cleaning: a chunk of raw records in; the documents that pass the quality rules out,
with their exact-dedup hash and MinHash signature, and what each rule removed."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from pretrain.corpus.cleaning.dedup import NearDupSettings, Signer, exact_hash
from pretrain.corpus.cleaning.rules import Rules, detect_language, judge, rules_for
from pretrain.corpus.json_path import parse_path
from pretrain.corpus.normalization import normalize
from pretrain.corpus.parsing import Problem, parse_chunk
from pretrain.corpus.types import Chunk

EXAMPLES = 3


@dataclass(frozen=True)
class FilterSettings:
    language: str  # ko, de or auto (per document)
    disabled: tuple[str, ...]
    settings: tuple[str, ...]
    near: NearDupSettings
    normalization: str
    json_keys: tuple[str, ...]
    json_path: str | None


@dataclass
class RuleCounts:
    documents: Counter = field(default_factory=Counter)
    bytes: Counter = field(default_factory=Counter)
    examples: dict = field(default_factory=dict)  # rule -> [(where, why, excerpt)]

    def add(self, rule: str, documents: int, size: int, example: tuple | None = None) -> None:
        self.documents[rule] += documents
        self.bytes[rule] += size
        if example and len(self.examples.setdefault(rule, [])) < EXAMPLES:
            self.examples[rule].append(example)

    def merge(self, other: RuleCounts) -> None:
        self.documents.update(other.documents)
        self.bytes.update(other.bytes)
        for rule, examples in other.examples.items():
            room = EXAMPLES - len(self.examples.setdefault(rule, []))
            self.examples[rule].extend(examples[:room])


@dataclass
class FilteredChunk:
    records: list[dict]  # the documents kept, as output records
    hashes: np.ndarray  # their exact-dedup hashes
    signatures: np.ndarray  # [documents, num_perm] uint32
    counts: RuleCounts
    input_documents: int
    input_bytes: int
    disk_bytes: int
    normalized: int
    problems: list[Problem]
    truncated: bool


def excerpt(text: str, size: int = 160) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= size else flat[:size] + "…"


class ChunkFilter:
    """Parse, normalize and judge chunks; one instance per worker process."""

    def __init__(self, settings: FilterSettings) -> None:
        self.settings = settings
        languages = ("ko", "de") if settings.language == "auto" else (settings.language,)
        self.rules: dict[str, Rules] = {lang: rules_for(lang, list(settings.disabled), list(settings.settings))
                                        for lang in languages}
        self.signer = Signer(settings.near)
        self.json_path = parse_path(settings.json_path) if settings.json_path else None

    def __call__(self, chunk: Chunk) -> FilteredChunk:
        key = self.settings.json_keys[0]
        keys = (key, "title") if chunk.mode in ("mediawiki", "namumark") and key != "title" else (key,)
        parsed = parse_chunk(chunk, keys, self.json_path)
        titles = parsed.texts.get("title")
        counts = RuleCounts()
        records, hashes, signatures, normalized, total = [], [], [], 0, 0
        for index, (line, raw) in enumerate(zip(parsed.lines, parsed.texts[key])):
            size = len(raw.encode("utf-8", "replace"))
            total += size
            text, changed = normalize(raw, self.settings.normalization)
            normalized += changed
            where = f"{chunk.source}:{line}"
            language = detect_language(text) if self.settings.language == "auto" else self.settings.language
            verdict = judge(text, self.rules[language])
            cleaned = verdict.text
            if verdict.removed_lines:
                counts.add("boilerplate", 0, size - len(cleaned.encode("utf-8", "replace")),
                           (where, "a line removed", excerpt(verdict.removed_lines[0])))
            if verdict.rule:
                counts.add(verdict.rule, 1, size, (where, verdict.why, excerpt(text)))
                continue
            record = {"text": cleaned, "source": chunk.source, "position": line, "language": language}
            if titles is not None and key != "title":
                record["title"] = titles[index]
            records.append(record)
            hashes.append(exact_hash(cleaned))
            if "near" not in self.settings.disabled:
                signatures.append(self.signer(cleaned))
        num_perm = self.settings.near.num_perm
        return FilteredChunk(
            records, np.array(hashes, dtype=np.uint64),
            np.stack(signatures) if signatures else np.zeros((0, num_perm), dtype=np.uint32), counts,
            len(parsed.lines), total, chunk.disk_bytes, normalized, parsed.problems, chunk.truncated)


_filter: ChunkFilter | None = None  # this worker process's filter, set once by the pool initializer


def init_worker(settings: FilterSettings) -> None:
    global _filter
    _filter = ChunkFilter(settings)


def filter_in_worker(chunk: Chunk) -> FilteredChunk:
    assert _filter is not None, "init_worker was not called"
    return _filter(chunk)
