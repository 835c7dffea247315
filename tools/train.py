#!/usr/bin/env python
"""Pretrain GPT-2 / BERT. See ``pretrain.cli.train`` (also the ``pretrain-train`` command)."""

from pretrain.cli.train import cli

if __name__ == "__main__":
    cli()
