"""Checkpoints: DeepSpeed's (partitioned) model and optimizer state plus the trainer's own state.

Layout under ``run.dir/checkpoints``::

    step00000100/          DeepSpeed files of every rank, rng_rank{r}.pt, trainer_state.json, COMPLETE
    latest                 the newest complete tag, replaced atomically

    damaged/, abandoned/   checkpoints set aside (never deleted): failed verification, or newer than
                           the one ``run.resume_from`` picked

``MANIFEST.json`` (every file's size and checksum, see ``manifest``) and then ``COMPLETE`` are written
last, by rank 0, after every rank has finished writing, and only then is ``latest`` moved. A checkpoint
half-written when a node died or the disk filled has no COMPLETE and is never resumed from. Before a
checkpoint is resumed from, the ranks check it against its manifest; a damaged one is set aside with a
warning and the previous complete one is used; one without a manifest is refused (its files cannot be
checked) until ``pretrain-inspect-checkpoint --write-manifest`` records them. Resuming with a different
number of ranks converts the ZeRO checkpoint to DeepSpeed's universal format first (``<tag>_universal``),
which any world size can load.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from pretrain import manifest
from pretrain.atomic import atomic_write_text

log = logging.getLogger(__name__)
COMPLETE = "COMPLETE"
CONVERSION_FAILED = "FAILED"  # in a <tag>_universal folder: rank 0's conversion failed (the other ranks stop)
INSPECT_HINT = "tools/inspect_checkpoint.py RUN_DIR lists them and checks each"


class CheckpointError(RuntimeError):
    """No checkpoint can be resumed from as asked; the message says what to do."""


class CheckpointSaveError(RuntimeError):
    """A checkpoint could not be written (full disk, I/O error); the previous one stays ``latest``."""


@dataclass
class TrainerState:
    step: int = 0
    consumed_samples: int = 0
    world_size: int = 1
    nonfinite_streak: int = 0
    zero_stage: int | None = None  # the stage the checkpoint was saved with (a resumed run keeps it)
    wall_seconds: float = 0.0  # training wall time of every launch so far, set at each save
    branched_from: str | None = None  # the tag run.resume_from took this run back to (carried by every later save)


def tag_for(step: int) -> str:
    return f"step{step:08d}"


def complete_tags(checkpoint_dir: Path) -> list[str]:
    return sorted(p.name for p in checkpoint_dir.glob("step*") if (p / COMPLETE).exists() and not p.name.endswith("_universal"))


def step_of(tag: str) -> int:
    return int(tag.removeprefix("step").removesuffix("_universal"))


def resumes(checkpoint_dir: Path) -> bool:
    """Will a launch resume from this folder (``find_resumable`` finds a tag in it, or raises)?"""
    return bool(resume_candidates(checkpoint_dir))


def resume_candidates(checkpoint_dir: Path) -> list[str]:
    """Complete tags to try, newest first."""
    return list(reversed(complete_tags(checkpoint_dir)))


def find_resumable(checkpoint_dir: Path, rank: int, world_size: int, resume_from: str | None) -> str | None:
    """The checkpoint to resume from, checked against its manifest by all ranks together (collective).

    A damaged newest checkpoint is set aside under ``damaged/`` with a warning that names the file and
    the steps that will be trained again, and the previous complete one is used; ``resume_from`` picks
    one tag (newer ones are set aside under ``abandoned/``) once: where the newest checkpoint already continues
    from that tag (a relaunch of the same command, or the run summary's resume line, which both keep
    run.resume_from), the run goes on from the newest. Raises CheckpointError when nothing usable is left, rather
    than silently starting over."""
    if not checkpoint_dir.is_dir():
        if resume_from:
            raise CheckpointError(f"run.resume_from={resume_from}, but {checkpoint_dir} does not exist.")
        return None
    candidates = resume_candidates(checkpoint_dir)
    newest = candidates[0] if candidates else None
    if resume_from and newest not in (None, resume_from) and branch_of(checkpoint_dir, candidates) == resume_from:
        if rank == 0:
            log.warning("run.resume_from=%s was taken by an earlier launch of this run: %s continues from it, so "
                        "this launch resumes from %s (to branch from %s again, move the checkpoints after it away)",
                        resume_from, newest, newest, resume_from)
        resume_from = None
    if resume_from:
        if resume_from not in candidates:
            raise CheckpointError(f"run.resume_from={resume_from}: no complete checkpoint of that name in "
                                  f"{checkpoint_dir} (complete: {', '.join(reversed(candidates)) or 'none'}).")
        candidates = [resume_from]
    damaged: list[str] = []
    for tag in candidates:
        found = _verify_together(checkpoint_dir / tag, rank, world_size)
        if found is None:
            raise CheckpointError(unverifiable(checkpoint_dir, tag))
        if not found:
            break
        if rank == 0:
            log.warning("checkpoint %s is damaged:\n  %s", tag, "\n  ".join(found[:5]))
        if resume_from:
            raise CheckpointError(f"run.resume_from={tag}: the checkpoint is damaged ({found[0]}). Choose another "
                                  f"tag ({INSPECT_HINT}).")
        damaged.append(tag)
    else:
        if damaged:
            raise CheckpointError(f"every complete checkpoint in {checkpoint_dir} is damaged ({', '.join(damaged)}); "
                                  f"nothing was moved or deleted. Restore their files, or move {checkpoint_dir} "
                                  f"away to start over from step 0 ({INSPECT_HINT}).")
        return None
    newer = [t for t in complete_tags(checkpoint_dir) if step_of(t) > step_of(tag) and t not in damaged]
    if rank == 0 and (damaged or newer):
        for old, why in [(t, "damaged") for t in damaged] + [(t, "abandoned") for t in newer]:
            log.warning("set %s aside as %s (not deleted)", old, set_aside(checkpoint_dir, old, why))
        atomic_write_text(checkpoint_dir / "latest", tag + "\n")
        lost = max(step_of(t) for t in damaged + newer) - step_of(tag)
        log.warning("resuming from %s (step %d): %d step(s) after it will be trained again", tag, step_of(tag), lost)
    _barrier()
    return tag


def branch_of(checkpoint_dir: Path, tags: list[str]) -> str | None:
    """The tag run.resume_from last took the run back to, as the newest of ``tags`` whose state can be read
    records it (a damaged state file is skipped: verification names it), or None."""
    for tag in tags:
        try:
            return read_state(checkpoint_dir, tag).branched_from
        except (OSError, ValueError, TypeError):
            continue
    return None


def unverifiable(checkpoint_dir: Path, tag: str) -> str:
    """Why a complete checkpoint without a manifest is not resumed from, and the ways on."""
    run_dir = checkpoint_dir.parent
    return (f"checkpoint {tag} is marked complete but has no {manifest.MANIFEST} (it was saved by a version of this "
            f"project before manifests, or copied without it), so its files cannot be checked before they are "
            f"trusted. If its files are intact, record them as they are now: `pretrain-inspect-checkpoint {run_dir} "
            f"--write-manifest {tag}`, then relaunch; or resume from an earlier checkpoint with "
            f"run.resume_from=TAG ({INSPECT_HINT}).")


def _verify_together(folder: Path, rank: int, world_size: int) -> list[str] | None:
    """Every rank checks its share of the files; all get everybody's problems (None: no manifest)."""
    mine = manifest.verify(folder, rank, world_size)
    if not torch.distributed.is_initialized():
        return mine
    everyone: list = [None] * world_size
    torch.distributed.all_gather_object(everyone, mine)
    if all(part is None for part in everyone):
        return None
    return [problem for part in everyone for problem in (part or [])]


