"""Validating a configuration: every problem (batch arithmetic, missing files, bad ranges, DeepSpeed
JSON that sets what the config owns) listed at once, before any process group starts."""

from __future__ import annotations

import os
from pathlib import Path

from pretrain.config.schema import Config, ConfigError, DataConfig, TrainConfig
from pretrain.ds_json import ds_config_problems, zero_stage


def data_prefixes(data: DataConfig) -> list[tuple[str, float]]:
    """(prefix, weight) pairs from data.prefixes; weights default to each dataset's share of 1."""
    pairs = []
    for item in data.prefixes:
        if isinstance(item, dict):
            pairs.append((str(item.get("prefix", "")), float(item.get("weight", 1.0))))
        else:
            parts = str(item).split()
            if len(parts) == 2:
                pairs.append((parts[1], float(parts[0])))
            else:
                pairs.append((str(item), 1.0))
    return pairs


def split_fractions(split: str) -> list[float]:
    parts = [float(p) for p in split.replace("/", ",").split(",")]
    parts += [0.0] * (3 - len(parts))
    total = sum(parts)
    return [p / total for p in parts[:3]]


def validate(config: Config, world_size: int, with_data: bool = True) -> None:
    """Raise ConfigError listing every problem; touches only the filesystem, never a process group.
    ``with_data=False``: leave out data.tokenizer, data.prefixes and run.wandb (a plan needs none of them)."""
    from pretrain.presets import PRESETS

    problems: list[str] = []
    model, data, optim, train = config.model, config.data, config.optim, config.train
    if model.preset not in PRESETS:
        problems.append(f"model.preset={model.preset!r} is unknown (presets: {', '.join(PRESETS)})")
    if model.attention not in ("sdpa", "eager"):
        problems.append(f"model.attention={model.attention!r} must be sdpa or eager")
    if model.vocab_multiple < 1:
        problems.append("model.vocab_multiple must be at least 1")
    if with_data:  # the tokenizer and the datasets (the planner has neither)
        if not data.tokenizer:
            problems.append("data.tokenizer is not set (the tokenizer folder used for preprocessing)")
        elif not Path(data.tokenizer).exists() and Path(data.tokenizer).is_absolute():
            problems.append(f"data.tokenizer={data.tokenizer} does not exist")
        prefixes = data_prefixes(data)
        if not prefixes:
            problems.append("data.prefixes is empty: list the dataset prefixes written by tools/preprocess_data.py")
        for prefix, weight in prefixes:
            missing = [s for s in (".bin", ".idx") if not os.path.exists(prefix + s)]
            if missing:
                problems.append(f"dataset {prefix} is missing ({prefix}{missing[0]} not found); check data.prefixes or "
                                "run tools/preprocess_data.py (outputs are named PREFIX_<key>_document)")
            if weight <= 0:
                problems.append(f"dataset {prefix} has weight {weight}; weights must be positive")
        seen: dict[str, str] = {}
        for prefix, _ in prefixes:  # one dataset twice serves each of its samples twice, back to back
            same = seen.get(os.path.realpath(prefix))
            seen.setdefault(os.path.realpath(prefix), prefix)
            if same is not None:
                problems.append(f"data.prefixes lists the dataset {prefix} twice (also as {same}): both copies would "
                                "serve the same samples in the same order, each one twice in a row; list it once and "
                                "raise its weight to draw more of it (its epochs repeat, each shuffled anew)")
    try:
        if any(f < 0 for f in split_fractions(data.split)) or split_fractions(data.split)[0] <= 0:
            problems.append(f"data.split={data.split!r} needs a positive train share")
    except (ValueError, ZeroDivisionError):
        problems.append(f"data.split={data.split!r} must look like 969,30,1")
    if data.seq_len < 8:
        problems.append(f"data.seq_len={data.seq_len} is too short")
    elif model.preset in PRESETS and data.seq_len > PRESETS[model.preset].max_positions and not model.init_from:
        problems.append(f"data.seq_len={data.seq_len} exceeds {model.preset}'s {PRESETS[model.preset].max_positions} positions")
    if not 0 < data.mask_prob < 1:
        problems.append(f"data.mask_prob={data.mask_prob} must be between 0 and 1")
    _validate_batch(train, world_size, problems)
    _validate_speed(config, problems)
    if train.precision not in ("bf16", "fp16", "fp32"):
        problems.append(f"train.precision={train.precision!r} must be bf16, fp16 or fp32")
    for name in ("steps", "eval_interval", "log_interval", "save_interval", "keep_last", "eval_samples",
                 "stop_check_interval"):
        if getattr(train, name) < 1:
            problems.append(f"train.{name} must be at least 1")
    if optim.optimizer not in ("adamw", "lamb", "stable_adamw"):
        problems.append(f"optim.optimizer={optim.optimizer!r} must be adamw, lamb or stable_adamw")
    if optim.decay not in ("cosine", "linear", "constant", "wsd"):
        problems.append(f"optim.decay={optim.decay!r} must be cosine, linear, constant or wsd")
    if not 0 < optim.decay_fraction <= 1:
        problems.append(f"optim.decay_fraction={optim.decay_fraction} must be above 0 and at most 1")
    elif optim.decay == "wsd" and optim.warmup_steps + optim.wsd_decay_steps(train.steps) > train.steps:
        problems.append(f"optim.decay=wsd: the warmup ({optim.warmup_steps} steps) and the decay (the last "
                        f"{optim.wsd_decay_steps(train.steps)} of train.steps={train.steps}, optim.decay_fraction="
                        f"{optim.decay_fraction}) overlap; lower optim.warmup_steps or optim.decay_fraction")
    if not optim.lr > 0:  # NaN too; the schedule is a fraction of it
        problems.append(f"optim.lr={optim.lr} must be positive")
    elif optim.min_lr > optim.lr:
        problems.append(f"optim.min_lr={optim.min_lr} is above optim.lr={optim.lr}")
    if optim.warmup_steps > train.steps:
        problems.append(f"optim.warmup_steps={optim.warmup_steps} is longer than train.steps={train.steps}")
    if train.distributed_timeout_minutes <= 0:
        problems.append(f"train.distributed_timeout_minutes={train.distributed_timeout_minutes} must be positive")
    if not config.run.plot_interval_minutes >= 0:  # NaN too
        problems.append(f"run.plot_interval_minutes={config.run.plot_interval_minutes} must be 0 or more")
    if config.run.wandb and with_data:
        import importlib.util

        if importlib.util.find_spec("wandb") is None:
            problems.append(f"run.wandb={config.run.wandb!r} needs the wandb package: pip install wandb "
                            "(or pip install -e '.[wandb]')")
    problems += ds_config_problems(train.ds_config)
    stage = zero_stage(train.ds_config)
    if optim.whole_tensors and stage not in (0, None):
        problems.append(f"optim.optimizer={optim.optimizer} needs whole, unpartitioned parameters (its per-tensor "
                        "trust ratio or update clipping): "
                        f"use train.ds_config=zero0 or auto (ZeRO stage {stage} now)")
    if problems:
        raise ConfigError(problems)


