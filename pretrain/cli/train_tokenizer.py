"""Train a tokenizer (byte-level BPE, WordPiece or SentencePiece) on a sample of a corpus; with
--morphemes ko its pieces never span two morphemes of a Korean eojeol; with --vocab-sizes one per size,
measured against each other."""

from __future__ import annotations

import argparse
import os

from pretrain.cli.runner import UserError, run
from pretrain.corpus.normalization import NORMALIZATIONS
from pretrain.corpus.sources import FORMATS, check_keys
from pretrain.presets import PRESETS
from pretrain.tokenization.morphemes import ANALYZERS, DEFAULT_ANALYZER
from pretrain.tokenization.training import KINDS, TokenizerTrainingOptions, train_tokenizer


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--type", choices=KINDS, default="bpe",
                   help="bpe: GPT-2 byte-level (vocab.json+merges.txt); wordpiece: BERT (vocab.txt); "
                        "spm-unigram / spm-bpe: SentencePiece (*.model)")
    p.add_argument("--input", nargs="+", required=True, help="files, globs or folders (as for preprocess_data)")
    p.add_argument("--input-format", choices=FORMATS)
    p.add_argument("--json-keys", nargs="+", default=["text"])
    p.add_argument("--json-path", help="nested JSON: where the documents are (as for preprocess_data)")
    p.add_argument("--text-mode", choices=["line", "paragraph"], default="line")
    p.add_argument("--output", required=True, help="tokenizer folder to create")
    p.add_argument("--vocab-size", type=int, help="default: 50257 for bpe, 32000 otherwise (special tokens included)")
    p.add_argument("--min-frequency", type=int, default=2, help="bpe/wordpiece: drop rarer pairs")
    p.add_argument("--special-tokens", nargs="+", help="default: GPT-2/RoBERTa tokens for bpe, [PAD] [UNK] [CLS] "
                                                       "[SEP] [MASK] for wordpiece, <mask> for sentencepiece")
    p.add_argument("--max-mb", type=float, default=64, help="MB of text sampled, spread over all input files")
    p.add_argument("--normalization", choices=NORMALIZATIONS, default="nfc", help="Unicode normalization")
    p.add_argument("--lowercase", action="store_true", help="wordpiece: uncased (lower-cases and strips accents)")
    p.add_argument("--skip-bad-input", action="store_true", help="skip and count bad records instead of stopping")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--morphemes", choices=["ko"], help="ko: never join pieces across a morpheme boundary inside a "
                   "Korean eojeol (a morphological analyzer splits the sample; pip install 'pretrain[ko]'); "
                   "the tokenizer itself needs no analyzer")
    p.add_argument("--analyzer", choices=list(ANALYZERS), default=DEFAULT_ANALYZER, help="with --morphemes ko")
    p.add_argument("--workers", type=int, help="analyzer processes with --morphemes (default: every core)")
    p.add_argument("--vocab-sizes", help="comma-separated sizes (16000,32000,50257,64000): train one tokenizer per "
                   "size into OUTPUT/<size>/ on the same sample, measure tokens per word on held-out documents, "
                   "write OUTPUT/sweep.md and recommend a size")
    p.add_argument("--preset", choices=list(PRESETS), help="with --vocab-sizes: report the embedding's share of "
                   "this model's parameters at each size")
    return p


def params_for(preset: str):
    """vocabulary size -> (the preset's parameters, its token embedding's), the embedding padded as in training."""
    from pretrain.model.hf import padded_vocab_size
    from pretrain.planner import count_parameters
    from pretrain.presets import get_preset

    hidden = get_preset(preset).hidden

    def count(vocab: int) -> tuple[int, int]:
        return count_parameters(preset, vocab)[0], padded_vocab_size(vocab, 64) * hidden
    return count


def sizes_of(text: str) -> list[int]:
    try:
        sizes = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise UserError(f"--vocab-sizes {text!r}: give whole numbers separated by commas, e.g. 16000,32000,50257") from None
    if len(sizes) < 2 or sizes[0] < 100:
        raise UserError(f"--vocab-sizes {text!r}: give at least two sizes of 100 or more.")
    return sizes


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.preset and not args.vocab_sizes:
        raise UserError("--preset only goes with --vocab-sizes.")
    if args.vocab_size and args.vocab_sizes:
        raise UserError("give --vocab-size (one tokenizer) or --vocab-sizes (a sweep), not both.")
    if os.path.exists(args.output) and not os.path.isdir(args.output):  # found before training, not after
        raise UserError(f"--output {args.output} is a file, not a folder: choose a new folder for the tokenizer.")
    check_keys(args.json_keys)
    options = TokenizerTrainingOptions(
        kind=args.type, inputs=args.input, output=args.output, vocab_size=args.vocab_size,
        min_frequency=args.min_frequency, special_tokens=args.special_tokens, max_bytes=int(args.max_mb * (1 << 20)),
        normalization=args.normalization, lowercase=args.lowercase, json_keys=args.json_keys,
        text_mode=args.text_mode, input_format=args.input_format, json_path=args.json_path,
        skip_bad_input=args.skip_bad_input, overwrite=args.overwrite, morphemes=args.morphemes,
        analyzer=args.analyzer, workers=args.workers)
    if args.vocab_sizes:
        return sweep_sizes(options, sizes_of(args.vocab_sizes), args.preset)
    tokenizer = train_tokenizer(options)
    print(f"{args.output}: {args.type} tokenizer, {tokenizer.vocab_size} tokens, "
          f"specials {tokenizer.specials.tokens}")
    return 0


def sweep_sizes(options: TokenizerTrainingOptions, sizes: list[int], preset: str | None) -> int:
    from pathlib import Path

    from pretrain.tokenization.vocab_sweep import sweep

    output = Path(options.output)
    if output.exists() and any(output.iterdir()) and not options.overwrite:
        raise UserError(f"{output} already exists and is not empty: pass --overwrite or choose another --output.")
    sweep(options, sizes, params_for(preset) if preset else None, preset)
    print((output / "sweep.md").read_text(encoding="utf-8"))
    return 0


def cli() -> None:
    run(main)


if __name__ == "__main__":
    cli()