def set_aside(checkpoint_dir: Path, tag: str, why: str) -> Path:
    """Move a checkpoint (and its universal conversion) to ``checkpoint_dir/why/``; returns where."""
    target = checkpoint_dir / why / tag
    for n in range(2, 1000):
        if not target.exists():
            break
        target = checkpoint_dir / why / f"{tag}-{n}"
    target.parent.mkdir(exist_ok=True)
    (checkpoint_dir / tag).rename(target)
    universal = checkpoint_dir / f"{tag}_universal"
    if universal.exists():
        shutil.rmtree(universal, ignore_errors=True)  # derived from the set-aside files: rebuilt if needed
    return target


def latest_complete(checkpoint_dir: Path) -> str | None:
    """The newest complete checkpoint (``latest`` names it too, unless the run died between the two
    writes; a checkpoint without COMPLETE is never used)."""
    tags = complete_tags(checkpoint_dir)
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
    """Save on every rank (collective); returns the tag. Raises CheckpointSaveError on a write error
    (the failing rank leaves at once; the others then lose it in the next collective)."""
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    world_size = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    tag = tag_for(state.step)
    folder = checkpoint_dir / tag
    try:
        if rank == 0 and folder.exists():
            if (folder / COMPLETE).exists():  # never overwrite a complete checkpoint: keep it aside
                log.warning("set %s aside as %s", tag, set_aside(checkpoint_dir, tag, "replaced"))
            else:  # a leftover of a run that died while saving this step
                shutil.rmtree(folder)
        _barrier()
        engine.save_checkpoint(str(checkpoint_dir), tag=tag, save_latest=False)
        torch.save(_rng_state(), folder / f"rng_rank{rank}.pt")
        if rank == 0:
            atomic_write_text(folder / "trainer_state.json", json.dumps(asdict(state), indent=1))
            atomic_write_text(folder / "config.yaml", config_yaml)
        _barrier()
        names = [manifest.files_of(folder) if rank == 0 else None]
        if torch.distributed.is_initialized():  # one listing: a shared file system may lag on other nodes
            torch.distributed.broadcast_object_list(names, src=0)
        records = [manifest.describe(folder, manifest.share(names[0], rank, world_size))]  # each rank its share
        if torch.distributed.is_initialized():
            mine, records = records[0], [None] * world_size
            torch.distributed.all_gather_object(records, mine)
        if rank == 0:
            manifest.write(folder, {name: r for part in records for name, r in part.items()})
            atomic_write_text(folder / COMPLETE, "")
            atomic_write_text(checkpoint_dir / "latest", tag + "\n")
            for old in complete_tags(checkpoint_dir)[:-keep_last]:
                shutil.rmtree(checkpoint_dir / old, ignore_errors=True)
                shutil.rmtree(checkpoint_dir / f"{old}_universal", ignore_errors=True)
    except (OSError, RuntimeError) as exc:
        if not (isinstance(exc, OSError) or _is_torch_write_failure(exc)):
            raise  # e.g. a peer lost in a barrier: the caller says that
        previous = latest_complete(checkpoint_dir)
        raise CheckpointSaveError(
            f"saving checkpoint {tag} failed on rank {rank}: {_write_failure(exc, folder)}. {folder} has no COMPLETE "
            f"and is never resumed from (the next save of that step removes it); the latest complete checkpoint "
            f"is {previous or 'none'}. Free space or fix the file system, then relaunch the same command to "
            f"resume from it.") from None
    _barrier()
    return tag