def _validate_batch(train: TrainConfig, world_size: int, problems: list[str]) -> None:
    micro = 1 if train.micro_batch == "auto" else train.micro_batch
    if micro < 1 or train.global_batch < 1:
        problems.append("train.micro_batch and train.global_batch must be at least 1")
        return
    per_step = micro * world_size
    what = (f"train.micro_batch x data-parallel size = {micro} x {world_size} = {per_step}"
            if train.micro_batch != "auto" else f"the data-parallel size {world_size}")
    if train.global_batch % per_step:
        problems.append(f"train.global_batch={train.global_batch} is not a multiple of {what}; use e.g. global_batch="
                        f"{max(per_step, train.global_batch // per_step * per_step)}")
    _validate_rampup(train, problems)


def _validate_rampup(train: TrainConfig, problems: list[str]) -> None:
    """The ramp's shape. Whether its batches split on these ranks depends on how far a resumed run is into it,
    so the parallel plan checks that (pretrain/parallel.py)."""
    rampup = train.rampup_batch_size
    if rampup is None:
        return
    if len(rampup) != 3 or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in rampup):
        problems.append(f"train.rampup_batch_size={rampup!r}: give [start, increment, samples], three whole numbers "
                        "of at least 1 (e.g. [64, 64, 1000000]), or null for none")
        return
    start, increment, _ = rampup
    if start >= train.global_batch or (train.global_batch - start) % increment:
        problems.append(f"train.rampup_batch_size={rampup}: the ramp must climb from start={start} in steps of "
                        f"{increment} to exactly train.global_batch={train.global_batch}, which is "
                        f"{'not above the start' if start >= train.global_batch else 'not reached that way'} "
                        "(train.rampup_batch_size=null trains without a ramp)")


def _validate_speed(config: Config, problems: list[str]) -> None:
    from pretrain.presets import PRESETS

    model, train = config.model, config.train
    # a model.init_from folder's depth is its own: the parallel plan checks against it
    layers = PRESETS[model.preset].layers if model.preset in PRESETS and not model.init_from else None
    if model.checkpoint_layers is not None:
        if model.activation_checkpointing not in ("selective", "auto"):
            problems.append(f"model.checkpoint_layers={model.checkpoint_layers} needs model.activation_checkpointing="
                            f"selective (it is {model.activation_checkpointing!r})")
        if layers and not 0 < model.checkpoint_layers <= layers:
            problems.append(f"model.checkpoint_layers={model.checkpoint_layers} must be between 1 and {model.preset}'s "
                            f"{layers} layers")
    _validate_family_options(config, problems)
    if train.device_memory_gib is not None and train.device_memory_gib <= 0:
        problems.append(f"train.device_memory_gib={train.device_memory_gib} must be positive")
    if not 0 <= train.memory_margin < 0.9:
        problems.append(f"train.memory_margin={train.memory_margin} must be between 0 and 0.9")


def _validate_family_options(config: Config, problems: list[str]) -> None:
    """Keys that only some model families take (pretrain/presets.py's FamilyTraits say which)."""
    from pretrain.presets import PRESETS

    model, data = config.model, config.data
    if model.preset not in PRESETS:
        return
    preset = PRESETS[model.preset]
    traits, family = preset.traits, preset.family
    if model.block == "own" and not traits.own_block:
        problems.append(f"model.block=own is this project's GPT-2 block; {model.preset} ({family}) uses transformers' "
                        "block (model.block=hf)")
    if model.rope_theta is not None and not traits.rotary:
        problems.append(f"model.rope_theta applies to rotary positions; {model.preset} ({family}) has learned ones")
    elif model.rope_theta is not None and model.rope_theta <= 0:
        problems.append(f"model.rope_theta={model.rope_theta} must be positive")
    if model.tie_embeddings is False and not traits.untied:
        problems.append(f"model.tie_embeddings=false: {model.preset} ({family}) always ties its output projection to "
                        "the token embedding")
    if data.sentence_order_prediction and traits.objective == "mlm" and not traits.sentence_order:
        problems.append(f"data.sentence_order_prediction: {model.preset} ({family}) has no sentence-order head")
    if data.document_mask and traits.objective == "mlm" and not traits.packed_mlm:
        problems.append(f"data.document_mask packs documents; {model.preset} ({family}) trains on sentence pairs "
                        "with segment ids (a masked LM that packs: a modernbert preset)")
