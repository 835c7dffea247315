"""DeepSpeed configuration and engine: the JSON in ds_configs/ plus everything the config owns.

The JSON files carry ZeRO settings only. Batch sizes, gradient accumulation, clipping and precision
come from the run config, filled in here, once, and "auto" bucket sizes get DeepSpeed's defaults. The
optimizer is built by pretrain.optim and handed over.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import torch

from pretrain.config import Config, gradient_accumulation
from pretrain.ds_json import read_ds_config

log = logging.getLogger(__name__)


# "auto" ZeRO sizes: DeepSpeed's own defaults, not Hugging Face's hidden_size**2 (which, profiled on
# one H100 with GPT-2 medium, turned gradient reduction into a CPU-bound stream of 1M-element buckets)
AUTO_BUCKETS = {"reduce_bucket_size": 200_000_000, "allgather_bucket_size": 200_000_000,
                "stage3_prefetch_bucket_size": 50_000_000, "stage3_param_persistence_threshold": 100_000}


def deepspeed_config(config: Config, world_size: int, hidden_size: int) -> dict:
    ds = read_ds_config(config.train.ds_config)
    train, optim = config.train, config.optim
    ds["train_batch_size"] = train.global_batch
    ds["train_micro_batch_size_per_gpu"] = train.micro_batch
    ds["gradient_accumulation_steps"] = gradient_accumulation(config, world_size)
    ds["gradient_clipping"] = optim.grad_clip
    ds.setdefault("bf16", {})["enabled"] = train.precision == "bf16"
    ds.setdefault("fp16", {})["enabled"] = train.precision == "fp16"
    zero = ds.setdefault("zero_optimization", {})
    for key, value in AUTO_BUCKETS.items():
        if zero.get(key) == "auto":
            zero[key] = value
    return ds


def lr_multiplier(config: Config) -> Callable[[int], float]:
    """Step -> lr / peak lr: linear warmup, then cosine or linear decay to min_lr at train.steps."""
    optim, steps = config.optim, config.train.steps
    floor = optim.min_lr / optim.lr

    def multiplier(step: int) -> float:
        if step < optim.warmup_steps:
            return (step + 1) / optim.warmup_steps
        if optim.decay == "constant" or steps <= optim.warmup_steps:
            return 1.0
        progress = min(1.0, (step - optim.warmup_steps) / (steps - optim.warmup_steps))
        shape = 0.5 * (1 + math.cos(math.pi * progress)) if optim.decay == "cosine" else 1 - progress
        return floor + (1 - floor) * shape

    return multiplier


def create_engine(model: torch.nn.Module, param_groups: list[dict], config: Config, ds_config: dict, on_gpu: bool):
    import deepspeed

    from pretrain.optim import build_optimizer

    optim = config.optim
    hyper = {"lr": optim.lr, "betas": (optim.beta1, optim.beta2), "eps": optim.eps, "weight_decay": optim.weight_decay,
             "fused": optim.fused}
    offloaded = "offload_optimizer" in ds_config.get("zero_optimization", {})
    optimizer, chosen = build_optimizer(param_groups, optim.optimizer, hyper, on_gpu, offloaded, ds_config)
    multiplier = lr_multiplier(config)
    engine, _, _, scheduler = deepspeed.initialize(
        model=model, optimizer=optimizer, config=ds_config,
        lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, multiplier),
    )
    log.info("DeepSpeed engine: ZeRO stage %s, optimizer %s, %s, micro batch %d x accumulation %d x %d ranks",
             ds_config["zero_optimization"].get("stage"), chosen,
             "bf16" if ds_config["bf16"]["enabled"] else "fp16" if ds_config["fp16"]["enabled"] else "fp32",
             ds_config["train_micro_batch_size_per_gpu"], ds_config["gradient_accumulation_steps"],
             engine.world_size if hasattr(engine, "world_size") else 1)
    return engine, scheduler
