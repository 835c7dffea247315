"""Pretrain a GPT-2 causal LM or a BERT masked LM with DeepSpeed (the ZeRO stage the parallel plan picks).

    deepspeed --num_gpus N tools/train.py --config tiny_clm data.tokenizer=TOK data.prefixes=[P] run.dir=R
    torchrun --nproc_per_node N -m pretrain.cli.train --config CONFIG.yaml [section.key=value ...]
    srun pretrain-train --config CONFIG.yaml          (one task per GPU; also mpirun)

Restarting the same command with the same run.dir resumes from its latest complete checkpoint.
Exit codes: 0 done, 2 bad configuration or data, 75 stopped early and saved (relaunch to resume),
1 any other failure.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import warnings

from pretrain.cli.runner import EXIT_BAD_INPUT, EXIT_FAILURE, EXIT_STOPPED

# torch.distributed deprecation notices, raised inside DeepSpeed on every collective
warnings.filterwarnings("ignore", category=FutureWarning, module="torch.distributed")


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
        report_once_per_node(env, f"error: {exc}")
        return EXIT_BAD_INPUT
    return run(config, env)


def report_once_per_node(env, message: str) -> None:
    """Every rank finds the same problem; the first rank of each node says it. A launcher that kills all
    ranks when the first one exits (srun --kill-on-bad-exit) must not swallow it, so the other ranks wait
    a little before they exit too."""
    if env.local_rank == 0:
        print(message, file=sys.stderr, flush=True)
    else:
        time.sleep(5)


def preflight(config) -> None:
    """Checks that need the tokenizer: the data was made with it and suits the objective."""
    from pretrain.config import ConfigError
    from pretrain.data.builder import check_datasets
    from pretrain.presets import get_preset
    from pretrain.tokenization import TokenizerError, load_tokenizer

    try:
        tokenizer = load_tokenizer(config.data.tokenizer)
    except TokenizerError as exc:
        raise ConfigError([f"data.tokenizer: {exc}"]) from None
    problems = check_datasets(config.data, tokenizer, get_preset(config.model.preset).objective)
    if problems:
        raise ConfigError(problems)


def run(config, env) -> int:
    import torch

    from pretrain.data.builder import DataError
    from pretrain.distributed import RendezvousError, check_rendezvous, init_process_group
    from pretrain.parallel import PlanError
    from pretrain.trainer import Trainer, TrainingDiverged

    try:
        check_rendezvous(env)
    except RendezvousError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    init_process_group()
    try:
        state = Trainer(config, env).train()
    except (DataError, PlanError) as exc:
        report_once_per_node(env, f"error: {exc}")
        return EXIT_BAD_INPUT
    except TrainingDiverged as exc:
        print(f"error (rank {env.rank}): {exc}", file=sys.stderr)
        return EXIT_FAILURE
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    return 0 if state.step >= config.train.steps else EXIT_STOPPED


def cli() -> None:
    sys.exit(main())


if __name__ == "__main__":
    cli()
