"""Clean a corpus: quality rules per document, then exact and near duplicates over the whole corpus.

Two stages, so a Slurm array can share the first:

  filter  (one per shard: ``--shard-index i --num-shards n``) reads the shard's records with a pool of
          workers (parse, NFC, rules, hashes and MinHash signatures) and writes the documents that pass
          to ``OUTPUT/.stage/`` with their hashes, band hashes, signatures and per-rule counts;
  dedup   (once, after every shard) decides duplicates over all shards in input order (the first copy is
          kept), writes ``OUTPUT/part-SSSSS-PPP.jsonl.zst`` (each record ``{text, source, position,
          language[, title]}``), ``report.json`` and ``report.md``, and removes ``.stage/``.

``--stage all`` (the default) runs both with one shard. The result depends only on the input and the
settings: the same run gives byte-identical files, and shards give the same documents as one process.
"""

from __future__ import annotations

import fnmatch
import io
import json
import multiprocessing
import os
import shutil
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pretrain.atomic import atomic_write_text, publish
from pretrain.corpus import sources
from pretrain.corpus.cleaning.dedup import (
    BandColumns,
    NearDupSettings,
    band_hashes,
    first_of_each_exact,
    near_duplicates,
)
from pretrain.corpus.cleaning.filtering import FilteredChunk, FilterSettings, RuleCounts, filter_in_worker, init_worker
from pretrain.corpus.cleaning.report import write_report
from pretrain.corpus.cleaning.rules import RULES, rules_for
from pretrain.corpus.json_path import parse_path
from pretrain.corpus.pool import ordered_imap, worker_pool
from pretrain.corpus.types import InputError
from pretrain.progress import Progress

STAGE = ".stage"
ZSTD_LEVEL = 10


@dataclass
class CleaningOptions:
    inputs: list[str]
    output: str
    language: str = "auto"
    disable: list[str] = field(default_factory=list)
    settings: list[str] = field(default_factory=list)
    near_threshold: float = 0.8
    json_keys: list[str] = field(default_factory=lambda: ["text"])
    json_path: str | None = None
    text_mode: str = "line"
    input_format: str | None = None
    normalization: str = "nfc"
    workers: int = max(1, os.cpu_count() or 1)
    shard_index: int = 0
    num_shards: int = 1
    stage: str = "all"
    part_mb: float = 1024.0
    chunk_bytes: int = 1 << 20
    skip_bad_input: bool = False
    overwrite: bool = False
    progress: bool = True


def clean(options: CleaningOptions) -> dict:
    """Run the stage(s) asked for; returns the report (dedup) or the shard's counts (filter)."""
    _check(options)
    output = Path(options.output)
    if options.stage == "filter":
        _check_output(options)
        return filter_shard(options)
    if options.stage == "dedup":
        return dedup_and_write(options)
    _check_output(options)
    shutil.rmtree(output / STAGE, ignore_errors=True)  # a previous run's intermediate files
    try:
        filter_shard(options)
        return dedup_and_write(options)
    except BaseException:  # a failed or interrupted run leaves the folder as it found it
        shutil.rmtree(output / STAGE, ignore_errors=True)
        raise


def _check(options: CleaningOptions) -> None:
    problems = []
    if options.stage not in ("all", "filter", "dedup"):
        problems.append(f"--stage {options.stage!r}: choose all, filter or dedup")
    if options.stage == "all" and options.num_shards != 1:
        problems.append("--num-shards needs --stage filter (each shard) then --stage dedup (once)")
    if not 0 < options.near_threshold < 1:
        problems.append(f"--near-threshold {options.near_threshold} must be between 0 and 1")
    if options.language != "auto":
        try:
            rules_for(options.language, options.disable, options.settings)
        except ValueError as exc:
            problems.append(str(exc))
    else:
        for language in ("ko", "de"):
            try:
                rules_for(language, options.disable, options.settings)
            except ValueError as exc:
                problems.append(str(exc))
                break
    if problems:
        raise InputError("; ".join(problems))


