"""Train a tokenizer (byte-level BPE, WordPiece or SentencePiece) on a sample of a corpus."""

from __future__ import annotations

import argparse

from pretrain.cli.runner import run
from pretrain.corpus.normalization import NORMALIZATIONS
from pretrain.corpus.sources import FORMATS
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
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    tokenizer = train_tokenizer(TokenizerTrainingOptions(
        kind=args.type, inputs=args.input, output=args.output, vocab_size=args.vocab_size,
        min_frequency=args.min_frequency, special_tokens=args.special_tokens, max_bytes=int(args.max_mb * (1 << 20)),
        normalization=args.normalization, lowercase=args.lowercase, json_keys=args.json_keys,
        text_mode=args.text_mode, input_format=args.input_format, json_path=args.json_path,
        skip_bad_input=args.skip_bad_input,
        overwrite=args.overwrite))
    print(f"{args.output}: {args.type} tokenizer, {tokenizer.vocab_size} tokens, "
          f"specials {tokenizer.specials.tokens}")
    return 0


def cli() -> None:
    run(main)


if __name__ == "__main__":
    cli()
