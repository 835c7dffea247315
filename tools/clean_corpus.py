#!/usr/bin/env python
"""Clean corpora: quality rules and duplicates. See ``pretrain.cli.clean_corpus``."""

from pretrain.cli.clean_corpus import cli

if __name__ == "__main__":
    cli()
