"""Run configuration: typed dataclasses, YAML files that mirror them, ``section.key=value`` overrides.

``load_config(path, overrides)`` reads a YAML file (a shipped name like ``tiny_clm`` or a path),
applies the overrides and checks types. ``validate(config, world_size)`` then collects every
problem (batch arithmetic, missing files, bad ranges) and raises them all at once, before any
process group starts.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from pretrain.ds_json import ds_config_problems, zero_stage

SHIPPED_CONFIGS = Path(__file__).parent / "configs"


@dataclass
class ModelConfig:
    preset: str = "gpt2-small"
    """Model shape from pretrain/presets.py: gpt2-small/medium/large/xl, bert-base/large, tiny-gpt2, tiny-bert.
    The family (GPT-2 or BERT) decides the objective: causal LM or masked LM."""
    init_from: str | None = None
    """Continue pretraining from this Hugging Face model folder (or hub name) instead of a fresh init.
    Its embedding is resized when the tokenizer has more tokens."""
    dropout: float = 0.0
    """Dropout on embeddings, attention and residuals (0 is the usual choice for pretraining)."""
    activation_checkpointing: Literal["auto", "none", "selective", "full"] | bool = "auto"
    """Recompute activations in backward: "none", "selective" (only model.checkpoint_layers blocks, or as few
    as fit), "full" (every block: least memory, a third more compute), or "auto": the parallel plan picks the
    least recompute that fits (true/false mean full/none)."""
    checkpoint_layers: int | None = None
    """With selective checkpointing: how many transformer blocks recompute (default: as few as fit)."""
    vocab_multiple: int = 64
    """Round the embedding up to a multiple of this many rows (tensor-core friendly); 1 keeps it exact."""
    attention: str = "sdpa"
    """Attention kernel: "sdpa" (PyTorch scaled_dot_product_attention: flash / memory-efficient) or "eager"."""
    lm_head: Literal["auto", "liger", "chunked", "plain"] = "auto"
    """LM head + cross-entropy: "chunked" (fused, in row chunks, never the whole [tokens x vocab] logits;
    compiled on GPUs), "liger" (Liger-Kernel's fused linear cross-entropy, when installed), "plain"
    (logits then cross-entropy: the reference), "auto": liger where installed on a GPU, else chunked."""
    compile: Literal["auto"] | bool = "auto"
    """torch.compile each transformer block (regional: one compilation shared by all blocks, ZeRO hooks
    outside the graph), falling back to eager with a warning; "auto": on GPUs only."""
    block: Literal["hf", "own"] = "hf"
    """GPT-2 block implementation: transformers' GPT2Block, or this project's compact block with the same
    parameter names and layout (exports as the same GPT2LMHeadModel checkpoint)."""
    zero3_whole_blocks: bool = True
    """ZeRO-3: gather each transformer block's parameters at once on entering it, instead of through a
    hook on every linear and norm layer inside it; the same arithmetic with far fewer host-side hooks."""

    def __post_init__(self) -> None:
        if isinstance(self.activation_checkpointing, bool):  # the YAML of earlier versions
            self.activation_checkpointing = "full" if self.activation_checkpointing else "none"


@dataclass
class DataConfig:
    tokenizer: str = ""
    """Tokenizer folder used for preprocessing (vocabulary size and special token ids come from it)."""
    prefixes: list[Any] = field(default_factory=list)
    """Dataset prefixes (PREFIX.bin/.idx). Blend with weights: ["0.7 ko_text_document", "0.3 news_text_document"]
    or [{prefix: ..., weight: ...}]. MLM needs _sentence datasets (preprocess with --split-sentences)."""
    seq_len: int = 1024
    """Tokens per sample (CLM reads seq_len + 1 to shift targets; MLM: the maximum, [CLS]/[SEP] included)."""
    split: str = "969,30,1"
    """Train/valid/test proportions, split by documents (Megatron's --split)."""
    mask_prob: float = 0.15
    """MLM: share of tokens to predict; of those 80% become [MASK], 10% a random token, 10% stay."""
    whole_word_masking: bool = True
    """MLM: mask whole words (a Korean eojeol is one word) instead of single tokens."""
    sentence_order_prediction: bool = False
    """MLM: add ALBERT's sentence-order prediction (segments swapped half the time)."""
    short_seq_prob: float = 0.1
    """MLM: share of samples built to a random shorter length, as BERT does."""
    num_workers: int = 2
    """DataLoader worker processes per rank."""
    cache_dir: str | None = None
    """Where sample indices are cached; default: a folder next to each dataset."""
    index_wait_minutes: float = 120.0
    """How long a rank waits for another rank (or node) to build a sample index before giving up."""


@dataclass
class OptimConfig:
    optimizer: str = "adamw"
    """"adamw" (DeepSpeed's FusedAdam on GPUs, CPU Adam when offloaded) or "lamb" (large-batch BERT; needs
    train.ds_config=zero0 and fp16 or fp32, since ZeRO's flat partitions break LAMB's per-layer trust ratio)."""
    lr: float = 6e-4
    """Peak learning rate."""
    min_lr: float = 6e-5
    """Learning rate at the end of the decay (the floor)."""
    warmup_steps: int = 2000
    """Linear warmup from 0 to lr over these optimizer steps."""
    decay: str = "cosine"
    """Decay after warmup to min_lr: "cosine", "linear" or "constant"."""
    weight_decay: float = 0.1
    """AdamW weight decay; never applied to biases, norms or embeddings' position rows."""
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0
    """Clip the global gradient norm to this (0 disables)."""
    fused: bool = True
    """Use fused optimizer kernels on GPUs (DeepSpeed FusedAdam / FusedLamb); false: plain torch (baseline)."""


@dataclass
class TrainConfig:
    steps: int = 10000
    """Optimizer steps to train for."""
    global_batch: int = 512
    """Samples per optimizer step: micro_batch x gradient accumulation x data-parallel size."""
    micro_batch: Literal["auto"] | int = "auto"
    """Samples per rank per forward/backward; "auto": the parallel plan picks the fastest that fits."""
    precision: str = "bf16"
    """"bf16" (mixed precision), "fp16" (dynamic loss scaling) or "fp32"."""
    ds_config: str = "auto"
    """DeepSpeed JSON: "auto" (the parallel plan picks the ZeRO stage: the fastest that fits), a shipped name
    (zero0, zero1, zero2, zero3, zero3_offload) or a path. It must not set batch, lr or precision."""
    device_memory_gib: float | None = None
    """Memory per device the plan may use; default: the GPU's total memory (on CPU: RAM / local ranks)."""
    memory_margin: float = 0.1
    """Share of device memory the plan leaves free (allocator fragmentation, CUDA context, workspaces)."""
    eval_interval: int = 500
    """Evaluate on the valid split every this many steps (and at the end)."""
    eval_samples: int = 256
    """Valid samples per evaluation (a fixed set, so evaluations compare)."""
    log_interval: int = 10
    """Log metrics every this many steps."""
    save_interval: int = 1000
    """Save a checkpoint every this many steps (and at the end)."""
    keep_last: int = 3
    """Keep this many most recent complete checkpoints."""
    exit_interval: int | None = None
    """Save and exit after this many steps of this launch (Megatron's --exit-interval); a relaunch resumes."""
    exit_minutes: float | None = None
    """Save and exit once this launch has run this long (fit a Slurm time limit); a relaunch resumes."""
    max_nonfinite_steps: int = 5
    """Stop after this many consecutive steps whose loss or gradient was not finite (inf/nan)."""
    peak_tflops: float | None = None
    """Peak TFLOP/s per device for MFU; default: looked up from the GPU name, measured matmul rate on CPU."""
    stop_check_interval: int = 10
    """Every this many steps the ranks agree on stopping (signal, run.dir/STOP, train.exit_minutes): the
    one collective that reaches the host, kept out of the other steps."""


@dataclass
class RunConfig:
    dir: str = "runs/default"
    """Run folder: config.yaml, metrics.jsonl, tensorboard/, checkpoints/. Restarting with the same dir resumes."""
    seed: int = 1234
    """Seeds initialization, data order and masking."""
    tensorboard: bool = True
    """Write TensorBoard event files under run.dir/tensorboard."""


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)


class ConfigError(ValueError):
    """Every problem found in a configuration, one per line."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid configuration:\n  - " + "\n  - ".join(problems))


# ------------------------------------------------------------------------------------------ load
def resolve_config_path(name_or_path: str) -> Path:
    """A path, or the name of a shipped config (``tiny_clm`` -> pretrain/configs/tiny_clm.yaml)."""
    path = Path(name_or_path)
    if path.exists():
        return path
    shipped = SHIPPED_CONFIGS / f"{name_or_path.removesuffix('.yaml')}.yaml"
    if shipped.exists():
        return shipped
    names = ", ".join(sorted(p.stem for p in SHIPPED_CONFIGS.glob("*.yaml")))
    raise ConfigError([f"config {name_or_path!r} not found (shipped configs: {names})"])


def load_config(name_or_path: str | None = None, overrides: list[str] | None = None) -> Config:
    raw: dict = {}
    if name_or_path:
        raw = yaml.safe_load(resolve_config_path(name_or_path).read_text(encoding="utf-8")) or {}
    problems: list[str] = []
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            problems.append(f"override {item!r} must look like section.key=value")
            continue
        section, _, name = key.partition(".")
        raw.setdefault(section, {})
        if not isinstance(raw[section], dict):
            raw[section] = {}
        raw[section][name] = yaml.safe_load(value) if value != "" else None
    config = from_dict(raw, problems)
    if problems:
        raise ConfigError(problems)
    return config


def from_dict(raw: dict, problems: list[str]) -> Config:
    sections = {f.name: f.type for f in dataclasses.fields(Config)}
    hints = typing.get_type_hints(Config)
    built = {}
    for section, value in raw.items():
        if section not in sections:
            problems.append(f"unknown section {section!r} (sections: {', '.join(sections)})")
            continue
        built[section] = _build_section(hints[section], value or {}, section, problems)
    return Config(**built)


def _build_section(cls: type, values: dict, section: str, problems: list[str]):
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        if key not in hints:
            problems.append(f"unknown key {section}.{key} (keys: {', '.join(hints)})")
            continue
        checked = _coerce(value, hints[key])
        if checked is _BAD:
            problems.append(f"{section}.{key}={value!r} is not a {_type_name(hints[key])}")
        else:
            kwargs[key] = checked
    return cls(**kwargs)


_BAD = object()


def _coerce(value: Any, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            result = _coerce(value, option)
            if result is not _BAD:
                return result
        return _BAD
    if origin is Literal:
        return value if any(value == option and type(value) is type(option) for option in typing.get_args(hint)) else _BAD
    if hint is type(None):
        return None if value is None else _BAD
    if hint is Any:
        return value
    if origin is list:
        return list(value) if isinstance(value, list) else _BAD
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            return _BAD
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint in (str, bool) and isinstance(value, hint):
        return value
    return _BAD


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(option) for option in typing.get_args(hint))
    if origin is Literal:
        return " or ".join(repr(option) for option in typing.get_args(hint))
    return str(hint).replace("typing.", "").replace("<class '", "").replace("'>", "")


# ------------------------------------------------------------------------------------- validate
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


def validate(config: Config, world_size: int) -> None:
    """Raise ConfigError listing every problem; touches only the filesystem, never a process group."""
    from pretrain.presets import PRESETS

    problems: list[str] = []
    model, data, optim, train = config.model, config.data, config.optim, config.train
    if model.preset not in PRESETS:
        problems.append(f"model.preset={model.preset!r} is unknown (presets: {', '.join(PRESETS)})")
    if model.attention not in ("sdpa", "eager"):
        problems.append(f"model.attention={model.attention!r} must be sdpa or eager")
    if model.vocab_multiple < 1:
        problems.append("model.vocab_multiple must be at least 1")
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
    if optim.optimizer not in ("adamw", "lamb"):
        problems.append(f"optim.optimizer={optim.optimizer!r} must be adamw or lamb")
    if optim.decay not in ("cosine", "linear", "constant"):
        problems.append(f"optim.decay={optim.decay!r} must be cosine, linear or constant")
    if optim.min_lr > optim.lr:
        problems.append(f"optim.min_lr={optim.min_lr} is above optim.lr={optim.lr}")
    if optim.warmup_steps > train.steps:
        problems.append(f"optim.warmup_steps={optim.warmup_steps} is longer than train.steps={train.steps}")
    problems += ds_config_problems(train.ds_config)
    stage = zero_stage(train.ds_config)
    if optim.optimizer == "lamb" and stage not in (0, None):
        problems.append(f"optim.optimizer=lamb needs whole, unpartitioned parameters for its per-layer trust ratio: "
                        f"use train.ds_config=zero0 or auto (ZeRO stage {stage} now)")
    if problems:
        raise ConfigError(problems)


def _validate_batch(train: TrainConfig, world_size: int, problems: list[str]) -> None:
    micro = 1 if train.micro_batch == "auto" else train.micro_batch
    if micro < 1 or train.global_batch < 1:
        problems.append("train.micro_batch and train.global_batch must be at least 1")
        return
    per_step = micro * world_size
    if train.global_batch % per_step:
        what = (f"train.micro_batch x data-parallel size = {micro} x {world_size} = {per_step}"
                if train.micro_batch != "auto" else f"the data-parallel size {world_size}")
        problems.append(f"train.global_batch={train.global_batch} is not a multiple of {what}; use e.g. global_batch="
                        f"{max(per_step, train.global_batch // per_step * per_step)}")


def _validate_speed(config: Config, problems: list[str]) -> None:
    from pretrain.presets import PRESETS

    model, train = config.model, config.train
    layers = PRESETS[model.preset].layers if model.preset in PRESETS else None
    if model.checkpoint_layers is not None:
        if model.activation_checkpointing not in ("selective", "auto"):
            problems.append(f"model.checkpoint_layers={model.checkpoint_layers} needs model.activation_checkpointing="
                            f"selective (it is {model.activation_checkpointing!r})")
        if layers and not 0 < model.checkpoint_layers <= layers:
            problems.append(f"model.checkpoint_layers={model.checkpoint_layers} must be between 1 and {model.preset}'s "
                            f"{layers} layers")
    if model.block == "own" and model.preset in PRESETS and PRESETS[model.preset].family != "gpt2":
        problems.append("model.block=own is a GPT-2 block; BERT presets use transformers' BertLayer (model.block=hf)")
    if train.device_memory_gib is not None and train.device_memory_gib <= 0:
        problems.append(f"train.device_memory_gib={train.device_memory_gib} must be positive")
    if not 0 <= train.memory_margin < 0.9:
        problems.append(f"train.memory_margin={train.memory_margin} must be between 0 and 0.9")
