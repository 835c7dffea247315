"""The quality rules' counting in plain Python, one character and one n-gram at a time, as first written:
the specification that pretrain/corpus/cleaning/rules.py's faster counting must match exactly."""

from __future__ import annotations

from collections import Counter


def is_hangul(ch: str) -> bool:
    return "\uac00" <= ch <= "\ud7a3" or "\u1100" <= ch <= "\u11ff" or "\u3130" <= ch <= "\u318f"


def detect_language(text: str) -> str:
    letters = hangul = 0
    for ch in text[:4000]:
        if ch.isalpha():
            letters += 1
            hangul += is_hangul(ch)
    return "ko" if letters and hangul / letters >= 0.2 else "de"


def script_share(text: str, language: str) -> float:
    letters = inside = 0
    for ch in text:
        if ch.isalpha():
            letters += 1
            if language == "ko":
                inside += is_hangul(ch)
            else:
                inside += ch < "\u0250" or "\u1e00" <= ch <= "\u1eff"
    return inside / letters if letters else 0.0


def ngram_problem(words: list[str], top: dict[int, float], duplicate: dict[int, float]) -> str | None:
    """Gopher's n-gram limits over every n-gram of every n: the top n-grams, then the duplicate ones."""
    word_chars = sum(map(len, words)) or 1
    for n, limit in top.items():
        if len(words) >= n:
            gram, count = Counter(zip(*(words[i:] for i in range(n)))).most_common(1)[0]
            if count > 1 and count * sum(map(len, gram)) / word_chars > limit:
                return f"top {n}-gram covers too much"
    for n, limit in duplicate.items():
        if len(words) < n:
            continue
        seen, covered = set(), [False] * len(words)
        for i in range(len(words) - n + 1):
            gram = tuple(words[i : i + n])
            if gram in seen:
                covered[i : i + n] = [True] * n
            else:
                seen.add(gram)
        if sum(len(w) for w, c in zip(words, covered) if c) / word_chars > limit:
            return f"duplicate {n}-grams cover too much"
    return None
