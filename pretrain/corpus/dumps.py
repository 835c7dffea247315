"""Chunks of records from dumps that must be parsed to find their records: MediaWiki XML pages, the
Namuwiki JSON array's articles, and the documents of a nested JSON file. The streaming parse runs here
(the main process), the markup cleaning in the workers: a chunk carries the raw markup of its pages."""

from __future__ import annotations

from collections.abc import Iterator

from pretrain.corpus import mediawiki, namuwiki
from pretrain.corpus.compression import open_decompressed, truncation_errors
from pretrain.corpus.json_path import JsonPath
from pretrain.corpus.region import Region, WithoutBom
from pretrain.corpus.types import Chunk, InputError, InputFile, TruncatedFile

BLOCK = 1 << 20


def _raw_range(file: InputFile, start: int, end: int):
    """(a readable of the file's bytes for records starting in [start, end), its counter of disk bytes read)."""
    readable, consumed, closer = _raw_bytes(file, start, end)
    return (WithoutBom(readable) if start == 0 else readable), consumed, closer  # from byte 0: the file's start


def _raw_bytes(file: InputFile, start: int, end: int):
    if file.index:  # a multistream dump: whole bz2 streams
        offsets = mediawiki.stream_offsets(file.index, file.size)
        first, last = mediawiki.stream_boundary(offsets, start), mediawiki.stream_boundary(offsets, end)
        region = Region(file.path, first, last)
        return open_decompressed(".bz2", region), region.consumed, region
    if file.compression:  # a whole compressed file
        region = Region(file.path, 0, file.size)
        return open_decompressed(file.compression, region), region.consumed, region
    if file.format == "namuwiki":
        array = namuwiki.ArrayRegion(file.path, namuwiki.record_start(file.path, start),
                                     namuwiki.record_start(file.path, end) if end < file.size else file.size)
        return array, array.consumed, array
    first = mediawiki.page_boundary(file.path, start)
    last = mediawiki.page_boundary(file.path, end) if end < file.size else file.size
    region = Region(file.path, first, last)
    return region, region.consumed, region


def _blocks(readable) -> Iterator[bytes]:
    while True:
        block = readable.read(BLOCK)
        if not block:
            return
        yield block


class _Batcher:
    """Groups (number, title, markup) records into chunks of about ``chunk_bytes`` of markup."""

    def __init__(self, file: InputFile, mode: str, chunk_bytes: int, consumed) -> None:
        self.file, self.mode, self.chunk_bytes, self.consumed = file, mode, chunk_bytes, consumed
        self.pending: list[tuple] = []
        self.size = self.reported = 0

    def add(self, record: tuple, size: int) -> Chunk | None:
        self.pending.append(record)
        self.size += size
        return self.flush() if self.size >= self.chunk_bytes else None

    def flush(self, truncated: bool = False) -> Chunk | None:
        if not self.pending and not truncated:
            return None
        read = self.consumed()
        chunk = Chunk(self.file.path, self.pending[0][0] if self.pending else 0, self.mode, self.pending,
                      read - self.reported, truncated)
        self.pending, self.size, self.reported = [], 0, read
        return chunk


def wiki_chunks(file: InputFile, start: int, end: int, chunk_bytes: int) -> Iterator[Chunk]:
    readable, consumed, closer = _raw_range(file, start, end)
    batcher = _Batcher(file, "mediawiki", chunk_bytes, consumed)
    last = None
    try:
        for page in mediawiki.iter_pages(_blocks(readable)):
            last = page.page_id
            chunk = batcher.add((page.page_id, page.title, page.text), len(page.text))
            if chunk:
                yield chunk
    except (mediawiki.TruncatedDump, *truncation_errors()) as exc:
        where = f"page id {last}" if last is not None else "its start"
        raise TruncatedFile(file, where, exc, batcher.flush(truncated=True)) from exc
    finally:
        closer.close()
    chunk = batcher.flush()
    if chunk:
        yield chunk


def namu_chunks(file: InputFile, start: int, end: int, chunk_bytes: int) -> Iterator[Chunk]:
    import ijson

    readable, consumed, closer = _raw_range(file, start, end)
    batcher = _Batcher(file, "namumark", chunk_bytes, consumed)
    last = 0
    try:
        for number, title, text in namuwiki.iter_articles(readable):
            last = number
            chunk = batcher.add((number, title, text), len(text))
            if chunk:
                yield chunk
    except (ijson.IncompleteJSONError, *truncation_errors()) as exc:
        raise TruncatedFile(file, f"record {last}", exc, batcher.flush(truncated=True)) from exc
    except ValueError as exc:
        raise InputError(f"{file.path}: not a Namuwiki dump (a JSON array of article objects): {exc}; pass "
                         "--input-format json with --json-path for other JSON") from None
    finally:
        closer.close()
    chunk = batcher.flush()
    if chunk:
        yield chunk


def json_document_chunks(file: InputFile, path: JsonPath, chunk_bytes: int) -> Iterator[Chunk]:
    """The document elements of a whole-file JSON (``document.item`` for 'document[]...'), streamed."""
    import ijson

    region = Region(file.path, 0, file.size)
    readable = WithoutBom(open_decompressed(file.compression, region) if file.compression else region)
    batcher = _Batcher(file, "json", chunk_bytes, region.consumed)
    number = read = 0
    try:
        elements = ijson.items(readable, path.ijson_prefix) if path.document_depth else ijson.items(readable, "")
        for number, element in enumerate(elements, 1):
            size, read = region.consumed() - read, region.consumed()
            chunk = batcher.add((number, "", element), max(size, 1))
            if chunk:
                yield chunk
    except (ijson.IncompleteJSONError, *truncation_errors()) as exc:
        raise TruncatedFile(file, f"document {number}", exc, batcher.flush(truncated=True)) from exc
    except ijson.JSONError as exc:
        raise InputError(f"{file.path}: not valid JSON after document {number} ({exc}); fix the file") from None
    finally:
        region.close()
    chunk = batcher.flush()
    if chunk:
        yield chunk
