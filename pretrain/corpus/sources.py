"""Streaming corpus readers: jsonl, plain text, parquet and ``datasets`` folders, MediaWiki XML dumps,
the Namuwiki JSON dump and nested JSON (by a key path), plain or compressed.

The reader never cleans or tokenizes: it cuts the input into chunks of about ``chunk_bytes`` of whole
records (raw lines, or a dump's pages as they come out of the streaming parser) and hands them to
workers, so memory stays flat.

Sharding (``shard_index`` of ``num_shards``) splits the inputs' total on-disk size into equal byte
ranges; a record belongs to the shard where it starts. Uncompressed text, jsonl, MediaWiki XML and the
Namuwiki array are split mid-file at record boundaries, a multistream Wikipedia dump at its bz2 streams;
another compressed file cannot be sought and goes whole to the shard its first byte falls in; parquet
row groups and arrow record batches go to the shard their start falls in. The shards concatenated in
order are therefore exactly the single-process input.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from pretrain.corpus import dumps, records
from pretrain.corpus.compression import COMPRESSIONS, open_decompressed, truncation_errors
from pretrain.corpus.json_path import JsonPath
from pretrain.corpus.mediawiki import index_path
from pretrain.corpus.region import BOM
from pretrain.corpus.tables import table_chunks
from pretrain.corpus.types import Chunk, InputError, InputFile, TruncatedFile

FORMATS = ("jsonl", "json", "text", "parquet", "arrow", "mediawiki", "namuwiki")
_FORMAT_OF_SUFFIX = {
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json?", ".xml": "mediawiki",
    ".txt": "text", ".text": "text", ".parquet": "parquet", ".arrow": "arrow",
}
MARKUP_KEYS = ("text", "title")  # what a wiki dump's page offers to --json-keys


# ------------------------------------------------------------------------------------ resolving
def resolve_inputs(specs: Sequence[str], input_format: str | None = None) -> list[InputFile]:
    """Expand files, globs, folders and ``datasets`` folders into an ordered list of inputs, each file once: one
    named twice (the same spec again, a glob or a folder that holds it, another path or link to it) is refused, as
    it would be read twice without a word."""
    files: list[InputFile] = []
    given: dict[object, tuple[str, str]] = {}  # file_identity -> the spec and path that named it first
    for spec in specs:
        if os.path.isdir(spec):
            paths = _folder_files(spec)
        elif glob.has_magic(spec):
            paths = sorted(p for p in glob.glob(spec, recursive=True) if os.path.isfile(p))
            if not paths:
                raise InputError(f"--input {spec!r} matches no file.")
        elif os.path.isfile(spec):
            paths = [spec]
        else:
            raise InputError(f"--input {spec!r}: no such file or folder.")
        for path in paths:
            identity = file_identity(path)
            if identity in given:
                first_spec, first_path = given[identity]
                also = "" if first_path == path else f" as {first_path}"
                where = (f"--input names {spec!r} twice" if first_spec == spec and first_path == path else
                         f"--input {spec!r} names {path}, which --input {first_spec!r} named already{also}")
                raise InputError(f"{where}: its records would be read twice. Give each file once.")
            given[identity] = (spec, path)
        files.extend(_describe(path, input_format) for path in paths)
    if not files:
        raise InputError(f"no input files found in {list(specs)}.")
    return files


def check_keys(keys: Sequence[str]) -> None:
    """Each ``--json-keys`` key once: a key named twice would make each record's text two documents."""
    repeated = sorted({key for key in keys if list(keys).count(key) > 1})
    if repeated:
        raise InputError(f"--json-keys names {repeated[0]!r} more than once: each record's text would be read twice. "
                         "Name each key once.")


