"""Loading a configuration: a YAML file (a shipped name or a path), ``section.key=value`` overrides,
types checked field by field, every problem collected before raising."""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from pretrain.config.schema import SHIPPED_CONFIGS, Config, ConfigError


def find_yaml(name_or_path: str, shipped: Path) -> tuple[Path | None, str]:
    """(the file, or None) for a path or the name of a YAML file in ``shipped`` (``tiny_clm`` ->
    SHIPPED/tiny_clm.yaml), and the shipped names for an error message."""
    path = Path(name_or_path)
    if path.exists():
        return path, ""
    named = shipped / f"{name_or_path.removesuffix('.yaml')}.yaml"
    if named.exists():
        return named, ""
    return None, ", ".join(sorted(p.stem for p in shipped.glob("*.yaml")))


def resolve_config_path(name_or_path: str) -> Path:
    """A path, or the name of a shipped config (``tiny_clm`` -> pretrain/configs/tiny_clm.yaml)."""
    path, names = find_yaml(name_or_path, SHIPPED_CONFIGS)
    if path is None:
        raise ConfigError([f"config {name_or_path!r} not found (shipped configs: {names})"])
    return path


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
        built[section] = build_section(hints[section], value or {}, section, problems)
    return Config(**built)


NAMES_ELSEWHERE = {  # what Megatron-LM's, Hugging Face's and torchtitan's users type, and this project's key
    "optim.schedule": "decay", "optim.scheduler": "decay", "optim.lr_scheduler": "decay",
    "optim.lr_scheduler_type": "decay", "optim.lr_decay_style": "decay", "optim.learning_rate": "lr",
    "optim.warmup_iters": "warmup_steps", "optim.lr_warmup_iters": "warmup_steps", "optim.max_grad_norm": "grad_clip",
    "optim.clip_grad": "grad_clip", "optim.max_norm": "grad_clip", "optim.adam_beta2": "beta2", "optim.adam_eps": "eps",
    "train.max_steps": "steps", "train.train_iters": "steps", "train.global_batch_size": "global_batch",
    "train.micro_batch_size": "micro_batch", "train.per_device_train_batch_size": "micro_batch",
    "train.local_batch_size": "micro_batch", "train.save_steps": "save_interval", "train.eval_steps": "eval_interval",
    "train.logging_steps": "log_interval", "train.bf16": "precision", "train.fp16": "precision",
    "train.mixed_precision": "precision", "data.seq_length": "seq_len", "data.max_seq_length": "seq_len",
    "data.max_seq_len": "seq_len", "data.data_path": "prefixes", "data.mlm_probability": "mask_prob",
    "data.tokenizer_name": "tokenizer", "data.tokenizer_path": "tokenizer", "run.output_dir": "dir",
    "run.save": "dir", "model.model_name_or_path": "init_from", "model.name": "preset",
}


def build_section(cls: type, values: dict, section: str, problems: list[str]):
    """An instance of the dataclass ``cls`` from ``values``, each checked against its field's type; unknown
    keys and wrong types go to ``problems`` as ``section.key`` lines (the pipeline's recipes use it too)."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        if key not in hints:
            close = [ours] if (ours := NAMES_ELSEWHERE.get(f"{section}.{key}")) in hints else \
                difflib.get_close_matches(str(key), list(hints), n=1, cutoff=0.75)
            guess = f"did you mean {section}.{close[0]}? " if close else ""
            problems.append(f"unknown key {section}.{key} ({guess}keys: {', '.join(hints)})")
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


