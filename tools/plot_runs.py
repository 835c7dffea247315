#!/usr/bin/env python
"""Overlay runs' curves in one PNG. See ``pretrain.cli.plot_runs`` (also the ``pretrain-plot-runs`` command)."""

from pretrain.cli.plot_runs import cli

if __name__ == "__main__":
    cli()
