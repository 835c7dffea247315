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
import os
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import NoReturn

from pretrain.cli.runner import EXIT_BAD_INPUT, EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_STOPPED

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
        problems = []
        try:
            validate(config, env.world_size)
        except ConfigError as exc:
            problems += exc.problems
        problems += init_from_problems(config)  # a folder's shape is checked apart: list it with the rest
        if problems:
            raise ConfigError(problems)
        preflight(config)
    except ConfigError as exc:
        report_once_per_node(env, f"error: {exc}")
        return EXIT_BAD_INPUT
    log_to_file(config.run.dir, env.rank)
    return run(config, env)


def log_to_file(run_dir: str, rank: int) -> None:
    """Each rank also appends its log to RUN_DIR/logs/rank{RANK}.log: on a launcher's shared stream the ranks'
    lines interleave (and on a cluster the stream may be lost with the job); a file per rank is what a
    person or a test reads after the run."""
    folder = Path(run_dir) / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(folder / f"rank{rank}.log", encoding="utf-8")
    handler.setFormatter(logging.getLogger().handlers[0].formatter)
    logging.getLogger().addHandler(handler)


def report_once_per_node(env, message: str) -> None:
    """Every rank finds the same problem; the first rank of each node says it. A launcher that kills all
    ranks when the first one exits (srun --kill-on-bad-exit) must not swallow it, so the other ranks wait
    a little before they exit too. The speaker also waits a moment: srun forwards a task's output through
    its step daemon, and an exit that triggers the kill can overtake the last lines still on their way."""
    if env.local_rank == 0:
        print(message, file=sys.stderr, flush=True)
        if env.world_size > 1:
            time.sleep(1)
    else:
        time.sleep(5)


def init_from_problems(config) -> list[str]:
    """model.init_from on a first launch: a folder holding a transformers model of the preset's family (or a hub
    name the hub answers). A resumed launch builds from the run's own copy (RUN_DIR/model): the folder may be gone."""
    from pretrain.checkpoint import resumes
    from pretrain.model.build import model_shape
    from pretrain.presets import PRESETS

    model, run_dir = config.model, Path(config.run.dir)
    if not model.init_from or model.preset not in PRESETS:  # an unknown preset: validation names it
        return []
    if resumes(run_dir / "checkpoints") and (run_dir / "model" / "config.json").is_file():
        return []
    folder = Path(model.init_from).expanduser()
    if folder.is_dir() and not (folder / "config.json").is_file():
        return [f"model.init_from={model.init_from} holds no config.json: give the folder of a transformers model "
                "(config.json and its weights, as save_pretrained writes them)"]
    if not folder.exists() and (folder.is_absolute() or model.init_from.startswith((".", "~")) or
                                model.init_from.count("/") > 1):  # a path, not a hub name (org/name)
        return [f"model.init_from={model.init_from} does not exist: give the folder of a transformers model, or a "
                "hub name (org/name)"]
    try:
        model_shape(model)
    except ValueError as exc:  # of another family; a name the hub refuses
        reason = str(exc).splitlines()[0]
        return [reason if reason.startswith("model.init_from") else f"model.init_from={model.init_from}: {reason}"]
    except OSError as exc:
        reason = str(exc).splitlines()[0]
        return [f"model.init_from={model.init_from}: its config.json cannot be read ({reason})" if folder.is_dir() else
                f"model.init_from={model.init_from}: no such folder here, and the hub cannot give it ({reason})"]
    return []


def preflight(config) -> None:
    """Checks that need the tokenizer: the data was made with it and suits the objective."""
    from pretrain.config import ConfigError
    from pretrain.data.builder import check_datasets
    from pretrain.presets import get_preset
    from pretrain.run_tokenizer import load_run_tokenizer
    from pretrain.tokenization import TokenizerError

    try:
        tokenizer = load_run_tokenizer(config)  # as the trainer will load it
    except TokenizerError as exc:
        raise ConfigError([f"data.tokenizer: {exc}"]) from None
    problems = check_datasets(config.data, tokenizer, get_preset(config.model.preset).objective)
    if problems:
        raise ConfigError(problems)


