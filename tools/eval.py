#!/usr/bin/env python
"""Score a model's loss, perplexity and bits per byte on text. See ``pretrain.cli.eval``."""

from pretrain.cli.eval import cli

if __name__ == "__main__":
    cli()
