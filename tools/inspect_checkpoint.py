#!/usr/bin/env python
"""List and verify a run's checkpoints. See ``pretrain.cli.inspect_checkpoint`` (also ``pretrain-inspect-checkpoint``)."""

from pretrain.cli.inspect_checkpoint import cli

if __name__ == "__main__":
    cli()
