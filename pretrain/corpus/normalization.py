"""Unicode normalization of documents before they are tokenized or cleaned, and the paragraph shape
that the wiki readers give their text.

Korean often arrives decomposed (NFD: 한 as ᄒ + ᅡ + ᆫ), and a tokenizer without a normalizer of its own
would turn such text into jamo pieces; NFC composes it. ``is_normalized`` is a fast scan, so text
already in NFC (almost all of it) costs one pass and no copy."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

NORMALIZATIONS = ("nfc", "nfkc", "none")


def normalize(text: str, form: str) -> tuple[str, bool]:
    """(the text in ``form``, whether it changed); ``form`` "none" leaves it as it is."""
    if form == "none":
        return text, False
    name = form.upper()
    if unicodedata.is_normalized(name, text):
        return text, False
    return unicodedata.normalize(name, text), True


def join_paragraphs(lines: Iterable[str]) -> str:
    """Lines with their white space collapsed, lines without a letter or digit dropped, and one blank
    line between paragraphs (where blank or dropped lines stood), none at either end."""
    out, blank = [], False
    for raw in lines:
        line = " ".join(raw.split())
        if not line or not any(ch.isalnum() for ch in line):
            blank = bool(out)
            continue
        if blank:
            out.append("")
        out.append(line)
        blank = False
    return "\n".join(out)