def is_own_output(path: Path) -> bool:
    """A file or folder this command writes in its output folder."""
    return path.name == STAGE or any(fnmatch.fnmatch(path.name, own)  # with a kill -9's .tmp-PID leftovers
                                     for own in ("report.json*", "report.md*", "part-*.jsonl.zst*"))


def _check_output(options: CleaningOptions) -> None:
    """--output holds nothing but a previous run's outputs (replaced only once the new ones are complete, and
    only with --overwrite), and none of the inputs: never a folder of the user's own files."""
    output = Path(options.output).resolve()
    inside = [f.path for f in sources.resolve_inputs(options.inputs, options.input_format)
              if Path(f.path).resolve().is_relative_to(output)]
    if inside:
        raise InputError(f"--output {options.output} holds the input {inside[0]}: write the cleaned corpus to a folder "
                         "of its own.")
    if options.stage != "all" or not output.is_dir():
        return
    foreign = sorted(p.name for p in output.iterdir() if not is_own_output(p))
    if foreign:
        raise InputError(f"--output {options.output} holds files this command did not write ({', '.join(foreign[:3])}"
                         f"{', ...' if len(foreign) > 3 else ''}): choose an empty or new folder.")
    if any(p.name != STAGE for p in output.iterdir()) and not options.overwrite:
        raise InputError(f"{options.output} holds a cleaned corpus: pass --overwrite to replace it (it is kept until "
                         "the new one is complete), or choose another --output.")


def _stage_name(options: CleaningOptions, index: int) -> Path:
    return Path(options.output) / STAGE / f"shard-{index:05d}-of-{options.num_shards:05d}"


def _fingerprint(options: CleaningOptions) -> dict:
    """What every shard must agree on for their results to be combined."""
    return {"language": options.language, "disable": sorted(options.disable), "settings": sorted(options.settings),
            "near_threshold": options.near_threshold, "normalization": options.normalization,
            "num_shards": options.num_shards, "json_keys": options.json_keys, "json_path": options.json_path}


def filter_shard(options: CleaningOptions) -> dict:
    """Stage 1 for shard ``options.shard_index``: the documents that pass the rules, with their hashes."""
    files = sources.resolve_inputs(options.inputs, options.input_format)
    plan = sources.plan_shard(files, options.shard_index, options.num_shards)
    path = parse_path(options.json_path) if options.json_path else None
    name = _stage_name(options, options.shard_index)
    name.parent.mkdir(parents=True, exist_ok=True)
    near = NearDupSettings(threshold=options.near_threshold)
    settings = FilterSettings(options.language, tuple(options.disable), tuple(options.settings), near,
                              options.normalization, tuple(options.json_keys), options.json_path)
    counts, totals = RuleCounts(), {"documents": 0, "bytes": 0, "kept": 0, "kept_bytes": 0, "normalized": 0,
                                    "skipped": {}, "truncated_files": []}
    progress = Progress(sum(end - start for _, start, end in plan), enabled=options.progress)
    records_temp = Path(f"{name}.records.jsonl.zst.tmp-{os.getpid()}")
    signatures_temp = Path(f"{name}.signatures.u32.tmp-{os.getpid()}")
    started = time.perf_counter()
    import zstandard

    temps = {kind: Path(f"{name}.{kind}.tmp-{os.getpid()}") for kind in ("hashes.u64", "bands.u64")}
    context = multiprocessing.get_context("spawn")
    with removed_on_failure([records_temp, signatures_temp, *temps.values()]), open(records_temp, "wb") as raw, \
            open(signatures_temp, "wb") as signature_file, open(temps["hashes.u64"], "wb") as hash_file, \
            open(temps["bands.u64"], "wb") as band_file, \
            zstandard.ZstdCompressor(level=ZSTD_LEVEL).stream_writer(raw, closefd=False) as writer, \
            worker_pool(context, options.workers, init_worker, (settings,)) as pool:
        chunks = sources.plan_chunks(plan, options.text_mode, options.chunk_bytes, options.json_keys, path,
                                     options.skip_bad_input, totals["truncated_files"])
        for result in ordered_imap(pool, filter_in_worker, chunks, 2 * options.workers + 2):
            _absorb(result, options, totals, counts)
            for record in result.records:
                line = json.dumps(record, ensure_ascii=False).encode("utf-8") + b"\n"
                writer.write(line)
                totals["kept_bytes"] += len(record["text"].encode("utf-8"))
            totals["kept"] += len(result.records)
            hash_file.write(np.ascontiguousarray(result.hashes, dtype=np.uint64).tobytes())
            if "near" not in options.disable:
                signature_file.write(np.ascontiguousarray(result.signatures).tobytes())
                band_file.write(band_hashes(result.signatures, near).tobytes())
            progress.update(result.disk_bytes, result.input_bytes, result.input_documents, 0)
        progress.close()
    for kind, temp in temps.items():
        publish(temp, f"{name}.{kind}")
    publish(signatures_temp, f"{name}.signatures.u32")
    publish(records_temp, f"{name}.records.jsonl.zst")
    stats = {"fingerprint": _fingerprint(options), "shard": options.shard_index, "seconds": time.perf_counter() - started,
             **totals, "rules": {"documents": dict(counts.documents), "bytes": dict(counts.bytes),
                                 "examples": counts.examples}}
    atomic_write_text(f"{name}.stats.json", json.dumps(stats, ensure_ascii=False, indent=1))  # last: the shard is done
    return stats


