#!/usr/bin/env python
"""Export a checkpoint to Hugging Face format. See ``pretrain.cli.export_hf``."""

from pretrain.cli.export_hf import cli

if __name__ == "__main__":
    cli()
