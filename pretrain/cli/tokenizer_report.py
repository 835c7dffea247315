"""Compare tokenizers on real text, per language: tokens per word (per eojeol for Korean), characters and
bytes per token, words cut into 3+ pieces, byte-fallback / unknown rate, vocabulary used, round-trip
exactness. Writes OUTPUT/report.md, report.json and chart.png."""

from __future__ import annotations

import argparse
from pathlib import Path

from pretrain.cli.runner import UserError, run
from pretrain.corpus.sources import FORMATS
from pretrain.tokenization import load_tokenizer
from pretrain.tokenization.morphemes import ANALYZERS, DEFAULT_ANALYZER
from pretrain.tokenization.report import measure
from pretrain.tokenization.report_output import write_report
from pretrain.tokenization.training import SampleStats, TokenizerTrainingOptions, sample_texts


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("tokenizers", nargs="+", metavar="TOKENIZER",
                   help="a tokenizer folder, a tokenizer.json, vocab.json or *.model inside one, or a hub name; "
                        "NAME=PATH names it in the report (default: the folder's name)")
    p.add_argument("--input", nargs="+", required=True, help="files, globs or folders (as for train_tokenizer)")
    p.add_argument("--output", default="tokenizer-report", help="folder for report.md, report.json, chart.png")
    p.add_argument("--max-mb", type=float, default=16, help="MB of text read, spread over the input files")
    p.add_argument("--morphemes", choices=["ko"], help="also measure tokens that span a Korean morpheme boundary "
                                                      "(needs the analyzer: pip install 'pretrain[ko]')")
    p.add_argument("--analyzer", choices=list(ANALYZERS), default=DEFAULT_ANALYZER)
    p.add_argument("--input-format", choices=FORMATS)
    p.add_argument("--json-keys", nargs="+", default=["text"])
    p.add_argument("--json-path")
    p.add_argument("--text-mode", choices=["line", "paragraph"], default="line")
    p.add_argument("--skip-bad-input", action="store_true")
    return p


def named(specs: list[str]) -> dict[str, str]:
    """NAME=PATH or PATH -> {name: path}; unnamed ones take their folder's name, made unique."""
    out: dict[str, str] = {}
    for spec in specs:
        name, _, path = spec.partition("=") if "=" in spec and not Path(spec).exists() else ("", "", spec)
        if not name:
            target = Path(path)
            name = (target.parent if target.is_file() else target).name or path
        base, index = name, 2
        while name in out:
            name, index = f"{base}-{index}", index + 1
        out[name] = path
    return out


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    sources = named(args.tokenizers)
    tokenizers = {name: load_tokenizer(path) for name, path in sources.items()}
    options = TokenizerTrainingOptions(kind="bpe", inputs=args.input, output=args.output,
                                       max_bytes=int(args.max_mb * (1 << 20)), json_keys=args.json_keys,
                                       text_mode=args.text_mode, input_format=args.input_format,
                                       json_path=args.json_path, skip_bad_input=args.skip_bad_input)
    stats = SampleStats()
    results = measure(tokenizers, sample_texts(options, stats), morphemes=args.morphemes == "ko", analyzer=args.analyzer)
    if stats.documents == 0:
        raise UserError(f"no text found in {args.input} (check --json-keys / --input-format).")
    write_report(results, sources, list(args.input), Path(args.output))
    print(Path(args.output, "report.md").read_text(encoding="utf-8"))
    print(f"{args.output}: report.md, report.json, chart.png ({stats.documents:,} documents, "
          f"{stats.text_bytes / 1e6:.1f} MB)")
    return 0


def cli() -> None:
    run(main)


if __name__ == "__main__":
    cli()