def _absorb(result: FilteredChunk, options: CleaningOptions, totals: dict, counts: RuleCounts) -> None:
    if result.problems and not options.skip_bad_input:
        raise InputError(str(result.problems[0]))
    for problem in result.problems:
        totals["skipped"][problem.reason] = totals["skipped"].get(problem.reason, 0) + 1
    totals["documents"] += result.input_documents
    totals["bytes"] += result.input_bytes
    totals["normalized"] += result.normalized
    counts.merge(result.counts)


class _ShardedRows:
    """Rows of the shards' signature files (memory maps), indexed as one array."""

    def __init__(self, files: list[str], counts: list[int], width: int) -> None:
        self.maps = [np.memmap(f, dtype=np.uint32, mode="r", shape=(n, width)) if n else None
                     for f, n in zip(files, counts)]
        self.starts = np.cumsum([0] + counts[:-1])

    def __getitem__(self, index: int) -> np.ndarray:
        shard = int(np.searchsorted(self.starts, index, side="right") - 1)
        return self.maps[shard][index - self.starts[shard]]


def dedup_and_write(options: CleaningOptions) -> dict:
    """Stage 2: duplicates over every shard, the output parts and the report."""
    output, fingerprint = Path(options.output), _fingerprint(options)
    shards = []
    for index in range(options.num_shards):
        stats_file = Path(f"{_stage_name(options, index)}.stats.json")
        if not stats_file.exists():
            raise InputError(f"shard {index} of {options.num_shards} has not finished its filter stage ({stats_file} is "
                             "missing): rerun it with --stage filter --shard-index {index}, then --stage dedup.")
        stats = json.loads(stats_file.read_text())
        if stats["fingerprint"] != fingerprint:
            raise InputError(f"{stats_file} was made with other settings ({stats['fingerprint']}) than this run's "
                             f"({fingerprint}): run every stage with the same options.")
        shards.append(stats)
    if not sum(s["documents"] for s in shards):  # nothing read: a wrong --json-keys under --skip-bad-input
        skipped = Counter()
        for stats in shards:
            skipped.update(stats["skipped"])
        cause = (f"every record was skipped as bad input ({', '.join(f'{n:,} {r}' for r, n in skipped.most_common())})"
                 if skipped else "the inputs hold no record")
        raise InputError(f"no document to clean: {cause}; check --json-keys and the inputs. Nothing was published.")
    names = [_stage_name(options, i) for i in range(options.num_shards)]
    hashes = np.empty(sum(s["kept"] for s in shards), dtype=np.uint64)  # filled shard by shard: no second copy
    at = 0
    for n in names:
        part = np.fromfile(f"{n}.hashes.u64", dtype=np.uint64)
        hashes[at : at + len(part)], at = part, at + len(part)
    count = len(hashes)
    keep = first_of_each_exact(hashes) if "exact" not in options.disable else np.ones(count, dtype=bool)
    near = np.zeros(count, dtype=bool)
    settings = NearDupSettings(threshold=options.near_threshold)
    if "near" not in options.disable and count:
        bands = BandColumns([f"{n}.bands.u64" for n in names], settings.bands[0])
        signatures = _ShardedRows([f"{n}.signatures.u32" for n in names], [s["kept"] for s in shards], settings.num_perm)
        near = near_duplicates(bands, signatures, keep, settings.threshold)
    counts = RuleCounts()
    for stats in shards:
        counts.merge(RuleCounts(Counter(stats["rules"]["documents"]), Counter(stats["rules"]["bytes"]),
                                stats["rules"]["examples"]))
    kept = _write_parts(options, names, keep & ~near, ~keep, near, counts)
    report = write_report(output, options, shards, counts, kept, [r for r in RULES if r in options.disable])
    shutil.rmtree(output / STAGE, ignore_errors=True)
    return report