def _folder_files(folder: str) -> list[str]:
    """The corpus files in ``folder`` (recursively; of a datasets folder its data files), less pretrain-clean's
    reports (a folder it wrote reads as its parts)."""
    if os.path.exists(os.path.join(folder, "dataset_dict.json")):
        splits = sorted(p.name for p in Path(folder).iterdir() if p.is_dir())
        raise InputError(
            f"{folder} is a datasets DatasetDict with splits {splits}: pass one split's folder, "
            f"for example --input {os.path.join(folder, splits[0] if splits else 'train')}."
        )
    state = os.path.join(folder, "state.json")
    if os.path.exists(state):  # a folder written by datasets.Dataset.save_to_disk
        try:
            with open(state, encoding="utf-8") as handle:
                names = [entry["filename"] for entry in json.load(handle)["_data_files"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError(f"{state} is damaged ({type(exc).__name__}: {exc}): the datasets folder {folder} is "
                             "truncated or was not saved by datasets.Dataset.save_to_disk; save it again.") from None
        missing = [name for name in names if not os.path.isfile(os.path.join(folder, name))]
        if missing:
            raise InputError(f"{folder}: its state.json lists {missing[0]}, which is missing: the datasets folder is "
                             "incomplete (a copy cut short?); copy or save it again.")
        return [os.path.join(folder, name) for name in names]
    found = []
    for root, _, names in os.walk(folder):
        for name in names:
            if name == "report.json" and _is_cleaning_report(os.path.join(root, name)):
                continue  # pretrain-clean's report beside its parts: not text
            stem = name
            for suffix in COMPRESSIONS:
                stem = stem.removesuffix(suffix)
            if Path(stem).suffix in _FORMAT_OF_SUFFIX:
                found.append(os.path.join(root, name))
    if not found:
        raise InputError(f"folder {folder} holds no .jsonl/.json/.txt/.parquet/.arrow files (plain or compressed).")
    return sorted(found)


def _is_cleaning_report(path: str) -> bool:
    """Is ``path`` the report.json pretrain-clean writes (its keys, read from the first 64 kB)?"""
    with open(path, "rb") as handle:
        head = handle.read(1 << 16)
    return all(f'"{key}":'.encode() in head for key in ("inputs", "near_threshold", "kept", "removed"))


def _describe(path: str, input_format: str | None) -> InputFile:
    stem, compression = path, None
    for suffix in COMPRESSIONS:
        if path.endswith(suffix):
            stem, compression = path[: -len(suffix)], suffix
    fmt = input_format or _FORMAT_OF_SUFFIX.get(Path(stem).suffix)
    if fmt is None:
        raise InputError(
            f"cannot tell the format of {path} from its name: use .jsonl/.json/.xml/.txt/.parquet/.arrow "
            f"(optionally + {'/'.join(COMPRESSIONS)}) or pass --input-format {{{','.join(FORMATS)}}}."
        )
    if fmt == "json?":
        fmt = _sniff_json(path, compression)
    if compression and fmt in ("parquet", "arrow"):
        raise InputError(f"{path}: {fmt} files carry their own compression; decompress the outer {compression} first.")
    index = index_path(path) if fmt == "mediawiki" and compression == ".bz2" else None
    return InputFile(path, fmt, compression, os.path.getsize(path), index)


def _sniff_json(path: str, compression: str | None) -> str:
    """A ``.json`` file: a JSON array of articles (Namuwiki's dump), one object per line (jsonl), or one
    document spread over lines (NIKL's files: read with --json-path)."""
    with open(path, "rb") as raw:
        handle = open_decompressed(compression, raw) if compression else raw
        try:
            head = handle.read(1 << 16)
        except truncation_errors() as exc:  # nothing decodes: not even the format can be told
            raise InputError(f"{path}: the data ends early or is damaged at its start ({exc}); re-download or "
                             "recompress it.") from None
    stripped = head.removeprefix(BOM).lstrip()
    if stripped.startswith(b"["):
        return "namuwiki"
    first_line = stripped.split(b"\n", 1)[0]
    try:
        json.loads(first_line)
        return "jsonl"
    except ValueError:
        return "json"


# ------------------------------------------------------------------------------------- sharding
def plan_shard(files: Sequence[InputFile], shard_index: int, num_shards: int) -> list[tuple[InputFile, int, int]]:
    """The byte range ``[start, end)`` of each file that belongs to this shard."""
    if not 0 <= shard_index < num_shards:
        raise InputError(f"--shard-index {shard_index} is outside 0..{num_shards - 1} (--num-shards {num_shards}).")
    total = sum(f.size for f in files)
    low, high = total * shard_index // num_shards, total * (shard_index + 1) // num_shards
    plan, base = [], 0
    for file in files:
        if file.splittable or file.format in ("parquet", "arrow"):  # each reader finds its record boundaries
            start, end = max(low - base, 0), min(high - base, file.size)
            if start < end:
                plan.append((file, start, end))
        elif low <= base < high:
            plan.append((file, 0, file.size))
        base += file.size
    return plan


# -------------------------------------------------------------------------------------- reading
def file_identity(path: str) -> object:
    """What names one file however it is spelled or linked: (device, inode), or on a file system without inode
    numbers (0) the resolved path."""
    stat = os.stat(path)
    return (stat.st_dev, stat.st_ino) if stat.st_ino else os.path.realpath(path)


def plan_chunks(plan: list[tuple[InputFile, int, int]], text_mode: str, chunk_bytes: int, keys: Sequence[str],
                json_path: JsonPath | None, skip_bad_input: bool, truncated: list[str]) -> Iterator[Chunk]:
    """The chunks of each (file, start, end) of ``plan``. A file that ends early, or a table's row group that cannot
    be read, stops the run (InputError: the file, where, the fix) or, with ``skip_bad_input``, the file gives its
    complete records and is added to ``truncated`` (a table: with the rows left out)."""
    damaged = truncated.append if skip_bad_input else None
    for file, start, end in plan:
        try:
            yield from read_chunks(file, start, end, text_mode, chunk_bytes, keys, json_path, damaged)
        except TruncatedFile as exc:
            if not skip_bad_input:
                raise InputError(exc.explain()) from None
            truncated.append(file.path)
            yield exc.rest


def read_chunks(file: InputFile, start: int, end: int, text_mode: str, chunk_bytes: int, keys: Sequence[str],
                json_path: JsonPath | None = None, damaged: Callable[[str], None] | None = None) -> Iterator[Chunk]:
    """Chunks of the records of ``file`` that start in ``[start, end)`` (``damaged``: see ``table_chunks``)."""
    if file.format in ("parquet", "arrow"):
        yield from table_chunks(file, start, end, chunk_bytes, keys, damaged)
        return
    if file.format in ("mediawiki", "namuwiki"):
        wrong = [key for key in keys if key not in MARKUP_KEYS]
        if wrong:
            raise InputError(f"{file.path}: a {file.format} dump's pages have {' and '.join(MARKUP_KEYS)}, not "
                             f"{wrong[0]!r}; choose --json-keys from those.")
        yield from (dumps.wiki_chunks if file.format == "mediawiki" else dumps.namu_chunks)(file, start, end, chunk_bytes)
        return
    if file.format == "json":
        if json_path is None:
            raise InputError(f"{file.path} holds one JSON document over many lines, not one record per line: say where "
                             "its documents are with --json-path (e.g. 'document[].paragraph[].form'), or pass "
                             "--input-format jsonl if it is JSON Lines.")
        yield from dumps.json_document_chunks(file, json_path, chunk_bytes)
        return
    mode = records.LINE if file.format == "jsonl" else text_mode
    kind = "jsonl" if file.format == "jsonl" else mode
    if file.compression is None:
        first = records.find_boundary(file.path, start, mode)
        last = records.find_boundary(file.path, end, mode) if end < file.size else file.size
        handle = open(file.path, "rb")
        handle.seek(first)
        line = 1 + (records.count_newlines(file.path, first) if first else 0)
        position = lambda: handle.tell()  # noqa: E731
        limit = last - first
    else:
        raw = open(file.path, "rb")
        handle = open_decompressed(file.compression, raw)
        line, position, limit = 1, raw.tell, None
    with handle:
        yield from _cut(file, handle, position, limit, mode, kind, line, chunk_bytes)


def _cut(file, handle, position, limit, mode, kind, line, chunk_bytes) -> Iterator[Chunk]:
    buf, consumed, reported = b"", 0, position()
    errors = truncation_errors()
    while True:
        want = chunk_bytes if limit is None else min(chunk_bytes, limit - consumed)
        try:
            block = handle.read(want) if want > 0 else b""
        except errors as exc:
            # the complete records read so far, and where the damage starts
            cut = records.last_boundary(buf, mode)
            rest = Chunk(file.path, line, kind, buf[:cut], position() - reported, truncated=True)
            last_line = line + buf.count(b"\n", 0, cut) - 1  # the last complete one
            raise TruncatedFile(file, f"line {last_line}" if last_line else "its start", exc, rest) from exc
        consumed += len(block)
        buf += block
        if not block:
            break
        if consumed == len(block) and not reported and buf.startswith(BOM):  # the file's start: as utf-8-sig
            buf = buf[len(BOM):]  # reads, a byte-order mark is not text
        cut = records.last_boundary(buf, mode)
        if cut and len(buf) >= chunk_bytes:
            here = position()
            yield Chunk(file.path, line, kind, buf[:cut], here - reported)
            reported = here
            line += buf.count(b"\n", 0, cut)
            buf = buf[cut:]
    if buf:
        yield Chunk(file.path, line, kind, buf, position() - reported)
