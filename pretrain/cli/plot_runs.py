"""Overlay the curves of several runs in one picture, labelled by their run dirs' names.

    pretrain-plot-runs runs/ko-gpt2 runs/de-gpt2 --output compare.png
    python tools/plot_runs.py runs/ko-gpt2 --output ko.png --loss-only

Each run dir is read from its metrics.jsonl; a resumed run is one continuous curve."""

from __future__ import annotations

import argparse
from pathlib import Path

from pretrain.cli.runner import UserError, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", nargs="+", help="run dirs (run.dir of training runs)")
    parser.add_argument("--output", required=True, help="the PNG to write")
    parser.add_argument("--loss-only", action="store_true", help="only the loss panel (larger)")
    args = parser.parse_args(argv)
    from pretrain.plots import plot_loss, plot_overview, read_metrics

    runs = []
    for run_dir in args.run_dirs:
        try:
            runs.append(read_metrics(run_dir))
        except FileNotFoundError as exc:
            raise UserError(str(exc)) from None
    names = [r.name for r in runs]
    if len(set(names)) < len(names):  # two folders called "run": tell them apart by their parents
        for r, run_dir in zip(runs, args.run_dirs):
            r.name = "/".join(Path(run_dir).resolve().parts[-2:])
    (plot_loss if args.loss_only else plot_overview)(runs, args.output)
    print(f"wrote {args.output} ({len(runs)} run{'s' if len(runs) > 1 else ''}: {', '.join(r.name for r in runs)})")
    return 0


def cli() -> None:
    run(main)


if __name__ == "__main__":
    cli()
