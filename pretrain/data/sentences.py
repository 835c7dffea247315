"""A rule-based sentence splitter for Korean, German and English text (for MLM sentence data).

Line breaks always end a sentence (headings, list items and paragraphs are separate units). Inside
a line, a sentence ends at ``. ! ? …`` (and their full-width forms), optionally followed by closing
quotes or brackets, when whitespace and then a plausible sentence start follow: an upper-case
letter, a Hangul syllable, a digit or an opening quote. It does not end after
  * known abbreviations (German ``z. B.``, ``bzw.``, ``Nr.``, ``Dr.``; English ``e.g.``, ``Mr.``),
  * a single letter (initials: ``J. S. Bach``), or
  * a bare number (German ordinals and dates: ``am 3. Oktober``, ``19. Jahrhundert``).
Korean needs no case: ``...합니다. 다음...`` splits on the full stop followed by a Hangul syllable.
"""

from __future__ import annotations

import re

_ABBREVIATIONS = frozenset(
    """
    abb abs abschn anm art aufl bd bzw ca chr co corp dgl dipl dr ebd etc evtl ff fr frl ggf hr hrsg
    inc insb jh jr kap kl lt ltd max min mio mr mrs ms mrd nr o.ä od pkt prof rd s sog std str tel
    u.a u.ä usw v vgl vs z.b z.t zb zit zzgl d.h e.g i.e u.s bspw inkl ggü bsp mind
    """.split()
)
_END = re.compile(
    r"""(?P<stop>[.!?…。！？]+)["'”’»«)\]]*"""  # terminator + closing quotes/brackets
    r"""(?=\s+["'“„‚«»(\[]*[A-ZÄÖÜ0-9\u1100-\u11ff\u3130-\u318f\uac00-\ud7a3])""",
)
_WORD_BEFORE = re.compile(r"(\S+)$")


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text``, stripped, in order; blank ones dropped."""
    sentences: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        start = 0
        for match in _END.finditer(line):
            if match.group("stop") == "." and _is_abbreviation(line, match.start()):
                continue
            piece = line[start : match.end()].strip()
            if piece:
                sentences.append(piece)
            start = match.end()
        rest = line[start:].strip()
        if rest:
            sentences.append(rest)
    return sentences


def _is_abbreviation(line: str, stop: int) -> bool:
    """Is the full stop at ``stop`` part of an abbreviation, an initial or an ordinal number?"""
    found = _WORD_BEFORE.search(line, 0, stop)
    if not found:
        return False
    word = found.group(1).lstrip("\"'“„‚«»([").lower()
    if word.isdigit() or (len(word) == 1 and word.isalpha()):
        return True
    return word in _ABBREVIATIONS or word.rstrip(".") in _ABBREVIATIONS
