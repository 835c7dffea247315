"""The DeepSpeed JSON files (``pretrain/ds_configs/`` or a path of the user's): find, read and check them.

One file per ZeRO stage (``zero0`` .. ``zero3``, plus ``zero3_offload``). They carry ZeRO settings
only; batch sizes, clipping, precision and the learning rate belong to the run config and are filled
in by ``pretrain.engine``, so a JSON that sets them is reported. ``train.ds_config=auto`` (the
default) lets the parallel plan pick the stage.
"""

from __future__ import annotations

import json
from pathlib import Path

SHIPPED_DS_CONFIGS = Path(__file__).parent / "ds_configs"
AUTO = "auto"

DS_OWNED_KEYS = {  # set by the trainer from the config; a ds_configs JSON must leave them out or "auto"
    "train_batch_size": "train.global_batch", "train_micro_batch_size_per_gpu": "train.micro_batch",
    "gradient_accumulation_steps": "train.global_batch", "gradient_clipping": "optim.grad_clip",
}
RENAMED = {"zero3_bf16": "zero3", "zero3_fp16": "zero3"}  # earlier names: precision now comes from train.precision


def resolve_ds_config_path(name_or_path: str) -> Path:
    """A path as given when it exists, else the shipped file of that name (``zero3`` or ``zero3.json``)."""
    path = Path(name_or_path)
    if path.exists():
        return path
    return SHIPPED_DS_CONFIGS / f"{name_or_path.removesuffix('.json')}.json"


def shipped_for_stage(stage: int, offload: str = "none") -> str:
    """The shipped file the parallel plan uses for a ZeRO stage."""
    return "zero3_offload" if stage == 3 and offload != "none" else f"zero{stage}"


def read_ds_config(name_or_path: str) -> dict:
    return json.loads(resolve_ds_config_path(name_or_path).read_text())


def zero_stage(name_or_path: str) -> int | None:
    """The file's ZeRO stage (0 when it has none); None for ``auto`` or a missing / broken file."""
    if name_or_path == AUTO:
        return None
    try:
        return read_ds_config(name_or_path).get("zero_optimization", {}).get("stage", 0)
    except (OSError, json.JSONDecodeError):
        return None


def offload_of(ds: dict) -> str:
    """"all" (parameters and optimizer), "optimizer" or "none", as the file asks."""
    zero = ds.get("zero_optimization", {})
    return "all" if "offload_param" in zero else "optimizer" if "offload_optimizer" in zero else "none"


def ds_config_problems(name_or_path: str) -> list[str]:
    """What is wrong with the file, for ``config.validate``: missing, not JSON, or setting what the config owns."""
    if name_or_path == AUTO:
        return []
    path = resolve_ds_config_path(name_or_path)
    if not path.exists():
        stem = name_or_path.removesuffix(".json")
        if stem in RENAMED:
            return [f"train.ds_config={name_or_path!r} was renamed: use {RENAMED[stem]} (precision comes from "
                    "train.precision alone), or auto to let the parallel plan choose the ZeRO stage"]
        names = ", ".join(sorted(p.stem for p in SHIPPED_DS_CONFIGS.glob("*.json")))
        return [f"train.ds_config={name_or_path!r} not found (shipped: {names}; or auto)"]
    try:
        ds = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        return [f"{path} is not valid JSON: {exc}"]
    problems = [f"{path} sets {key}={ds[key]!r}; remove it (or write \"auto\"): it comes from {owner}"
                for key, owner in DS_OWNED_KEYS.items() if key in ds and ds[key] != "auto"]
    for section in ("bf16", "fp16", "torch_autocast"):
        enabled = ds.get(section, {}).get("enabled", "auto")
        if enabled != "auto":
            problems.append(f"{path} sets {section}.enabled={enabled!r}; remove it: precision comes from train.precision")
    if ds.get("managed_gradient_accumulation", True) is not True:
        problems.append(f"{path} sets managed_gradient_accumulation={ds['managed_gradient_accumulation']!r}; remove "
                        "it: the trainer marks the end of each step's accumulation itself")
    lr = ds.get("optimizer", {}).get("params", {}).get("lr", "auto")
    if lr != "auto":
        problems.append(f"{path} sets optimizer.params.lr={lr!r}; write \"auto\": it comes from optim.lr")
    return problems
