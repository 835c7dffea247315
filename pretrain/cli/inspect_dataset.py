"""Inspect an indexed dataset: counts, a length histogram, and any document decoded."""

from __future__ import annotations

import argparse

from pretrain.cli.runner import UserError, run
from pretrain.data.indexed import IndexedDataset
from pretrain.data.inspect import describe
from pretrain.data.provenance import mismatch


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("prefix", help="dataset prefix (PREFIX.bin / PREFIX.idx)")
    p.add_argument("--document", type=int, nargs="*", default=[], help="print these documents")
    p.add_argument("--tokenizer", help="decode printed documents with this tokenizer (else print ids)")
    p.add_argument("--bins", type=int, default=12, help="histogram buckets")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    dataset = IndexedDataset(args.prefix)
    for line in describe(dataset, args.bins):
        print(line)
    tokenizer = None
    if args.tokenizer:
        from pretrain.tokenization import load_tokenizer
        from pretrain.tokenization.specials import ROLES

        # every role: data written when loads added them shows them (roles added after the vocabulary never renumber)
        tokenizer = load_tokenizer(args.tokenizer, ROLES, quiet=True)
        if other := mismatch(dataset, tokenizer.backend, tokenizer.source, "--tokenizer"):
            raise UserError(other)
    for k in args.document:
        if not -dataset.num_documents <= k < dataset.num_documents:
            raise UserError(f"document {k} does not exist: the dataset has {dataset.num_documents} documents.")
        k %= dataset.num_documents
        print(f"--- document {k}: {len(dataset.document(k))} tokens in {len(dataset.document_sequences(k))} sequences")
        for s in dataset.document_sequences(k):
            ids = dataset[s]
            if tokenizer and len(ids) and int(ids.max()) >= tokenizer.vocab_size:  # decode would drop them silently
                raise UserError(f"document {k} holds id {int(ids.max())}, beyond the {tokenizer.vocab_size:,} tokens "
                                f"of {args.tokenizer}: the dataset was made with another tokenizer. Pass that one.")
            print(repr(tokenizer.decode(ids)) if tokenizer else " ".join(map(str, ids)))
    return 0


def cli() -> None:
    run(main)


if __name__ == "__main__":
    cli()
