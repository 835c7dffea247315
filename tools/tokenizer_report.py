#!/usr/bin/env python
"""Compare tokenizers on real text. See ``pretrain.cli.tokenizer_report``."""

from pretrain.cli.tokenizer_report import cli

if __name__ == "__main__":
    cli()
