#!/usr/bin/env python
"""Plan per-GPU memory of a run. See ``pretrain.cli.plan``."""

from pretrain.cli.plan import cli

if __name__ == "__main__":
    cli()
