#!/usr/bin/env python
"""Tokenize corpora into .bin/.idx files. See ``pretrain.cli.preprocess_data``."""

from pretrain.cli.preprocess_data import cli

if __name__ == "__main__":
    cli()
