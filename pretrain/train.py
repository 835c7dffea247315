"""Pretrain a GPT-2 causal LM or a BERT masked LM with DeepSpeed ZeRO-3.

    deepspeed --num_gpus N pretrain/train.py --config tiny_clm data.tokenizer=TOK data.prefixes=[P] run.dir=R
    torchrun --nproc_per_node N pretrain/train.py --config CONFIG.yaml [section.key=value ...]
    srun python pretrain/train.py --config CONFIG.yaml          (one task per GPU; also mpirun)

Restarting the same command with the same run.dir resumes from its latest complete checkpoint.
"""

from __future__ import annotations

import os
import sys
import time

if __package__ in (None, ""):
    # Run as a script, Python puts pretrain/ first on sys.path, where config.py, model.py, data/ ...
    # would shadow top-level modules of the same names. Put the repository root there instead.
    _here = os.path.dirname(os.path.abspath(__file__))
    if sys.path and os.path.abspath(sys.path[0]) == _here:
        sys.path[0] = os.path.dirname(_here)

import argparse  # noqa: E402
import logging  # noqa: E402
import warnings  # noqa: E402

# torch.distributed deprecation notices, raised inside DeepSpeed on every collective
warnings.filterwarnings("ignore", category=FutureWarning, module="torch.distributed")


STOPPED_EARLY = 75  # saved and stopped before train.steps (signal, STOP file, exit limits): relaunch to resume


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="a YAML file, or a shipped config name (pretrain/configs/)")
    parser.add_argument("overrides", nargs="*", help="section.key=value, e.g. train.steps=1000 run.dir=runs/x")
    parser.add_argument("--local_rank", "--local-rank", type=int, help=argparse.SUPPRESS)  # set by launchers
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from pretrain import distributed
    from pretrain.config import ConfigError, load_config, validate

    env = distributed.detect()
    env.export()
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s [rank {env.rank}] %(levelname)s %(message)s",
                        datefmt="%H:%M:%S")
    for noisy in ("DeepSpeed", "deepspeed", "torch.distributed"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        config = load_config(args.config, args.overrides)
        validate(config, env.world_size)
        preflight(config)
    except ConfigError as exc:
        if env.rank == 0:
            print(f"error: {exc}", file=sys.stderr)
        else:
            # every rank finds the same problems, but only rank 0 says them; srun --kill-on-bad-exit
            # kills all ranks when the first exits, so the others give rank 0 time to print first
            time.sleep(5)
        return 2
    return run(config, env)


def preflight(config) -> None:
    """Checks that need the tokenizer: the data was made with it and suits the objective."""
    from pretrain.config import ConfigError
    from pretrain.data.builder import check_datasets
    from pretrain.tokenization import TokenizerError, load_tokenizer

    try:
        tokenizer = load_tokenizer(config.data.tokenizer)
    except TokenizerError as exc:
        raise ConfigError([f"data.tokenizer: {exc}"]) from None
    problems = check_datasets(config, tokenizer)
    if problems:
        raise ConfigError(problems)


def run(config, env) -> int:
    import torch

    from pretrain.data.builder import DataError
    from pretrain.distributed import RendezvousError, check_rendezvous, init_process_group
    from pretrain.trainer import Trainer, TrainingDiverged

    try:
        check_rendezvous(env)
    except RendezvousError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    init_process_group()
    try:
        state = Trainer(config, env).train()
    except (DataError, TrainingDiverged) as exc:
        print(f"error (rank {env.rank}): {exc}", file=sys.stderr)
        return 1
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    return 0 if state.step >= config.train.steps else STOPPED_EARLY


if __name__ == "__main__":
    sys.exit(main())
