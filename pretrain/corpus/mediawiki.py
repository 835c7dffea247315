"""MediaWiki XML dumps (``*-pages-articles*.xml``, plain or ``.bz2``/``.xz``/...): streamed page by page.

Reading: an XML pull parser fed block by block keeps one page in memory at a time; each finished page
is detached from the tree. Article pages only (namespace 0), redirects skipped (``<redirect/>``, or text
starting with ``#REDIRECT`` and its translations). A dump cut off mid-page yields every complete page
and then reports where it ends.

Sharding: an uncompressed dump splits at ``<page>`` lines; a ``*-multistream.xml.bz2`` with its index
(``*-multistream-index.txt.bz2`` beside it, ``offset:page id:title`` lines) splits at the bz2 streams the
index names, each decompressed on its own; any other compressed dump goes whole to one shard.

Cleaning (in the workers): ``clean_wikitext`` parses wikitext with mwparserfromhell and keeps what a
reader of the article sees: prose, the text of links, headings as lines, list items. Templates, tables,
references, files, categories, interlanguage links, comments, magic words and math go.
"""

from __future__ import annotations

import bz2
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from pretrain.corpus.normalization import join_paragraphs
from pretrain.corpus.types import InputError

REDIRECT = re.compile(r"^\s*#\s*(redirect|넘겨주기|weiterleitung|転送|リダイレクト|redirection|doorverwijzing)", re.I)
MAGIC_WORD = re.compile(r"__[A-Z]{3,}__")
EMPTY_BRACKETS = re.compile(r"[(（]\s*[,;:、，]?\s*[)）]")
QUOTE_RUN = re.compile(r"'{2,}")  # bold / italic markers left unbalanced
# namespaces of links that show nothing in the article: files and categories, in the dumps' languages
HIDDEN_LINK_NAMESPACES = {"file", "image", "media", "category", "파일", "그림", "분류", "datei", "bild", "kategorie",
                          "ファイル", "画像", "カテゴリ", "fichier", "catégorie"}
DROPPED_TAGS = {"ref", "references", "table", "gallery", "math", "chem", "timeline", "score", "graph", "imagemap",
                "syntaxhighlight", "source", "templatedata", "mapframe", "maplink", "inputbox", "categorytree"}
BLOCK_BREAK_TAGS = {"br", "p", "div", "li", "dd", "dt", "tr"}


@dataclass(frozen=True)
class Page:
    page_id: int
    title: str
    text: str


class TruncatedDump(Exception):
    """The dump ends inside a page; every complete page before it was handed out."""

    def __init__(self, after_page: int | None, detail: str) -> None:
        super().__init__(detail)
        self.after_page, self.detail = after_page, detail


# ----------------------------------------------------------------------------------------- pages
def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def iter_pages(blocks: Iterable[bytes]) -> Iterator[Page]:
    """Article pages (namespace 0, not redirects) of the XML in ``blocks``, in order.

    The blocks may hold a whole dump or a run of ``<page>`` elements cut from one (a shard: perhaps with
    the dump's opening ``<mediawiki>`` and siteinfo, perhaps with its closing tag): they are parsed inside
    a wrapping root, the dump's closing tag dropped and what the range leaves open closed at its end, so
    all read alike. Raises TruncatedDump at the end if a page is left open."""
    parser = ET.XMLPullParser(events=("start", "end"))
    parser.feed(b"<pretrain-wrapper>")
    stack: list[ET.Element] = []
    last_id = None
    try:
        for block in _without_root_end(blocks):
            parser.feed(block)
            for page in _finished_pages(parser, stack):
                last_id = page.page_id if page else last_id
                if page is not None:
                    yield page
        if any(_local(element.tag) == "page" for element in stack):
            raise ET.ParseError("the XML ends inside a page")
        for element in reversed(stack[1:]):  # the dump's <mediawiki> when the range holds its start
            parser.feed(f"</{_local(element.tag)}>".encode())
        parser.feed(b"</pretrain-wrapper>")
        for page in _finished_pages(parser, stack):
            if page is not None:
                yield page
        parser.close()
    except ET.ParseError as exc:
        open_page = any(_local(e.tag) == "page" for e in stack)
        raise TruncatedDump(last_id, f"the XML {'ends inside a page' if open_page else 'is not well formed'} "
                                     f"({exc})") from None


def _without_root_end(blocks: Iterable[bytes]) -> Iterator[bytes]:
    """The blocks without the dump's ``</mediawiki>`` (found across block edges too)."""
    tag, carry = b"</mediawiki>", b""
    for block in blocks:
        data = (carry + block).replace(tag, b"")
        carry, data = data[-len(tag):], data[: -len(tag)]
        if data:
            yield data
    if carry:
        yield carry.replace(tag, b"")


def _finished_pages(parser: ET.XMLPullParser, stack: list[ET.Element]) -> Iterator[Page | None]:
    for event, element in parser.read_events():
        if event == "start":
            stack.append(element)
            continue
        stack.pop()
        if _local(element.tag) != "page":
            continue
        if stack:
            stack[-1].remove(element)  # detach: a long dump must not pile up finished pages
        yield _article(element)


