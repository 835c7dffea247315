"""The Namuwiki dump: one JSON array of ``{namespace, title, text, contributors}`` objects (12 GB in one
line), streamed with an incremental JSON parser (ijson), namumark turned into clean text in the workers.

Sharding: the array splits between objects. A record starts where ``{"`` follows the array's ``[`` or a
``,`` (a bare ``"`` cannot sit inside a JSON string, so that pattern never occurs in text); a shard
takes the objects that start in its byte range and reads them as an array of its own. Compressed
dumps go whole to one shard.

Cleaning (``clean_namumark``): the text a reader of the article sees. Links keep their label, files and
categories go; ``'''bold'''``, ``''italic''``, ``__underline__``, ``~~strike~~``, ``--strike--``,
``^^sup^^``, ``,,sub,,`` keep their text; ``{{{#!wiki …}}}`` and ``{{{#!folding …}}}`` keep their content,
``{{{+1 …}}}`` / ``{{{#red …}}}`` their text, ``{{{literal}}}`` its literal; ``{{{#!syntax …}}}`` and
``{{{#!html …}}}`` go; tables, footnotes ``[* …]``, macros (``[include(…)]``, ``[목차]``, ``[youtube(…)]``;
``[br]`` becomes a line break), ``##`` comments and horizontal rules go; headings stay as lines, quotes
and list items lose their markers.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

from pretrain.corpus.normalization import join_paragraphs
from pretrain.corpus.region import Region

ARTICLE_NAMESPACES = {0, "0", "", "문서"}
HIDDEN_LINK_PREFIXES = ("파일:", "분류:", "file:", "category:")
BRACES = re.compile(r"\{\{\{|\}\}\}")
HEADING = re.compile(r"^(={1,6})#?\s*(.*?)\s*#?\1$")
LIST_MARKER = re.compile(r"^\s+(\*|\d+\.|[aAiI]\.)(#\d+)?\s*")
STYLE_PAIRS = [re.compile(p) for p in (r"~~(.+?)~~", r"--(.+?)--", r"__(.+?)__", r"\^\^(.+?)\^\^", r",,(.+?),,")]
MACRO = re.compile(r"\[(?!\*)([^\[\]\s(]+)(\([^\[\]]*\))?\]")
COLOR_OR_SIZE = re.compile(r"(#[0-9A-Za-z,#]+|[+-][1-5])\s")


# ---------------------------------------------------------------------------------------- reading
def record_start(path: str, offset: int) -> int:
    """The first record (object) start at or after byte ``offset`` of an uncompressed dump (its size if none)."""
    size = os.path.getsize(path)
    if offset <= 0:
        return 0
    with open(path, "rb") as handle:
        handle.seek(max(0, offset - 64))
        position = handle.tell()
        data = handle.read(1 << 20)
        while True:
            for match in re.finditer(rb"[\[,]\s*\{\"", data):
                at = position + match.end() - 2
                if at >= offset:
                    return at
            if position + len(data) >= size:
                return size
            position += len(data) - 64
            handle.seek(position)
            data = handle.read(1 << 20)


class ArrayRegion:
    """The objects of ``[start, end)`` (record starts) of a JSON array, readable as an array of their own."""

    def __init__(self, path: str, start: int, end: int) -> None:
        size = os.path.getsize(path)
        self._prefix = b"" if start == 0 else b"["
        self._suffix = b"" if end >= size else b"]"
        if end < size:  # stop before the separator: "...}," + whitespace + the next record
            with open(path, "rb") as handle:
                handle.seek(max(start, end - 64))
                tail = handle.read(end - handle.tell())
            end -= len(tail) - tail.rstrip().rstrip(b",").__len__()
        self.region = Region(path, start, end)

    def read(self, size: int = -1) -> bytes:
        if size == 0:  # ijson asks for nothing first, to learn whether the stream gives bytes
            return b""
        if self._prefix:
            out, self._prefix = self._prefix, b""
            return out
        data = self.region.read(size)
        if not data and self._suffix:
            data, self._suffix = self._suffix, b""
        return data

    def consumed(self) -> int:
        return self.region.consumed()

    def close(self) -> None:
        self.region.close()


def iter_articles(stream) -> Iterator[tuple[int, str, str]]:
    """(record number, title, namumark) of the article records of a JSON array read from ``stream``."""
    import ijson

    for number, record in enumerate(ijson.items(stream, "item"), 1):
        if not isinstance(record, dict):
            raise ValueError(f"record {number} is a {type(record).__name__}, not an object")
        if record.get("namespace", 0) in ARTICLE_NAMESPACES and isinstance(record.get("text"), str):
            yield number, str(record.get("title", "")), record["text"]


# --------------------------------------------------------------------------------------- cleaning
def clean_namumark(text: str) -> str:
    """The article's text as its reader sees it (see the module docstring)."""
    lines, in_table = [], False
    for raw in _blocks(text).split("\n"):
        line = raw.strip()
        if in_table or line.startswith("||"):
            in_table = not (line.endswith("||") and (len(line) > 2 or not in_table))
            continue
        if line.startswith("##") or re.fullmatch(r"-{4,9}", line):
            continue
        heading = HEADING.match(line)
        if heading:
            lines.append(_inline(heading.group(2)))
            continue
        line = line.lstrip(">").strip() if line.startswith(">") else LIST_MARKER.sub("", raw).strip()
        lines.append(_inline(line))
    return join_paragraphs("\n".join(lines).split("\n"))


