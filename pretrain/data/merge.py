"""Merge indexed datasets (shards of one preprocessing job, or any datasets of one tokenizer) by
streaming copies, never loading them: the result is byte-identical to a single-process run."""

from __future__ import annotations

import glob
import os
import re
from pathlib import Path

from pretrain.corpus.sources import file_identity
from pretrain.corpus.types import InputError
from pretrain.data import indexed
from pretrain.data.provenance import TokenizerRecord, agree, meta_body, tokenizer_record

SHARD_SUFFIX = re.compile(r"\.shard-(\d{5})-of-(\d{5})$")


def shard_prefixes(prefix: str) -> list[str]:
    """All shards written for ``prefix`` (``PREFIX.shard-IIIII-of-NNNNN``), checked complete, in order."""
    found = {}
    for path in glob.glob(glob.escape(prefix) + ".shard-*-of-*.idx"):
        match = SHARD_SUFFIX.search(path[: -len(".idx")])
        if match:
            found[int(match.group(1))] = (int(match.group(2)), path[: -len(".idx")])
    if not found:
        return []
    totals = {n for n, _ in found.values()}
    if len(totals) != 1:
        raise InputError(f"shards of {prefix} come from runs with different --num-shards ({sorted(totals)}); "
                         "delete the stale ones.")
    total = totals.pop()
    missing = [i for i in range(total) if i not in found]
    if missing:
        raise InputError(f"{len(missing)} of {total} shards of {prefix} are missing, e.g. "
                         f"{prefix}.shard-{missing[0]:05d}-of-{total:05d}.idx: rerun that shard (array task "
                         f"{missing[0]}) before merging.")
    return [found[i][1] for i in range(total)]


def expand_inputs(specs: list[str]) -> list[str]:
    """Prefixes from specs: a sharded prefix, a prefix, a folder of .idx files, or a glob of them."""
    prefixes: list[str] = []
    for spec in specs:
        spec = spec.removesuffix(".idx").removesuffix(".bin")
        if os.path.isdir(spec):
            prefixes += sorted(p[: -len(".idx")] for p in glob.glob(os.path.join(glob.escape(spec), "*.idx")))
        elif glob.has_magic(spec):
            prefixes += sorted(p[: -len(".idx")] for p in glob.glob(spec + ("" if spec.endswith(".idx") else ".idx")))
        elif shards := shard_prefixes(spec):
            prefixes += shards
        elif os.path.exists(indexed.idx_path(spec)):
            prefixes.append(spec)
        else:
            raise InputError(f"{spec}: no {spec}.shard-*-of-*.idx and no {spec}.idx found.")
    if not prefixes:
        raise InputError(f"nothing to merge in {specs}.")
    seen: dict[object, str] = {}  # each .idx's file_identity: another spelling or link is the same data
    for prefix in prefixes:
        identity = file_identity(indexed.idx_path(prefix))
        if identity in seen:
            also = "" if seen[identity] == prefix else f" (also as {seen[identity]})"
            raise InputError(f"--input names the dataset {prefix} twice{also}: its documents would be merged twice. "
                             "Give each dataset once.")
        seen[identity] = prefix
    return prefixes


def merge_datasets(prefixes: list[str], output_prefix: str, overwrite: bool = False) -> indexed.IndexedDataset:
    if indexed.dataset_exists(output_prefix) and not overwrite:
        raise InputError(f"{output_prefix}.bin/.idx already exist: pass --overwrite or choose another --output-prefix.")
    if os.path.exists(indexed.idx_path(output_prefix)):
        inside = [p for p in prefixes if os.path.samefile(indexed.idx_path(p), indexed.idx_path(output_prefix))]
        if inside:  # a folder merged into a prefix inside it, run again: the previous merge would be merged in
            raise InputError(f"the output {output_prefix} is one of the inputs ({inside[0]}): its documents would be "
                             "merged into it again. Choose an --output-prefix outside the inputs (and their folders).")
    datasets = [indexed.IndexedDataset(p) for p in prefixes]
    if not sum(d.num_documents for d in datasets):  # every shard empty: what a single run refuses to publish
        raise InputError(f"the inputs ({', '.join(prefixes[:3])}{', ...' if len(prefixes) > 3 else ''}) hold no "
                         "document: check their runs' summaries (skipped records, --json-keys). Nothing was merged.")
    widest = max((d.dtype for d in datasets), key=lambda dtype: dtype.itemsize)  # add_dataset widens the others
    Path(output_prefix).parent.mkdir(parents=True, exist_ok=True)  # as preprocessing does for its prefix
    record = _one_tokenizer(datasets)
    with indexed.IndexedDatasetWriter(output_prefix, widest) as writer:
        for dataset in datasets:
            writer.add_dataset(dataset)
        writer.finalize(replace=overwrite, meta=meta_body(record))
    return indexed.IndexedDataset(output_prefix)


def _one_tokenizer(datasets: list[indexed.IndexedDataset]) -> TokenizerRecord | None:
    """The tokenizer every input was recorded with (the largest load of it: ids past another load's are its added
    special tokens); None if one has no record (Megatron's data: it is merged, and the result is not vouched
    for). Inputs recorded with two tokenizers are refused: an id would mean two tokens."""
    recorded = [(d.prefix, r) for d in datasets if (r := tokenizer_record(d)) is not None]
    for prefix, record in recorded[1:]:
        first_prefix, first = recorded[0]
        if not agree(first, record):
            raise InputError(f"{first_prefix} and {prefix} were preprocessed with different tokenizers ({first.source}, "
                             f"{first.vocab_size:,} tokens, and {record.source}, {record.vocab_size:,} tokens): the same "
                             "id stands for other tokens in each. Preprocess them again with one tokenizer. Nothing "
                             "was merged.")
    if not recorded or len(recorded) < len(datasets):
        return None
    return max((record for _, record in recorded), key=lambda record: record.vocab_size)