def _article(page: ET.Element) -> Page | None:
    fields = {_local(child.tag): child for child in page}
    if "redirect" in fields or (fields.get("ns") is not None and (fields["ns"].text or "").strip() != "0"):
        return None
    revision = fields.get("revision")
    text_element = next((c for c in revision if _local(c.tag) == "text"), None) if revision is not None else None
    text = (text_element.text or "") if text_element is not None else ""
    if REDIRECT.match(text):
        return None
    page_id = int((fields["id"].text or "0").strip()) if "id" in fields else 0
    title = (fields["title"].text or "") if "title" in fields else ""
    return Page(page_id, title, text)


# -------------------------------------------------------------------------------------- sharding
def index_path(dump: str) -> str | None:
    """The multistream index beside a ``*-multistream.xml.bz2`` dump, if it is there."""
    if not dump.endswith("multistream.xml.bz2"):
        return None
    candidate = dump[: -len("multistream.xml.bz2")] + "multistream-index.txt.bz2"
    return candidate if os.path.exists(candidate) else None


def stream_offsets(index: str, dump_size: int) -> list[int]:
    """Start offsets of the dump's bz2 streams: the header stream at 0, the index's offsets, the end."""
    offsets = {0, dump_size}
    with bz2.open(index, "rt", encoding="utf-8", errors="replace") as lines:
        for number, line in enumerate(lines, 1):
            head = line.split(":", 1)[0]
            if not head.isdigit():
                raise InputError(f"{index}:{number}: not a multistream index line (offset:page id:title); the index "
                                 "belongs beside its own dump")
            offsets.add(int(head))
    return sorted(offsets)


def stream_boundary(offsets: list[int], position: int) -> int:
    """The first stream start at or after ``position`` (the dump's end if none)."""
    import bisect

    return offsets[min(bisect.bisect_left(offsets, position), len(offsets) - 1)]


def page_boundary(path: str, offset: int) -> int:
    """The first ``<page>`` line at or after byte ``offset`` of an uncompressed dump (its size if none)."""
    size = os.path.getsize(path)
    if offset <= 0:
        return 0
    with open(path, "rb") as handle:
        handle.seek(offset)
        position, carry = offset, b""
        while position < size:
            block = handle.read(1 << 20)
            found = (carry + block).find(b"<page>")
            if found >= 0:
                at = position - len(carry) + found
                handle.seek(max(0, at - 4096))
                before = handle.read(at - max(0, at - 4096))
                return at - (len(before) - before.rfind(b"\n") - 1) if b"\n" in before else at
            carry = block[-8:]
            position += len(block)
    return size


# -------------------------------------------------------------------------------------- cleaning
def clean_wikitext(wikitext: str) -> str:
    """The article's text as its reader sees it (see the module docstring)."""
    import mwparserfromhell

    text = _render(mwparserfromhell.parse(wikitext).nodes)
    text = MAGIC_WORD.sub("", text)
    text = EMPTY_BRACKETS.sub("", QUOTE_RUN.sub("", text))
    return join_paragraphs(_without_leftover_markup(text.split("\n")))


def _without_leftover_markup(lines: Iterable[str]) -> Iterator[str]:
    """Markup the parser could not place (unbalanced in the source) shows as raw markup: its lines go."""
    in_table = False
    for raw in lines:
        line = raw.strip()
        if line.startswith("{|"):
            in_table = True
        if in_table or "{{" in line or "}}" in line:
            in_table = in_table and not line.startswith("|}")
            continue
        yield line


def _render(nodes) -> str:
    from mwparserfromhell.nodes import Comment, ExternalLink, Heading, HTMLEntity, Tag, Template, Text, Wikilink

    out: list[str] = []
    for node in nodes:
        if isinstance(node, Text):
            out.append(node.value)
        elif isinstance(node, Wikilink):
            out.append(_link_text(node))
        elif isinstance(node, ExternalLink):
            out.append(_render(node.title.nodes) if node.title else "")
        elif isinstance(node, Heading):
            out.append("\n" + _render(node.title.nodes).strip() + "\n")
        elif isinstance(node, Tag):
            out.append(_tag_text(node))
        elif isinstance(node, HTMLEntity):
            out.append(node.normalize())
        elif isinstance(node, (Template, Comment)):
            continue
    return "".join(out)


def _link_text(link) -> str:
    title = str(link.title).strip()
    namespace, colon, _ = title.partition(":")
    namespace = namespace.strip().lower()
    if colon and not title.startswith(":"):
        if namespace in HIDDEN_LINK_NAMESPACES:
            return ""
        if re.fullmatch(r"[a-z]{2,3}(-[a-z]+)?", namespace):
            return ""  # [[en:Berlin]]: an interlanguage link, shown in the sidebar
    return _render(link.text.nodes) if link.text else _render(link.title.nodes).lstrip(":").split("#")[0]


def _tag_text(tag) -> str:
    name = str(tag.tag).strip().lower()
    if name in DROPPED_TAGS or tag.wiki_markup == "{|":
        return ""
    if name in ("li", "dt", "dd") and tag.wiki_markup:  # a list item's bullet: the item starts a line
        return ""
    inner = _render(tag.contents.nodes) if tag.contents else ""
    return f"\n{inner}\n" if name in BLOCK_BREAK_TAGS and not tag.wiki_markup else inner
