"""Tokenize corpora into Megatron-compatible indexed datasets (``PREFIX_<key>_document.bin/.idx``)."""

from __future__ import annotations

import argparse
import os

from pretrain.cli.runner import run
from pretrain.corpus.normalization import NORMALIZATIONS
from pretrain.corpus.sources import FORMATS
from pretrain.data.preprocess import PreprocessOptions, preprocess


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    io = p.add_argument_group("input and output")
    io.add_argument("--input", nargs="+", required=True,
                    help="files, globs or folders: .jsonl/.json/.txt/.parquet/.arrow, Wikipedia dumps (.xml), the "
                         "Namuwiki dump (.json), optionally .gz/.bz2/.xz/.zst; a folder written by datasets.save_to_disk")
    io.add_argument("--input-format", choices=FORMATS, help="override the format told by the file")
    io.add_argument("--json-keys", nargs="+", default=["text"],
                    help="keys (or columns) to tokenize; one dataset each. Wiki dumps: text (cleaned) and title")
    io.add_argument("--json-path", help="nested JSON: where the documents are, e.g. 'document[].paragraph[].form' "
                                        "(NIKL); each element of the first [] is one document")
    io.add_argument("--text-mode", choices=["line", "paragraph"], default="line",
                    help="plain text: a document per line, or documents separated by blank lines")
    io.add_argument("--output-prefix", required=True, help="writes PREFIX_<key>_document.bin/.idx")
    io.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    tok = p.add_argument_group("tokenization")
    tok.add_argument("--tokenizer", "--tokenizer-model", dest="tokenizer", required=True,
                     help="tokenizer folder (tokenizer.json, vocab.json+merges.txt, vocab.txt or *.model) or hub name")
    tok.add_argument("--append-eod", action="store_true",
                     help="causal LM documents: end every document with the end-of-text token, and start it with "
                          "the tokenizer's BOS where its own encoding adds one (a Llama's, Mistral's or Gemma's)")
    tok.add_argument("--split-sentences", action="store_true",
                     help="one sequence per sentence (for MLM); writes PREFIX_<key>_sentence.bin/.idx")
    tok.add_argument("--normalization", choices=NORMALIZATIONS, default="nfc",
                     help="Unicode normalization before encoding (decomposed Korean would become jamo pieces); "
                          "none keeps the bytes")
    run_ = p.add_argument_group("execution")
    run_.add_argument("--workers", type=int, default=max(1, os.cpu_count() or 1), help="encoding processes")
    run_.add_argument("--chunk-mb", type=float, default=1.0, help="MB of input per work item")
    run_.add_argument("--max-document-mb", type=float, default=16.0,
                      help="a larger document is bad input (encoding takes ~300x a document's size in memory)")
    run_.add_argument("--shard-index", type=int, default=0, help="process shard i of --num-shards (cluster arrays)")
    run_.add_argument("--num-shards", type=int, default=1, help="split the input into this many shards")
    run_.add_argument("--skip-bad-input", action="store_true",
                      help="skip and count bad records (invalid JSON, missing key, not UTF-8, truncated file) "
                           "instead of stopping at the first")
    run_.add_argument("--no-progress", action="store_true", help="no progress line")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    summary = preprocess(PreprocessOptions(
        inputs=args.input, output_prefix=args.output_prefix, tokenizer=args.tokenizer, json_keys=args.json_keys,
        split_sentences=args.split_sentences, append_eod=args.append_eod, workers=args.workers,
        chunk_bytes=int(args.chunk_mb * (1 << 20)), max_document_bytes=int(args.max_document_mb * (1 << 20)),
        text_mode=args.text_mode, input_format=args.input_format,
        json_path=args.json_path, normalization=args.normalization,
        shard_index=args.shard_index, num_shards=args.num_shards, skip_bad_input=args.skip_bad_input,
        overwrite=args.overwrite, progress=not args.no_progress,
    ))
    for line in summary.lines():
        print(line)
    return 0


def cli() -> None:
    run(main)


if __name__ == "__main__":
    cli()
