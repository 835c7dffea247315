"""DeepSpeed configuration and engine: the JSON of the plan's ZeRO stage plus everything the config owns.

The JSON files carry ZeRO settings only. Batch sizes and gradient accumulation come from the parallel
plan, clipping and precision from the run config, filled in here, once:

  * bf16 without ZeRO: fp32 weights under ``torch.autocast`` (DeepSpeed's ``torch_autocast``), the
    optimizer stepping the fp32 weights directly and clipping the gradients itself (one foreach norm,
    no host sync); with ZeRO: DeepSpeed's bf16 optimizer (bf16 weights, fp32 master partitions).
  * fp16: DeepSpeed's dynamic loss scaling (its defaults unless the JSON sets them).
  * DeepSpeed's throughput timer off: it would synchronize the device twice per micro batch.
  * "auto" bucket sizes get DeepSpeed's defaults; ZeRO-3's prefetch, live-parameter and reuse-distance
    limits are sized per transformer block (the unit gathered at once), so one block is prefetched
    while another runs and a block recomputed in backward is not gathered twice.

The optimizer is built by pretrain.optim and handed over.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import torch

from pretrain.config import OptimConfig, TrainConfig
from pretrain.ds_json import read_ds_config, shipped_for_stage
from pretrain.parallel import ParallelPlan
from pretrain.planner import persistence_threshold

log = logging.getLogger(__name__)

# "auto" ZeRO sizes: DeepSpeed's own defaults, not Hugging Face's hidden_size**2 (which, profiled on
# one H100 with GPT-2 medium, turned gradient reduction into a CPU-bound stream of 1M-element buckets)
AUTO_BUCKETS = {"reduce_bucket_size": 200_000_000, "allgather_bucket_size": 200_000_000}
FP16_DEFAULTS = {"loss_scale": 0, "initial_scale_power": 16, "loss_scale_window": 1000, "hysteresis": 2,
                 "min_loss_scale": 1}


def clips_in_optimizer(plan: ParallelPlan, precision: str) -> bool:
    """Without ZeRO (and without fp16's loss scaling) the optimizer clips and reports the gradient norm."""
    return plan.zero_stage == 0 and precision != "fp16"


def deepspeed_config(train: TrainConfig, optim: OptimConfig, plan: ParallelPlan, block_parameters: int) -> dict:
    """The DeepSpeed dict for this run: ``train.ds_config`` (or the plan's stage's file) plus what the
    config and the plan own. ``block_parameters``: the largest unit ZeRO-3 gathers at once."""
    ds = read_ds_config(train.ds_config if train.ds_config != "auto" else shipped_for_stage(plan.zero_stage, plan.offload))
    ds["train_batch_size"] = train.global_batch
    ds["train_micro_batch_size_per_gpu"] = plan.micro_batch
    ds["gradient_accumulation_steps"] = plan.accumulation
    ds["gradient_clipping"] = 0.0 if clips_in_optimizer(plan, train.precision) else optim.grad_clip
    # DeepSpeed's throughput timer is on by default and synchronizes the device in every forward and step
    # (it times steps for its own log lines, which this trainer does not print): off unless a JSON asks
    ds.setdefault("timers", {"throughput": {"enabled": False}})
    loss_scaling = ds.pop("fp16", {})  # a JSON may tune fp16's loss scaling; whether fp16 runs is the config's
    ds.pop("bf16", None)
    ds.pop("torch_autocast", None)
    if train.precision == "bf16" and plan.zero_stage == 0:
        ds["torch_autocast"] = {"enabled": True, "dtype": "bfloat16"}
    elif train.precision == "bf16":
        ds["bf16"] = {"enabled": True}
    elif train.precision == "fp16":
        ds["fp16"] = {**FP16_DEFAULTS, **loss_scaling, "enabled": True}
    zero = ds.setdefault("zero_optimization", {})
    per_block = {"stage3_prefetch_bucket_size": block_parameters, "stage3_max_live_parameters": 3 * block_parameters,
                 "stage3_max_reuse_distance": block_parameters,
                 "stage3_param_persistence_threshold": persistence_threshold(block_parameters)}
    for key, value in {**AUTO_BUCKETS, **per_block}.items():
        if zero.get(key) == "auto":
            zero[key] = value
    return ds


def lr_multiplier(optim: OptimConfig, steps: int) -> Callable[[int], float]:
    """Step -> lr / peak lr: linear warmup, then cosine or linear decay to min_lr at ``steps``, or none
    ("constant"), or WSD: the peak until the last ``optim.decay_fraction`` of ``steps``, then 1-sqrt or
    linear down to min_lr at ``steps``.

    A pure function of the step and the config: a run resumed (or branched with ``run.resume_from``)
    under another ``train.steps`` or schedule follows the new curve from its checkpoint's step on."""
    floor = optim.min_lr / optim.lr
    decay_from = steps - optim.wsd_decay_steps(steps) if optim.decay == "wsd" else optim.warmup_steps

    def multiplier(step: int) -> float:
        if step < optim.warmup_steps:
            return (step + 1) / optim.warmup_steps
        if optim.decay == "constant" or step < decay_from or steps <= decay_from:
            return 1.0
        progress = min(1.0, (step - decay_from) / (steps - decay_from))
        if optim.decay == "cosine":
            shape = 0.5 * (1 + math.cos(math.pi * progress))
        elif optim.decay == "wsd" and optim.wsd_shape == "1-sqrt":
            shape = 1 - math.sqrt(progress)
        else:  # linear, and WSD's linear decay
            shape = 1 - progress
        return floor + (1 - floor) * shape

    return multiplier


def decay_begun_before(optim: OptimConfig, steps: int, step: int) -> str | None:
    """For a run branched at ``step`` (run.resume_from): where its WSD decay began before that step, what the lr
    does then (the README's recipe starts the decay at the checkpoint); else None."""
    if optim.decay != "wsd":
        return None
    decay_from = steps - optim.wsd_decay_steps(steps)
    if decay_from >= step:
        return None
    return (f"the WSD decay of this launch (train.steps={steps}, optim.decay_fraction={optim.decay_fraction:g}) began "
            f"at step {decay_from}, before the checkpoint's step {step}: the lr goes from the peak {optim.lr:.3g} to "
            f"{optim.lr * lr_multiplier(optim, steps)(step):.3g} at once. A decay from the checkpoint on needs "
            f"train.steps x (1 - optim.decay_fraction) = {step}")


def follow_schedule_after_resume(scheduler, optim: OptimConfig, steps: int) -> tuple[float, float]:
    """After a checkpoint is loaded: the next step's lr from this run's ``optim.lr`` and schedule, not the
    checkpoint's. LambdaLR restores its base lrs, and the optimizer the lr it last set, from the checkpoint;
    only later steps would follow the new curve. So a run branched with ``run.resume_from`` under another
    ``train.steps``, ``optim.decay`` or ``optim.lr`` would take its first step at the old lr. Returns (the
    checkpoint's next lr, this launch's)."""
    lr = optim.lr * lr_multiplier(optim, steps)(scheduler.last_epoch)
    before = scheduler.optimizer.param_groups[0]["lr"]
    scheduler.base_lrs = [optim.lr] * len(scheduler.base_lrs)
    for group in scheduler.optimizer.param_groups:
        group["lr"] = lr
    return before, lr


def create_engine(model: torch.nn.Module, param_groups: list[dict], optim: OptimConfig, steps: int, ds_config: dict,
                  on_gpu: bool, clip_in_optimizer: bool):
    import deepspeed

    from pretrain.optim import build_optimizer

    hyper = {"lr": optim.lr, "betas": (optim.beta1, optim.beta2), "eps": optim.eps, "weight_decay": optim.weight_decay,
             "fused": optim.fused}
    offloaded = "offload_optimizer" in ds_config.get("zero_optimization", {})
    optimizer, chosen = build_optimizer(param_groups, optim.optimizer, hyper, on_gpu, offloaded, ds_config,
                                        clip=optim.grad_clip if clip_in_optimizer else None)
    multiplier = lr_multiplier(optim, steps)
    engine, _, _, scheduler = deepspeed.initialize(
        model=model, optimizer=optimizer, config=ds_config,
        lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, multiplier),
    )
    if ds_config["zero_optimization"].get("stage", 0) == 0 and getattr(engine, "world_size", 1) == 1:
        engine.enable_backward_allreduce = False  # one rank: nothing to average (DeepSpeed would copy every gradient)
    precision = ("bf16 autocast (fp32 weights)" if ds_config.get("torch_autocast", {}).get("enabled") else
                 "bf16" if ds_config.get("bf16", {}).get("enabled") else
                 "fp16" if ds_config.get("fp16", {}).get("enabled") else "fp32")
    log.info("DeepSpeed engine: ZeRO stage %s, optimizer %s, %s, micro batch %d x accumulation %d x %d ranks",
             ds_config["zero_optimization"].get("stage", 0), chosen, precision,
             ds_config["train_micro_batch_size_per_gpu"], ds_config["gradient_accumulation_steps"],
             getattr(engine, "world_size", 1))
    return engine, scheduler
