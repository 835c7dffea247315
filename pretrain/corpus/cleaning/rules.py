"""Quality rules for Korean and German web and wiki text, with per-language defaults.

Each rule has a name (the report counts documents and bytes by it), can be switched off, and has
parameters that ``--set name.param=value`` tunes:

  boilerplate  lines that are page furniture (cookie and privacy notices, "all rights reserved", share
               buttons, 로그인 / 회원가입, Impressum ...) are removed from the document (counted in bytes)
  length       a document shorter than ``min_chars`` characters (after boilerplate) is dropped
  script       a document whose letters are less than ``min_share`` in the language's script (Hangul for
               ko, Latin for de) is dropped: mostly another language, or markup and code
  repetition   Gopher's repetition rules (Rae et al. 2021): too many duplicate lines or paragraphs (by count
               and by characters), a top 2/3/4-gram covering too many characters, duplicate 5..10-grams
               covering too many characters; words are whitespace-separated (a Korean eojeol is one)

Exact and near-duplicate removal (rules ``exact`` and ``near``) live in ``dedup.py``.
"""

from __future__ import annotations

import functools
import re
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, fields, replace

import numpy as np

LANGUAGES = ("ko", "de")
RULES = ("boilerplate", "length", "script", "repetition", "exact", "near")

BOILERPLATE = {
    "common": [r"cookies?\b", r"all rights reserved", r"copyright\s*(©|\(c\))", r"^©", r"javascript",
               r"\bshare (on|this)\b", r"^(facebook|twitter|instagram|youtube|kakaotalk)$"],
    "ko": [r"무단\s*(전재|복제|배포)", r"저작권자\s*©", r"로그인", r"회원가입", r"개인정보\s*(처리|취급)\s*방침",
           r"이용약관", r"^(공유하기|목록|이전글|다음글|댓글\s*\d*|맨\s*위로)$", r"기자\s+[\w.+-]+@"],
    "de": [r"^impressum$", r"datenschutz(erklärung|hinweise)?", r"alle rechte vorbehalten", r"nutzungsbedingungen",
           r"^(anmelden|registrieren|teilen|drucken|nach oben|zurück)$", r"newsletter abonnieren"],
}


@dataclass(frozen=True)
class Rules:
    """The parameters of every rule for one language."""

    language: str
    min_chars: int = 200
    min_script_share: float = 0.8
    max_duplicate_line_share: float = 0.30
    max_duplicate_line_chars: float = 0.20
    max_duplicate_paragraph_share: float = 0.30
    max_duplicate_paragraph_chars: float = 0.20
    max_top_ngram_chars: dict = field(default_factory=lambda: {2: 0.20, 3: 0.18, 4: 0.16})
    max_duplicate_ngram_chars: dict = field(default_factory=lambda: {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11,
                                                                     10: 0.10})
    boilerplate_max_line_chars: int = 200  # only short lines can be furniture
    disabled: frozenset = frozenset()

    def enabled(self, rule: str) -> bool:
        return rule not in self.disabled


DEFAULTS = {
    # Korean packs more per character: a third of German's length; many Korean pages quote English
    "ko": Rules("ko", min_chars=100, min_script_share=0.4),
    "de": Rules("de", min_chars=200, min_script_share=0.8),
}


def rules_for(language: str, disabled: list[str] | None = None, settings: list[str] | None = None) -> Rules:
    """The language's defaults with rules switched off and parameters set (``min_chars=150``); every
    problem is reported at once."""
    if language not in DEFAULTS:
        raise ValueError(f"--language {language!r}: choose one of {', '.join(LANGUAGES)} (or auto)")
    problems = [f"--disable {name!r} is not a rule ({', '.join(RULES)})" for name in disabled or [] if name not in RULES]
    changes = {}
    types = {f.name: f.type for f in fields(Rules)}
    for item in settings or []:
        key, sep, value = item.partition("=")
        if not sep or key not in types or key in ("language", "disabled", "max_top_ngram_chars",
                                                  "max_duplicate_ngram_chars"):
            problems.append(f"--set {item!r}: set one of min_chars, min_script_share, max_duplicate_line_share, "
                            "max_duplicate_line_chars, max_duplicate_paragraph_share, max_duplicate_paragraph_chars, "
                            "boilerplate_max_line_chars as name=value")
            continue
        try:
            changes[key] = int(value) if types[key] == "int" else float(value)
        except ValueError:
            problems.append(f"--set {item!r}: {value!r} is not a number")
    if problems:
        raise ValueError("; ".join(problems))
    return replace(DEFAULTS[language], disabled=frozenset(disabled or ()), **changes)