def _is_torch_write_failure(exc: RuntimeError) -> bool:
    """torch.save writes through C++: a full disk or a failing file system surfaces as a RuntimeError
    from its zip writer ("unexpected pos", "PytorchStreamWriter failed writing file"), not an OSError."""
    return any(sign in str(exc) for sign in ("inline_container", "PytorchStreamWriter", "file write failed"))


def _write_failure(exc: OSError | RuntimeError, folder: Path) -> str:
    """What went wrong, in words: the OS error, or torch's, with the free space the file system reports."""
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc}" + (f" ({exc.filename})" if exc.filename else "")
    try:
        free = shutil.disk_usage(folder if folder.exists() else folder.parent).free
        space = f"No space left on device ({free:,} bytes free)" if free < 64 << 20 else f"{free / 2**30:.1f} GiB free"
    except OSError:
        space = "free space unknown"
    first = (str(exc).strip().splitlines() or ["?"])[0][:200]
    return f"writing a file into {folder.name} failed ({space}; torch: {first})"


def prepare_universal(checkpoint_dir: Path, tag: str, rank: int) -> str:
    """Convert ``tag`` to DeepSpeed's universal format (rank 0; the others wait); returns its tag."""
    universal = f"{tag}_universal"
    target = checkpoint_dir / universal
    converting = rank == 0 and not (target / COMPLETE).exists()
    if converting:  # an earlier launch's partial or FAILED conversion goes before any rank looks at the folder
        shutil.rmtree(target, ignore_errors=True)
    _barrier()
    if converting:
        log.info("the checkpoint was saved with another number of ranks: converting %s to the universal format", tag)
        # one worker each way: each holds a whole optimizer shard (a big model's: tens of GB)
        command = [sys.executable, "-m", "deepspeed.checkpoint.ds_to_universal", "--input_folder",
                   str(checkpoint_dir / tag), "--output_folder", str(target), "--num_extract_workers", "1",
                   "--num_merge_workers", "1", "--inject_missing_state"]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            target.mkdir(parents=True, exist_ok=True)
            atomic_write_text(target / CONVERSION_FAILED, done.stderr[-3000:])
            raise CheckpointError(f"converting {tag} to a universal checkpoint (to resume it on another number of "
                                  f"ranks) failed; DeepSpeed's ds_to_universal said:\n{done.stderr[-3000:]}")
        for name in ("trainer_state.json",):
            shutil.copyfile(checkpoint_dir / tag / name, target / name)
        atomic_write_text(target / COMPLETE, "")
    elif rank != 0:
        wait_for_conversion(target, checkpoint_dir.parent / "LOCK")
    _barrier()
    return universal


def wait_for_conversion(target: Path, lock: Path, poll_s: float = 2.0, grace_s: float | None = None) -> None:
    """Ranks other than 0 wait for rank 0's conversion by its files, not in a collective, which would end after
    train.distributed_timeout_minutes (a big model's conversion takes longer); rank 0 is alive while its run
    lock says so (its process on this host, its heartbeat on another), and while the lock is there: rank 0
    holds it from before this wait to its end, so one missing for ``grace_s`` (default the lock's staleness
    limit) means rank 0 stopped without writing COMPLETE or FAILED (a full disk)."""
    from pretrain.run_lock import STALE_S, may_be_alive, read_holder

    grace_s = STALE_S if grace_s is None else grace_s
    unlocked_since = None
    while not (target / COMPLETE).exists():
        if (target / CONVERSION_FAILED).exists():
            raise CheckpointError(f"rank 0 could not convert {target.name.removesuffix('_universal')} to a universal "
                                  f"checkpoint (its message is above; {target / CONVERSION_FAILED} holds it)")
        holder = read_holder(lock)
        if holder is not None and not may_be_alive(holder):
            raise torch.distributed.DistError(f"rank 0 ({holder.describe()}) is gone; it was converting {target.name}")
        unlocked_since = None if holder is not None else unlocked_since or time.monotonic()
        if unlocked_since is not None and time.monotonic() - unlocked_since > grace_s:  # rank 0 let go of the run
            raise torch.distributed.DistError(f"rank 0 released {lock} without converting {target.name}: it stopped")
        time.sleep(poll_s)


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
