"""Launched by the tests (deepspeed launcher or plain python): build a real Trainer from a config, run
steps, and write what the test checks to RUN_DIR/probe-MODE-rank{RANK}.json: one file per rank, since
two ranks' lines on one stream can interleave into one.

    python tests/probe.py states CONFIG [overrides]   the bytes this rank holds in weights, gradients and
                                                      optimizer states (ZeRO-0 or ZeRO-3)
    python tests/probe.py syncs CONFIG [overrides]    host syncs found in a steady-state train_step
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from pretrain import distributed
from pretrain.config import load_config


def tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)


def optimizer_states(optimizer) -> list[torch.Tensor]:
    return [s for state in optimizer.state.values() for s in state.values() if torch.is_tensor(s) and s.dim()]


def measure_states(trainer) -> dict:
    engine = trainer.engine
    batch = {k: v.to(trainer.device) for k, v in next(iter(trainer._loader(trainer.train_data, 0))).items()
             if k != "num_labels"}
    loss, _ = engine(batch)
    engine.backward(loss)
    if trainer.plan.zero_stage == 0:
        params = list(trainer.model.parameters())
        measured = {"parameters": tensor_bytes(params), "gradients": tensor_bytes(p.grad for p in params), "master": 0}
        engine.step()
        measured["moments"] = tensor_bytes(optimizer_states(engine.optimizer))
        return measured
    engine.step()
    zero = engine.optimizer
    persistent = [p for p in trainer.model.parameters() if getattr(p, "ds_persist", False)]
    return {
        "parameters": tensor_bytes(zero.fp16_partitioned_groups_flat) + tensor_bytes(persistent),
        "master": tensor_bytes(zero.fp32_partitioned_groups_flat),
        "gradients": tensor_bytes([zero.grad_partitions_flat_buffer]),  # the fp32 gradient partition buffer
        "moments": tensor_bytes(optimizer_states(zero.optimizer)),
    }


def find_syncs(trainer) -> list[str]:
    """What in a steady-state step would make the host wait for the device (see pretrain/host_sync.py): on any
    machine through HostSyncs; on a GPU also what torch.cuda.set_sync_debug_mode("error") refuses, with
    every synchronize patched to be counted."""
    from pretrain.host_sync import HostSyncs

    loader = iter(trainer._loader(trainer.train_data, 0))
    for _ in range(2):  # the optimizer's state, compilation, ZeRO-3's trace of the module order (2nd step)
        trainer.train_step(loader)
    batches = [next(loader) for _ in range(2 * trainer.plan.accumulation)]  # fetched (and pinned) beforehand
    steps = [s["step"] for s in trainer.engine.optimizer.state.values() if torch.is_tensor(s.get("step"))]
    host = [s for s in steps if s.device.type == "cpu"] + [t for b in batches for t in b.values() if torch.is_tensor(t)]
    with HostSyncs(host_tensors=host) as syncs:
        trainer.train_step(iter(batches[: trainer.plan.accumulation]))
    found = list(syncs.found)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            with HostSyncs(host_tensors=host) as explicit:  # set_sync_debug_mode misses explicit synchronizes
                trainer.train_step(iter(batches[trainer.plan.accumulation:]))
            found += [f"on the GPU: {what}" for what in explicit.found]
        except RuntimeError as exc:
            found.append(f"set_sync_debug_mode: {str(exc).splitlines()[0]}")
        finally:
            torch.cuda.set_sync_debug_mode(0)
    return found


def result_path(run_dir: str | Path, mode: str, rank: int) -> Path:
    """Where rank ``rank`` writes what it found."""
    return Path(run_dir) / f"probe-{mode}-rank{rank}.json"


def main() -> None:
    from pretrain.trainer import Trainer

    env = distributed.detect()
    env.export()
    args = [a for a in sys.argv[1:] if not a.startswith("--local_rank")]  # the launcher adds --local_rank
    mode, config = args[0], load_config(args[1], args[2:])
    with distributed.process_group():
        trainer = Trainer(config, env)
        if mode == "states":
            found = {"rank": env.rank, "zero_stage": trainer.plan.zero_stage, "total_parameters": trainer.parameters,
                     "planned_gib": trainer.plan.planned_bytes / 2**30, **measure_states(trainer)}
        else:
            found = find_syncs(trainer)
        del trainer  # its engine holds DeepSpeed's process groups: freed before the block ends them
    result_path(config.run.dir, mode, env.rank).write_text(json.dumps(found))


if __name__ == "__main__":
    main()
