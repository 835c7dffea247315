#!/usr/bin/env python
"""Train a tokenizer. See ``pretrain.cli.train_tokenizer``."""

from pretrain.cli.train_tokenizer import cli

if __name__ == "__main__":
    cli()