def detect_language(text: str) -> str:
    """"ko" when a fifth of the letters (of the first 4,000 characters) are Hangul, else "de" (the two
    languages this tool has rules for)."""
    letters, hangul, _ = letter_counts(text[:4000])
    return "ko" if letters and hangul / letters >= 0.2 else "de"


# A class per code point, looked up in numpy instead of a Python test per character (8x faster)
ALPHA, HANGUL, LATIN = 1, 2, 4  # a letter (str.isalpha); Hangul syllables and jamo; Latin (see script_share)
HANGUL_RANGES = ((0xAC00, 0xD7A3), (0x1100, 0x11FF), (0x3130, 0x318F))
LATIN_RANGES = ((0x0000, 0x024F), (0x1E00, 0x1EFF))  # Basic Latin to Latin Extended-B, Latin Extended Additional


@functools.cache
def code_point_classes() -> np.ndarray:
    """ALPHA | HANGUL | LATIN bits of every code point (1.1 MB, built once per process in about 0.2 s)."""
    size = sys.maxunicode + 1
    table = np.fromiter((chr(point).isalpha() for point in range(size)), np.uint8, size)
    for bit, ranges in ((HANGUL, HANGUL_RANGES), (LATIN, LATIN_RANGES)):
        for first, last in ranges:
            table[first : last + 1] |= bit
    return table


def letter_counts(text: str) -> tuple[int, int, int]:
    """(letters, Hangul letters, Latin letters) in ``text``."""
    points = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")
    counts = np.bincount(code_point_classes()[points], minlength=8)
    return int(counts[ALPHA::2].sum()), int(counts[ALPHA | HANGUL]), int(counts[ALPHA | LATIN])


# ------------------------------------------------------------------------------------------ rules
_PATTERNS = {language: re.compile("|".join(BOILERPLATE["common"] + BOILERPLATE[language]), re.IGNORECASE)
             for language in LANGUAGES}


def strip_boilerplate(text: str, rules: Rules) -> tuple[str, list[str]]:
    """(the text without its furniture lines (short lines matching the language's patterns), those lines)."""
    pattern = _PATTERNS[rules.language]
    kept, removed = [], []
    for line in text.split("\n"):
        furniture = len(line) <= rules.boilerplate_max_line_chars and pattern.search(line.strip())
        (removed if furniture else kept).append(line)
    return "\n".join(kept), removed


def script_share(text: str, language: str) -> float:
    """The share of letters written in the language's script: Hangul for ko; for de, Latin (Basic Latin to
    Latin Extended-B, and Latin Extended Additional)."""
    letters, hangul, latin = letter_counts(text)
    return (hangul if language == "ko" else latin) / letters if letters else 0.0


def repetition_problem(text: str, rules: Rules) -> str | None:
    """Which of Gopher's repetition limits the text exceeds, or None (lines, paragraphs, then the n-gram limits
    as ``rules`` lists them: the top n-grams', then the duplicate n-grams')."""
    total = max(len(text), 1)
    lines = [line for line in text.split("\n") if line.strip()]
    for units, share_limit, chars_limit, name in (
            (lines, rules.max_duplicate_line_share, rules.max_duplicate_line_chars, "lines"),
            ([p for p in re.split(r"\n\s*\n", text) if p.strip()], rules.max_duplicate_paragraph_share,
             rules.max_duplicate_paragraph_chars, "paragraphs")):
        if len(units) > 1:
            counts = Counter(units)
            duplicates = [unit for unit in units if counts[unit] > 1]
            if len(duplicates) / len(units) > share_limit:
                return f"duplicate {name} ({len(duplicates)} of {len(units)})"
            if sum(len(unit) for unit, n in counts.items() if n > 1 for _ in range(n - 1)) / total > chars_limit:
                return f"characters in duplicate {name}"
    words = text.split()
    word_chars = sum(map(len, words)) or 1
    top, duplicate = rules.max_top_ngram_chars, rules.max_duplicate_ngram_chars
    figures = NgramFigures(words, top, duplicate)
    for n, limit in top.items():
        count, chars, _ = figures.at(n)
        if len(words) >= n and count > 1 and count * chars / word_chars > limit:
            return f"top {n}-gram covers too much"
    for n, limit in duplicate.items():
        if len(words) >= n and figures.at(n)[2] / word_chars > limit:
            return f"duplicate {n}-grams cover too much"
    return None


