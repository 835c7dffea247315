"""Merge indexed datasets, e.g. the shards of an array job, into one .bin/.idx pair."""

from __future__ import annotations

import argparse

from pretrain.cli.runner import UserError, run
from pretrain.data.merge import SHARD_SUFFIX, expand_inputs, merge_datasets


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--input", nargs="+", required=True,
                   help="dataset prefixes, in order: PREFIX (merges PREFIX.shard-*-of-N, checking none is missing), "
                        "a folder of .idx files (Megatron's merge_datasets.py), or a glob")
    p.add_argument("--output-prefix", help="default: the single sharded input's prefix without the shard suffix")
    p.add_argument("--overwrite", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    prefixes = expand_inputs(args.input)
    output = args.output_prefix
    if output is None:
        stems = {SHARD_SUFFIX.sub("", p) for p in prefixes}
        if len(stems) != 1 or stems == set(prefixes):
            raise UserError("pass --output-prefix (the inputs are not the shards of one prefix).")
        output = stems.pop()
    merged = merge_datasets(prefixes, output, overwrite=args.overwrite)
    print(f"merged {len(prefixes)} datasets -> {output}.bin/.idx: {merged.num_documents:,} documents, "
          f"{merged.num_sequences:,} sequences, {merged.num_tokens:,} tokens")
    return 0


def cli() -> None:
    run(main)


if __name__ == "__main__":
    cli()