def _blocks(text: str) -> str:
    """``{{{ … }}}`` blocks (nested) replaced by what they show."""
    out, position, depth, opened = [], 0, 0, 0
    for match in BRACES.finditer(text):
        if match.group() == "{{{":
            if depth == 0:
                out.append(text[position : match.start()])
                opened = match.end()
            depth += 1
        elif depth:
            depth -= 1
            if depth == 0:
                out.append(_block(text[opened : match.start()]))
                position = match.end()
    out.append(text[opened:] if depth else text[position:])
    return "".join(out)


def _block(inner: str) -> str:
    if inner.startswith(("#!wiki", "#!folding")):
        return "\n" + _blocks(inner.split("\n", 1)[1] if "\n" in inner else "") + "\n"
    if inner.startswith("#!"):
        return ""  # #!syntax, #!html and other code blocks
    style = COLOR_OR_SIZE.match(inner)
    return _blocks(inner[style.end():]) if style else inner


def _inline(line: str) -> str:
    line = _bracketed(line, "[*", "]", lambda inner: "")  # footnotes
    line = _bracketed(line, "[[", "]]", _link)
    line = MACRO.sub(lambda m: "\n" if m.group(1).lower() == "br" else "", line)
    line = line.replace("'''", "").replace("''", "")
    for pattern in STYLE_PAIRS:
        line = pattern.sub(r"\1", line)
    return line


def _link(inner: str) -> str:
    target, _, label = inner.partition("|")
    if target.strip().lower().startswith(HIDDEN_LINK_PREFIXES):
        return ""
    if label:
        return label
    return target.strip().lstrip(":").split("#")[0] if not target.startswith(("http://", "https://")) else ""


SQUARE = re.compile(r"[\[\]]")


def _bracketed(text: str, opener: str, closer: str, replace) -> str:
    """Replace each ``opener … closer`` span (brackets inside balanced) by ``replace(inner)``."""
    out, position = [], 0
    while True:
        start = text.find(opener, position)
        if start < 0:
            break
        depth, cursor = 0, -1
        for bracket in SQUARE.finditer(text, start):
            depth += 1 if bracket.group() == "[" else -1
            if depth == 0:
                cursor = bracket.start()
                break
        if cursor < 0:  # unbalanced: leave the rest as it is
            break
        inner = text[start + len(opener) : cursor - len(closer) + 1]
        out += [text[position:start], replace(inner)]
        position = cursor + 1
    out.append(text[position:])
    return "".join(out)
