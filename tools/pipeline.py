#!/usr/bin/env python
"""From a corpus to a model in one command, on this machine or as Slurm jobs. See ``pretrain.cli.pipeline``."""

from pretrain.cli.pipeline import cli

if __name__ == "__main__":
    cli()