class NgramFigures:
    """Gopher's n-gram figures of ``words`` for each n of ``top`` and ``duplicate``, computed level by level
    as far as asked: (how often the most frequent n-gram occurs (the first seen of equals), its characters,
    the characters of the words in every n-gram that occurred before). A level where nothing repeats (and
    every longer one) is (1, 0, 0)."""

    def __init__(self, words: list[str], top: Iterable[int], duplicate: Iterable[int]) -> None:
        self.words, self.top, self.duplicate = words, set(top), set(duplicate)
        wanted = self.top | self.duplicate
        self.levels = repeated_ngrams(words, min(wanted, default=1), max(wanted, default=0))
        self.reached = min(wanted, default=1) - 1
        self.figures: dict[int, tuple[int, int, int]] = {}

    def at(self, n: int) -> tuple[int, int, int]:
        for level, repeated, counts in self.levels if self.reached < n else ():
            self.reached = level
            (gram, count), = counts.most_common(1) if level in self.top else (((), 1),)
            covered: set[int] = set()
            if level in self.duplicate:
                seen: set[tuple] = set()
                for position, gram_at in repeated:
                    if gram_at in seen:
                        covered.update(range(position, position + level))
                    else:
                        seen.add(gram_at)
            self.figures[level] = (count, sum(map(len, gram)), sum(len(self.words[k]) for k in covered))
            if level >= n:
                break
        return self.figures.get(n, (1, 0, 0))


def repeated_ngrams(words: list[str], smallest: int, largest: int) -> Iterator[tuple[int, list[tuple[int, tuple]], Counter]]:
    """For n = ``smallest`` .. ``largest``, while some n-gram occurs more than once: (n, the (position,
    n-gram) of each occurrence of a repeated one in order, every n-gram counted). A repeated n-gram starts
    with a repeated shorter one, so each n looks only at the positions where the (n-1)-gram repeats:
    natural text repeats few, and the work shrinks as n grows (2.6x faster than every n-gram of every n)."""
    positions: Sequence[int] = range(max(len(words) - smallest + 1, 0))
    grams: list[tuple] = list(zip(*(words[i:] for i in range(smallest))))
    for n in range(smallest, largest + 1):
        if n > smallest:
            grams = [tuple(words[i : i + n]) for i in positions]
        counts = Counter(grams)
        if len(counts) == len(grams):  # none repeats (or none is left): no longer one does
            return
        repeated = [(i, gram) for i, gram in zip(positions, grams) if counts[gram] > 1]
        yield n, repeated, counts
        positions = [i for i, _ in repeated if i + n < len(words)]


@dataclass(frozen=True)
class Verdict:
    text: str  # after line-level cleaning
    removed_lines: list[str]  # the furniture lines taken out
    rule: str | None  # the rule that drops the document, or None
    why: str = ""


def judge(text: str, rules: Rules) -> Verdict:
    """Clean the document's lines, then apply the document rules in order; the first that fails drops it."""
    removed: list[str] = []
    if rules.enabled("boilerplate"):
        text, removed = strip_boilerplate(text, rules)
    if rules.enabled("length") and len(text.strip()) < rules.min_chars:
        return Verdict(text, removed, "length", f"{len(text.strip())} characters < {rules.min_chars}")
    if rules.enabled("script"):
        share = script_share(text, rules.language)
        if share < rules.min_script_share:
            return Verdict(text, removed, "script", f"{share:.0%} of the letters in the {rules.language} script < "
                                                    f"{rules.min_script_share:.0%}")
    if rules.enabled("repetition"):
        problem = repetition_problem(text, rules)
        if problem:
            return Verdict(text, removed, "repetition", problem)
    return Verdict(text, removed, None)
