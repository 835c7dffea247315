"""Checkpoints: DeepSpeed's (partitioned) model and optimizer state plus the trainer's own state.

Layout under ``run.dir/checkpoints``::

    step00000100/          DeepSpeed files of every rank, rng_rank{r}.pt, trainer_state.json, COMPLETE
    latest                 the newest complete tag, replaced atomically

``COMPLETE`` is written last, by rank 0, after every rank has finished writing, and only then is
``latest`` moved. A checkpoint half-written when a node died has no COMPLETE and is never resumed
from. Resuming with a different number of ranks converts the ZeRO checkpoint to DeepSpeed's
universal format first (``<tag>_universal``), which any world size can load.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from pretrain.atomic import atomic_write_text

log = logging.getLogger(__name__)
COMPLETE = "COMPLETE"


@dataclass
class TrainerState:
    step: int = 0
    consumed_samples: int = 0
    world_size: int = 1
    nonfinite_streak: int = 0
    zero_stage: int | None = None  # the stage the checkpoint was saved with (a resumed run keeps it)


def tag_for(step: int) -> str:
    return f"step{step:08d}"


def complete_tags(checkpoint_dir: Path) -> list[str]:
    return sorted(p.name for p in checkpoint_dir.glob("step*") if (p / COMPLETE).exists() and not p.name.endswith("_universal"))


def latest_complete(checkpoint_dir: Path) -> str | None:
    """The tag to resume from: ``latest`` if complete, else the newest complete one (said so)."""
    pointer = checkpoint_dir / "latest"
    tags = complete_tags(checkpoint_dir)
    if pointer.exists():
        tag = pointer.read_text().strip()
        if (checkpoint_dir / tag / COMPLETE).exists():
            return tag
        log.warning("checkpoint %s named by %s is incomplete (the run died while saving it); using %s",
                    tag, pointer, tags[-1] if tags else "none")
    return tags[-1] if tags else None


def read_state(checkpoint_dir: Path, tag: str) -> TrainerState:
    raw = json.loads((checkpoint_dir / tag / "trainer_state.json").read_text())
    state = TrainerState(**{k: raw[k] for k in asdict(TrainerState()) if k in raw})
    if state.zero_stage is None:  # saved before the state recorded it: the files tell ZeRO-3 from the rest
        folder = checkpoint_dir / tag
        state.zero_stage = 3 if any(folder.glob("zero_pp_rank_*_model_states.pt")) else (
            1 if any(folder.glob("*optim_states.pt")) else 0)
    return state


def save(engine, checkpoint_dir: Path, state: TrainerState, config_yaml: str, keep_last: int) -> str:
    """Save on every rank (collective); returns the tag."""
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    tag = tag_for(state.step)
    folder = checkpoint_dir / tag
    if rank == 0 and folder.exists():  # a leftover of a run that died while saving this step
        shutil.rmtree(folder)
    _barrier()
    engine.save_checkpoint(str(checkpoint_dir), tag=tag, save_latest=False)
    torch.save(_rng_state(), folder / f"rng_rank{rank}.pt")
    _barrier()
    if rank == 0:
        atomic_write_text(folder / "trainer_state.json", json.dumps(asdict(state), indent=1))
        atomic_write_text(folder / "config.yaml", config_yaml)
        atomic_write_text(folder / COMPLETE, "")
        atomic_write_text(checkpoint_dir / "latest", tag + "\n")
        for old in complete_tags(checkpoint_dir)[:-keep_last]:
            shutil.rmtree(checkpoint_dir / old, ignore_errors=True)
            shutil.rmtree(checkpoint_dir / f"{old}_universal", ignore_errors=True)
    _barrier()
    return tag


def prepare_universal(checkpoint_dir: Path, tag: str, rank: int) -> str:
    """Convert ``tag`` to DeepSpeed's universal format (rank 0; the others wait); returns its tag."""
    universal = f"{tag}_universal"
    target = checkpoint_dir / universal
    if rank == 0 and not (target / COMPLETE).exists():
        shutil.rmtree(target, ignore_errors=True)
        log.info("the checkpoint was saved with another number of ranks: converting %s to the universal format", tag)
        command = [sys.executable, "-m", "deepspeed.checkpoint.ds_to_universal", "--input_folder",
                   str(checkpoint_dir / tag), "--output_folder", str(target), "--num_extract_workers", "1",
                   "--num_merge_workers", "1", "--inject_missing_state"]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"converting {tag} to a universal checkpoint failed:\n{done.stderr[-3000:]}")
        for name in ("trainer_state.json",):
            shutil.copyfile(checkpoint_dir / tag / name, target / name)
        atomic_write_text(target / COMPLETE, "")
    _barrier()
    return universal


def load(engine, checkpoint_dir: Path, tag: str, rank: int, weight_decays: list[float]) -> None:
    path, _ = engine.load_checkpoint(str(checkpoint_dir), tag=tag, load_optimizer_states=True,
                                     load_lr_scheduler_states=True)
    if path is None:
        raise RuntimeError(f"DeepSpeed could not load checkpoint {checkpoint_dir / tag}")
    if tag.endswith("_universal"):
        _repair_universal_load(engine.optimizer, weight_decays)
    rng_file = checkpoint_dir / tag.removesuffix("_universal") / f"rng_rank{rank}.pt"
    if rng_file.exists():
        _set_rng_state(torch.load(rng_file, weights_only=False))


def _repair_universal_load(optimizer, weight_decays: list[float]) -> None:
    """Undo two slips of DeepSpeed's ZeRO-3 universal loader (0.19): it copies the first parameter
    group's hyperparameters to every group (weight decay would reach biases and norms), and it gives
    every group the same ``step`` tensor, which Adam increments in place once per group per step
    (bias correction would drift). Without this, a run resumed on another world size diverges."""
    for group, decay in zip(optimizer.param_groups, weight_decays):
        group["weight_decay"] = decay
    inner = getattr(optimizer, "optimizer", optimizer)
    for state in inner.state.values():
        if torch.is_tensor(state.get("step")):
            state["step"] = state["step"].clone()


def _rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _barrier() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
