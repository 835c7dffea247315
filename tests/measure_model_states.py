"""Launched by tests/test_planner.py with the deepspeed launcher: one training step of a config,
then the bytes this rank holds in ZeRO-3's partitions and optimizer states, printed as JSON."""

from __future__ import annotations

import json
import sys

import torch

from pretrain import distributed
from pretrain.config import load_config


def tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)


def main() -> None:
    from pretrain.trainer import Trainer

    env = distributed.detect()
    env.export()
    distributed.init_process_group()
    args = [a for a in sys.argv[1:] if not a.startswith("--local_rank")]  # the launcher adds --local_rank
    config = load_config(args[0], args[1:])
    trainer = Trainer(config, env)
    trainer._launch = (0.0, 0)
    trainer.train_step(iter(trainer._loader(trainer.train_data, 0)))
    zero = trainer.engine.optimizer
    states = [s for state in zero.optimizer.state.values() for s in state.values() if torch.is_tensor(s) and s.dim()]
    persistent = [p for p in trainer.model.parameters() if getattr(p, "ds_persist", False)]
    measured = {
        "rank": env.rank,
        "parameters": tensor_bytes(zero.fp16_partitioned_groups_flat) + tensor_bytes(persistent),
        "master": tensor_bytes(zero.fp32_partitioned_groups_flat),
        "gradients": tensor_bytes([zero.grad_partitions_flat_buffer]),  # the fp32 gradient partition buffer
        "moments": tensor_bytes(states),
        "total_parameters": trainer.parameters,
    }
    print("MEASURED " + json.dumps(measured), flush=True)


if __name__ == "__main__":
    main()
