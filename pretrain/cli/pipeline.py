"""From a corpus to a model in one command: clean, train the tokenizer, preprocess, train, export, each stage
the pretrain-* command that does it, skipped when its outputs are complete and its inputs and settings are
unchanged (WORKDIR/.pipeline/STAGE.json); a changed setting reruns that stage and everything after it.

    pretrain-pipeline demo                                   # a shipped recipe (pretrain/recipes/), or a path
    pretrain-pipeline kowiki_gpt2 input.paths=[dumps/kowiki-latest-pages-articles-multistream.xml.bz2]
    pretrain-pipeline RECIPE.yaml train.steps=200 tokenizer.vocab_size=32000 --dry-run
    pretrain-pipeline RECIPE.yaml --from train --until train
    pretrain-pipeline RECIPE.yaml --slurm -p gpu -A myproject    # each stage as Slurm jobs, chained by afterok

Overrides are STAGE.key=value; the trainer's own keys are written as the trainer takes them
(train.steps=200, model.dropout=0.1, optim.lr=3e-4). Everything after --slurm goes to every sbatch (until
a lone --). Exit codes: those of pretrain/cli/runner.py; a failed stage's own code is passed on.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from pretrain.cli.runner import UserError, run


def split_slurm(argv: list[str]) -> tuple[list[str], list[str] | None]:
    """(the pipeline's arguments, the sbatch options after --slurm or None)."""
    if "--slurm" not in argv:
        return argv, None
    at = argv.index("--slurm")
    rest = argv[at + 1:]
    if "--" in rest:
        end = rest.index("--")
        return argv[:at] + rest[end + 1:], rest[:end]
    return argv[:at], rest


def parser() -> argparse.ArgumentParser:
    from pretrain.pipeline.stages import STAGES

    names = [stage.name for stage in STAGES]
    p = argparse.ArgumentParser(prog="pretrain-pipeline", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("recipe", nargs="?", help="a recipe file, or a shipped recipe's name (pretrain/recipes/)")
    p.add_argument("overrides", nargs="*", help="STAGE.key=value, e.g. tokenizer.vocab_size=32000 train.steps=200")
    p.add_argument("--workdir", help="where every stage writes (default: the recipe's workdir, else work/NAME)")
    p.add_argument("--from", dest="start", choices=names,
                   help="run this stage and every one after it even where up to date; earlier stages must be complete")
    p.add_argument("--until", choices=names, help="stop after this stage")
    p.add_argument("--dry-run", action="store_true", help="say what each stage would do and print its commands")
    p.add_argument("--slurm", action="store_true", help="submit the stages as Slurm jobs; sbatch options follow")
    p.add_argument("--record", metavar="STAMP", help=argparse.SUPPRESS)  # the last Slurm job of a stage
    p.add_argument("--expect-hash", help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    from pretrain.pipeline.recipe import RecipeError, input_paths, load_recipe
    from pretrain.pipeline.stages import layout_for, plans
    from pretrain.pipeline.stamps import DamagedStamp, WorkdirInUse, workdir_lock
    from pretrain.pipeline.status import PipelineError, check_inputs, decide, record

    argv, sbatch = split_slurm(list(sys.argv[1:] if argv is None else argv))
    args = parser().parse_intermixed_args(argv)
    try:
        if args.record:
            stamp = record(Path(args.record), args.expect_hash)
            print(f"{stamp.stage}: recorded complete in {args.record}")
            return 0
        if not args.recipe:
            raise UserError("name a recipe: pretrain-pipeline RECIPE.yaml (shipped: pretrain/recipes/*.yaml)")
        recipe = load_recipe(args.recipe, args.overrides, args.workdir)
        layout = layout_for(recipe)
        stage_plans = plans(recipe)
        print(f"pipeline {recipe.name} ({recipe.path}) in {layout.workdir}: "
              f"{' -> '.join(p.name for p in stage_plans)}", flush=True)
        with contextlib.nullcontext() if args.dry_run else workdir_lock(layout.stamps):
            statuses = decide(stage_plans, layout, args.start, args.until)
            check_inputs(statuses, input_paths(recipe))
            if sbatch is not None:
                from pretrain.pipeline.slurm import submit_stages

                return submit_stages(statuses, layout, recipe.name, sbatch, args.dry_run)
            from pretrain.pipeline.local import run_stages

            code = run_stages(statuses, layout, args.dry_run)
        if code == 0 and not args.dry_run:
            print(f"\npipeline {recipe.name}: every stage{' up to ' + args.until if args.until else ''} is complete "
                  f"({layout.workdir})")
        return code
    except (RecipeError, PipelineError, WorkdirInUse, DamagedStamp) as exc:
        raise UserError(str(exc)) from None


def cli() -> None:
    run(main)


if __name__ == "__main__":
    cli()