def run(config, env) -> int:
    """Train, holding the run dir's lock. A fatal error ends the process at once (``os._exit`` after the
    message): peers blocked in a collective then see this rank's connections close and stop too, instead
    of waiting for the collective timeout."""
    from pretrain.checkpoint import CheckpointError, CheckpointSaveError
    from pretrain.data.builder import DataError
    from pretrain.data.indexed import DataFileError
    from pretrain.distributed import RendezvousError, check_rendezvous, process_group
    from pretrain.parallel import PlanError, UnreadableFolder
    from pretrain.run_lock import RunDirInUse
    from pretrain.trainer import Trainer, TrainingDiverged

    try:
        check_rendezvous(env)
    except RendezvousError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    with process_group(config.train.distributed_timeout_minutes):  # destroyed on the way out, unless it raised
        lock = None
        try:
            lock = claim_run_dir(config.run.dir, env)
            state = Trainer(config, env).train()
        except (DataFileError, CheckpointSaveError, UnreadableFolder) as exc:  # met by some ranks: each says it
            return _leave(lock, f"error (rank {env.rank}): {exc}", EXIT_FAILURE if isinstance(exc, CheckpointSaveError)
                          else EXIT_BAD_INPUT)
        except (DataError, PlanError, CheckpointError, RunDirInUse) as exc:  # the same on every rank
            report_once_per_node(env, f"error: {exc}")
            return _leave(lock, None, EXIT_BAD_INPUT)
        except TrainingDiverged as exc:
            return _leave(lock, f"error (rank {env.rank}): {exc}", EXIT_FAILURE)
        except KeyboardInterrupt:
            if lock is not None:
                lock.release()
            raise
        except Exception as exc:
            if not is_lost_peer(exc):
                if lock is not None:
                    lock.release()
                raise
            return _leave(lock, f"error (rank {env.rank}): lost contact with another rank ({_first_line(exc)}). It "
                          "died or its node failed; its own message, if it had time to write one, is above. Nothing "
                          "after the last complete checkpoint was saved: relaunch the same command to resume from it.",
                          EXIT_FAILURE)
        if lock is not None:
            lock.release()
    return 0 if state.step >= config.train.steps else EXIT_STOPPED


def claim_run_dir(run_dir: str, env):
    """Rank 0 takes run.dir's lock; every rank learns whether it did (collective). Returns the lock
    (rank 0) or None; raises RunDirInUse on every rank when another live run holds it."""
    import torch

    from pretrain.run_lock import RunDirInUse, RunLock

    lock, refusal = None, None
    if env.rank == 0:
        try:
            lock = RunLock(run_dir).acquire()
        except RunDirInUse as exc:
            refusal = str(exc)
    message = [refusal]
    if torch.distributed.is_initialized():
        torch.distributed.broadcast_object_list(message, src=0)
    if message[0]:
        raise RunDirInUse(message[0] if env.rank == 0 else f"rank 0 found {run_dir} in use: {message[0]}")
    return lock


def is_lost_peer(exc: BaseException) -> bool:
    """Whether ``exc`` says that a collective failed because another rank is gone or timed out."""
    import torch

    if isinstance(exc, getattr(torch.distributed, "DistError", ())):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and any(sign in text for sign in (
        "Connection closed by peer", "Connection reset by peer", "Broken pipe", "gloo", "NCCL", "Timed out",
        "timed out", "ProcessGroup"))


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def _leave(lock, message: str | None, code: int) -> NoReturn:
    """Say why, free the run dir, and end the process now: tearing down a process group whose peers are
    gone (or blocked in a collective) can hang."""
    if message:
        print(message, file=sys.stderr, flush=True)
    if lock is not None:
        lock.release()
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)


def cli() -> None:
    """The command: ``main``, then the process ends without finalizing the interpreter (``_leave``). DeepSpeed's
    engine keeps gloo groups referenced from C++ that ``process_group`` cannot free (their worker threads are
    alive at exit), and a finalizing interpreter can abort on them (SIGABRT, exit -6, after the run's work is
    done: seen once in a 2-rank CPU suite run). Everything the run writes is closed and flushed by then."""
    try:
        code = main()
    except KeyboardInterrupt:  # a second Ctrl-C (the first asks the trainer to save and stop)
        print("interrupted: quit without saving; the next launch resumes from the last checkpoint", file=sys.stderr)
        code = EXIT_INTERRUPTED
    except Exception:  # printed as the interpreter would, then the same end (a finalizing interpreter could abort)
        traceback.print_exc()
        code = EXIT_FAILURE
    _leave(None, None, code)


if __name__ == "__main__":
    cli()
