#!/usr/bin/env python
"""Merge indexed datasets. See ``pretrain.cli.merge_datasets``."""

from pretrain.cli.merge_datasets import cli

if __name__ == "__main__":
    cli()