def _write_parts(options: CleaningOptions, names: list[Path], keep: np.ndarray, exact: np.ndarray, near: np.ndarray,
                 counts: RuleCounts) -> dict:
    """Copy the kept documents into the output parts, in input order; count what the dedup removed."""
    temps: list[Path] = []  # every part stays a .tmp- file until all are written: no partial set looks done
    with removed_on_failure(temps):
        kept = _write_temp_parts(options, names, keep, exact, near, counts, temps)
    # a previous run's outputs go only now, the report first: a set of parts without a report is incomplete
    output = Path(options.output)
    for name in ("report.json", "report.md"):
        (output / name).unlink(missing_ok=True)
    finals = [Path(str(temp).rsplit(".tmp-", 1)[0]) for temp in temps]
    for old in set(output.glob("part-*.jsonl.zst")) - set(finals):
        old.unlink()
    for temp, final in zip(temps, finals):
        publish(temp, final)
    return kept


@contextmanager
def removed_on_failure(paths: list[Path]):
    """Remove ``paths`` (as the list stands then) if the block fails or is interrupted (Ctrl-C, SIGTERM)."""
    try:
        yield
    except BaseException:
        for path in paths:
            Path(path).unlink(missing_ok=True)
        raise


def _write_temp_parts(options: CleaningOptions, names: list[Path], keep: np.ndarray, exact: np.ndarray,
                      near: np.ndarray, counts: RuleCounts, temps: list[Path]) -> dict:
    import zstandard

    output, limit = Path(options.output), int(options.part_mb * (1 << 20))
    index, kept = 0, {"documents": 0, "bytes": 0, "parts": []}
    for shard, name in enumerate(names):
        part, written, writer, raw, temp = 0, 0, None, None, None
        with open(f"{name}.records.jsonl.zst", "rb") as source:
            for line in io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(source)):
                if keep[index]:
                    if writer is None or written >= limit:
                        if writer is not None:
                            _close_part(writer, raw, temp, kept)
                            part += 1
                        final = output / f"part-{shard:05d}-{part:03d}.jsonl.zst"
                        temp = Path(f"{final}.tmp-{os.getpid()}")
                        temps.append(temp)
                        raw = open(temp, "wb")
                        writer, written = zstandard.ZstdCompressor(level=ZSTD_LEVEL).stream_writer(raw, closefd=False), 0
                    writer.write(line)
                    written += len(line)
                    kept["documents"] += 1
                    kept["bytes"] += len(json.loads(line)["text"].encode("utf-8"))
                elif exact[index] or near[index]:
                    record = json.loads(line)
                    size = len(record["text"].encode("utf-8"))
                    rule = "exact" if exact[index] else "near"
                    counts.add(rule, 1, size, (f"{record['source']}:{record['position']}",
                                               "a copy of an earlier document" if rule == "exact" else
                                               f"Jaccard >= {options.near_threshold} with an earlier document",
                                               " ".join(record["text"].split())[:160]))
                index += 1
        if writer is not None:
            _close_part(writer, raw, temp, kept)
    return kept


def _close_part(writer, raw, temp: Path, kept: dict) -> None:
    writer.close()
    raw.close()
    kept["parts"].append(Path(str(temp).rsplit(".tmp-", 1)[0]).name)
