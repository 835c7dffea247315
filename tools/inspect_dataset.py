#!/usr/bin/env python
"""Inspect an indexed dataset. See ``pretrain.cli.inspect_dataset``."""

from pretrain.cli.inspect_dataset import cli

if __name__ == "__main__":
    cli()
