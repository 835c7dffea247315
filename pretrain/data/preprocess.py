"""Tokenize a corpus into Megatron-compatible ``.bin``/``.idx`` files with a pool of workers.

The main process only reads byte blocks, cut at record boundaries, and appends the workers' token
arrays to the output in input order; workers parse and encode. At most ``2 * workers + 2`` chunks
are in flight, so memory is flat however large the corpus is. Outputs are written under temporary
names and renamed only when every input was read: an interrupted run leaves no final-named file.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from pretrain.corpus import sources
from pretrain.corpus.json_path import parse_path
from pretrain.corpus.normalization import NORMALIZATIONS
from pretrain.corpus.pool import ordered_imap, worker_pool
from pretrain.data import indexed
from pretrain.data.encoding import EncodedChunk, EncodeSettings, encode_in_worker, init_worker
from pretrain.progress import Progress

log = logging.getLogger(__name__)


class PreprocessError(RuntimeError):
    """Preprocessing stopped on bad input or a bad setting; nothing was published."""


@dataclass
class PreprocessOptions:
    inputs: list[str]
    output_prefix: str
    tokenizer: str
    json_keys: list[str] = field(default_factory=lambda: ["text"])
    split_sentences: bool = False
    append_eod: bool = False
    workers: int = max(1, os.cpu_count() or 1)
    chunk_bytes: int = 1 << 20
    max_document_bytes: int = 16 << 20
    text_mode: str = "line"
    input_format: str | None = None
    json_path: str | None = None
    normalization: str = "nfc"
    shard_index: int = 0
    num_shards: int = 1
    skip_bad_input: bool = False
    overwrite: bool = False
    progress: bool = True


@dataclass
class KeyStats:
    prefix: str
    documents: int = 0
    sequences: int = 0
    tokens: int = 0
    empty: int = 0


@dataclass
class Summary:
    keys: dict[str, KeyStats]
    records: int = 0
    text_bytes: int = 0
    skipped: Counter = field(default_factory=Counter)
    normalized: int = 0
    normalization: str = "nfc"
    examples: list[str] = field(default_factory=list)
    truncated_files: list[str] = field(default_factory=list)
    seconds: float = 0.0
    bos: str | None = None  # the token put before each document (--append-eod with a tokenizer that adds one)

    def lines(self) -> list[str]:
        rate = self.text_bytes / max(self.seconds, 1e-9) / 1e6
        out = [f"read {self.records:,} records, {self.text_bytes / 1e6:,.1f} MB in {self.seconds:,.1f} s ({rate:.2f} MB/s)"]
        for key, stats in self.keys.items():
            out.append(f"{key}: {stats.documents:,} documents, {stats.sequences:,} sequences, {stats.tokens:,} tokens "
                       f"-> {stats.prefix}.bin/.idx; {stats.empty:,} empty documents skipped")
        if self.bos is not None:
            out.append(f"each document starts with the tokenizer's BOS {self.bos}, as the tokenizer encodes a text")
        if self.normalization != "none":
            out.append(f"{self.normalization.upper()}: {self.normalized:,} documents were not in "
                       f"{self.normalization.upper()} and were normalized")
        for reason, count in sorted(self.skipped.items()):
            out.append(f"skipped {count:,} records: {reason}")
        out += [f"  e.g. {example}" for example in self.examples]
        out += [f"truncated (kept its complete records): {path}" for path in self.truncated_files]
        return out


def output_prefix(base: str, key: str, split_sentences: bool, shard_index: int = 0, num_shards: int = 1) -> str:
    """``BASE_<key>_document`` (or ``_sentence``), with ``.shard-IIIII-of-NNNNN`` for shard runs."""
    name = f"{base}_{key}_{'sentence' if split_sentences else 'document'}"
    return name if num_shards == 1 else f"{name}.shard-{shard_index:05d}-of-{num_shards:05d}"


def preprocess(options: PreprocessOptions) -> Summary:
    from pretrain.data.provenance import meta_body, record_of
    from pretrain.tokenization import load_tokenizer

    if options.workers < 1:
        raise PreprocessError(f"--workers must be at least 1 (got {options.workers}).")
    if options.chunk_bytes < 1:  # a work item of no bytes reads nothing: the dataset would be empty
        raise PreprocessError(f"--chunk-mb must be more than 0 (got {options.chunk_bytes / (1 << 20):g} MB per work "
                              "item); the default is 1.")
    if options.max_document_bytes < 1:
        raise PreprocessError(f"--max-document-mb must be positive (got {options.max_document_bytes / 2**20:g}).")
    if options.normalization not in NORMALIZATIONS:
        raise PreprocessError(f"--normalization {options.normalization!r}: choose one of {', '.join(NORMALIZATIONS)}.")
    json_path = parse_path(options.json_path) if options.json_path else None
    sources.check_keys(options.json_keys)
    files = sources.resolve_inputs(options.inputs, options.input_format)
    if any(f.format == "text" for f in files) and len(options.json_keys) > 1:
        raise PreprocessError("--json-keys names several keys, but plain text inputs have one text per document.")
    plan = sources.plan_shard(files, options.shard_index, options.num_shards)
    tokenizer = load_tokenizer(options.tokenizer)
    dtype = indexed.token_dtype(tokenizer.vocab_size)
    prefixes = {key: output_prefix(options.output_prefix, key, options.split_sentences,
                                   options.shard_index, options.num_shards) for key in options.json_keys}
    existing = [p for p in prefixes.values() if indexed.dataset_exists(p)]
    if existing and not options.overwrite:
        raise PreprocessError(f"{existing[0]}.bin/.idx already exist: pass --overwrite to replace them, "
                              "or choose another --output-prefix.")
    Path(options.output_prefix).parent.mkdir(parents=True, exist_ok=True)
    _mention_leftovers(prefixes.values())
    settings = EncodeSettings(tokenizer.to_json(), tuple(options.json_keys), options.split_sentences,
                              options.append_eod, tokenizer.specials.eod, dtype.name, options.normalization,
                              options.json_path, tokenizer.bos_id if options.append_eod else None,
                              options.max_document_bytes)
    summary = Summary({key: KeyStats(prefix) for key, prefix in prefixes.items()}, normalization=options.normalization)
    if settings.bos_id is not None:
        summary.bos = f"{tokenizer.backend.id_to_token(settings.bos_id)!r} (id {settings.bos_id})"
    progress = Progress(sum(end - start for _, start, end in plan), enabled=options.progress)
    started = time.perf_counter()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    with ExitStack() as stack:
        writers = {key: stack.enter_context(indexed.IndexedDatasetWriter(prefix, dtype)) for key, prefix in prefixes.items()}
        context = multiprocessing.get_context("spawn")  # workers import only tokenizers + numpy
        pool = stack.enter_context(worker_pool(context, options.workers, init_worker, (settings,)))
        chunks = sources.plan_chunks(plan, options.text_mode, options.chunk_bytes, options.json_keys, json_path,
                                     options.skip_bad_input, summary.truncated_files)
        for result in ordered_imap(pool, encode_in_worker, chunks, 2 * options.workers + 2):
            _absorb(result, summary, writers, options.skip_bad_input)
            progress.update(result.disk_bytes, result.text_bytes, result.records,
                            sum(e.tokens.size for e in result.encoded.values()))
        progress.close()
        _refuse_empty(summary, options)
        meta = meta_body(record_of(tokenizer))
        for writer in writers.values():
            writer.finalize(replace=options.overwrite, meta=meta)
    summary.seconds = time.perf_counter() - started
    return summary


def _mention_leftovers(prefixes) -> None:
    """Say what killed runs left under these prefixes (they hold disk, often as much as the dataset): deleting them
    here could pull a file from under a run still writing the same output on another node."""
    found = [path for prefix in prefixes for path in indexed.leftovers(prefix)]
    if found:
        size = sum(os.path.getsize(path) for path in found if os.path.exists(path))
        log.warning("%d temporary file(s) of an interrupted earlier run are here, %.1f MB: %s. Delete them unless "
                    "another run is writing this output now", len(found), size / 1e6,
                    ", ".join(found[:5]) + (", ..." if len(found) > 5 else ""))


def _refuse_empty(summary: Summary, options: PreprocessOptions) -> None:
    """Publish no dataset without a document: an empty .bin/.idx with exit 0 looks like a finished run, while every
    record was skipped (a wrong --json-keys under --skip-bad-input) or empty. A shard may be empty by right (its
    byte range holds no record, or only empty ones) and is published: the merge needs every shard, and refuses
    a merged dataset without a document."""
    empty = [key for key, stats in summary.keys.items() if stats.documents == 0]
    skipped = sum(summary.skipped.values())
    if not empty or options.num_shards > 1:
        return
    if skipped and not summary.records:
        reason, count = summary.skipped.most_common(1)[0]
        cause = f"every record was skipped as bad input, {count:,} for {reason}, e.g. {summary.examples[0].rstrip('.')}"
    elif summary.records:
        cause = "every document was empty: check --json-keys (and --text-mode)"
    else:
        cause = "the inputs hold no complete record"
    if summary.truncated_files:
        cause += f" (truncated: {', '.join(summary.truncated_files)})"
    empties = "/".join(f"{summary.keys[key].empty:,}" for key in empty)
    raise PreprocessError(
        f"no document for --json-keys {' '.join(empty)} ({summary.records:,} records read, {skipped:,} skipped as "
        f"bad input, {empties} empty): {cause}. Nothing was published.")


def _absorb(result: EncodedChunk, summary: Summary, writers: dict, skip_bad_input: bool) -> None:
    if result.problems and not skip_bad_input:
        raise PreprocessError(str(result.problems[0]))
    for problem in result.problems:
        summary.skipped[problem.reason] += 1
        if len(summary.examples) < 5:
            summary.examples.append(str(problem))
    summary.records += result.records
    summary.text_bytes += result.text_bytes
    summary.normalized += result.normalized
    for key, encoded in result.encoded.items():
        writers[key].add_documents(encoded.tokens, encoded.sequence_lengths, encoded.sequences_per_document)
        stats = summary.keys[key]
        stats.documents += len(encoded.sequences_per_document)
        stats.sequences += len(encoded.sequence_lengths)
        stats.tokens += int(encoded.tokens.size)
        stats.empty += encoded.empty
