"""Clean corpora for pretraining: quality rules (length, script, Gopher's repetition rules, boilerplate
lines) with Korean and German defaults, then exact and near (MinHash) duplicates over the whole corpus.
Writes OUTPUT/part-*.jsonl.zst ({text, source, position, language[, title]}), report.md and report.json.

    pretrain-clean --input dumps/kowiki-latest-pages-articles.xml.bz2 --output clean/kowiki --language ko
    pretrain-clean --input 'crawl/*.jsonl.zst' --output clean/de --language de --disable near --set min_chars=300

A Slurm array shares the first stage: --stage filter --shard-index i --num-shards n for every shard, then
--stage dedup --num-shards n once (slurm/submit_clean.sh submits both)."""

from __future__ import annotations

import argparse
import os

from pretrain.cli.runner import UserError, run
from pretrain.corpus.cleaning.pipeline import CleaningOptions, clean
from pretrain.corpus.cleaning.rules import RULES
from pretrain.corpus.normalization import NORMALIZATIONS
from pretrain.corpus.sources import FORMATS


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    io = p.add_argument_group("input and output")
    io.add_argument("--input", nargs="+", required=True, help="files, globs or folders, as for preprocess_data")
    io.add_argument("--input-format", choices=FORMATS)
    io.add_argument("--json-keys", nargs="+", default=["text"], help="the text key (wiki dumps: text; title is kept)")
    io.add_argument("--json-path", help="nested JSON: where the documents are, e.g. 'document[].paragraph[].form'")
    io.add_argument("--text-mode", choices=["line", "paragraph"], default="line")
    io.add_argument("--output", required=True, help="folder for part-*.jsonl.zst and the report")
    io.add_argument("--part-mb", type=float, default=1024, help="uncompressed MB per output part")
    io.add_argument("--overwrite", action="store_true")
    rules = p.add_argument_group("rules")
    rules.add_argument("--language", choices=["auto", "ko", "de"], default="auto",
                       help="whose defaults (auto: per document, ko where a fifth of the letters are Hangul)")
    rules.add_argument("--disable", nargs="+", default=[], choices=RULES, metavar="RULE",
                       help=f"switch rules off: {', '.join(RULES)}")
    rules.add_argument("--set", dest="settings", nargs="+", default=[], metavar="NAME=VALUE",
                       help="tune a rule: min_chars, min_script_share, max_duplicate_line_share, ...")
    rules.add_argument("--near-threshold", type=float, default=0.8, help="Jaccard similarity of near duplicates")
    rules.add_argument("--normalization", choices=NORMALIZATIONS, default="nfc")
    execution = p.add_argument_group("execution")
    execution.add_argument("--workers", type=int, default=max(1, os.cpu_count() or 1))
    execution.add_argument("--stage", choices=["all", "filter", "dedup"], default="all")
    execution.add_argument("--shard-index", type=int, default=0)
    execution.add_argument("--num-shards", type=int, default=1)
    execution.add_argument("--skip-bad-input", action="store_true", help="skip and count unreadable records")
    execution.add_argument("--no-progress", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.workers < 1:
        raise UserError(f"--workers must be at least 1 (got {args.workers}).")
    if args.part_mb <= 0:
        raise UserError(f"--part-mb must be more than 0 (got {args.part_mb:g}); the default is 1024.")
    report = clean(CleaningOptions(
        inputs=args.input, output=args.output, language=args.language, disable=args.disable, settings=args.settings,
        near_threshold=args.near_threshold, json_keys=args.json_keys, json_path=args.json_path,
        text_mode=args.text_mode, input_format=args.input_format, normalization=args.normalization,
        workers=args.workers, shard_index=args.shard_index, num_shards=args.num_shards, stage=args.stage,
        part_mb=args.part_mb, skip_bad_input=args.skip_bad_input, overwrite=args.overwrite,
        progress=not args.no_progress))
    if args.stage == "filter":
        print(f"shard {args.shard_index} of {args.num_shards}: {report['documents']:,} documents read, "
              f"{report['kept']:,} passed the rules; run --stage dedup when every shard is done")
        return 0
    read, kept = report["input"], report["kept"]
    print(f"{read['documents']:,} documents in, {kept['documents']:,} kept ({kept['bytes'] / 1e6:,.1f} MB) in "
          f"{len(kept['parts'])} part(s) -> {args.output}; the report: {os.path.join(args.output, 'report.md')}")
    for rule, removed in report["removed"].items():
        if removed["documents"] or removed["bytes"]:
            print(f"  {rule}: {removed['documents']:,} documents, {removed['bytes'] / 1e6:,.2f} MB")
    for reason, count in sorted(report["skipped"].items()):  # --skip-bad-input: said here, not only in the report
        print(f"skipped {count:,} records: {reason}")
    for path in report["truncated_files"]:
        print(f"truncated (kept its complete records): {path}")
    return 0


def cli() -> None:
    run(main)


if __name__ == "__main__":
    cli()
