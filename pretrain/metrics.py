"""Training metrics: FLOPs, MFU and HFU (Megatron's formula), and where metrics go (console, JSONL,
TensorBoard). Only rank 0 writes."""

from __future__ import annotations

import json
import logging
import math
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import torch

from pretrain.atomic import atomic_write_text

log = logging.getLogger(__name__)

# dense bf16/fp16 tensor-core peaks, TFLOP/s per device (no sparsity)
PEAK_TFLOPS = {"H200": 989.0, "H100 PCIe": 756.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 125.0,
               "L4": 121.0, "V100": 125.0, "A6000": 155.0}


def transformer_flops(layers: int, hidden: int, seq_len: int, vocab: int, tokens: int, recomputed_layers: int = 0,
                      head_tokens: int | None = None, *, kv_hidden: int | None = None, ffn_hidden: int | None = None,
                      gated_mlp: bool = False, attention_width: int | None = None) -> float:
    """FLOPs of one forward+backward over ``tokens`` tokens (Megatron-LM, Narayanan et al. 2021).

    Each matmul of an m x n weight costs 2 m n FLOPs per token forward and twice that backward: 6 m n in all.
    Per token, each layer has the query and output projections (h x a each, a = ``attention_width``: heads x
    head width, h by default), the key and value projections (h x ``kv_hidden`` each: grouped-query attention
    shares them), the MLP (two h x ``ffn_hidden`` matrices, three with a gate: SwiGLU), and attention's scores
    and weighted sum (12 s a over forward and backward). GPT-2's shape (a = kv = h, ffn = 4h, no gate) gives
    Megatron's 72 h^2 + 12 s h (PaLM's 6N + 12 L h s). Each recomputed layer adds one more forward, a third of
    that again; the output projection costs 6 h V per token that reaches it (every token for CLM, only masked
    ones for MLM).
    Model FLOPs (for MFU) count no recompute; hardware FLOPs (for HFU) count ``recomputed_layers``.
    """
    kv = hidden if kv_hidden is None else kv_hidden
    ffn = 4 * hidden if ffn_hidden is None else ffn_hidden
    width = hidden if attention_width is None else attention_width
    matmul_weights = 2 * hidden * width + 2 * hidden * kv + (3 if gated_mlp else 2) * hidden * ffn
    per_layer = 6 * matmul_weights + 12 * seq_len * width
    body = (layers + recomputed_layers / 3) * per_layer
    head = 6 * hidden * vocab * (tokens if head_tokens is None else head_tokens)
    return body * tokens + head


def peak_tflops(configured: float | None) -> float:
    """Per-device peak for MFU: configured (``train.peak_tflops``), else the datasheet's dense bf16 rate for
    a known GPU, else measured here: the best of repeated bf16 matmuls on an unknown GPU (with a warning:
    a measured rate is below the datasheet's, so MFU reads high), the best of repeated fp32 matmuls on a
    CPU (what this CPU sustains: the honest 'peak' for a CPU run)."""
    if configured:
        return configured
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        for key, value in PEAK_TFLOPS.items():
            if key in name:
                return value
        measured = measured_matmul_tflops(8192, torch.bfloat16, torch.device("cuda"))
        log.warning("unknown GPU %r: MFU is against a measured bf16 matmul rate of %.0f TFLOP/s; set "
                    "train.peak_tflops to its datasheet's dense bf16 rate", name, measured)
        return measured
    return measured_matmul_tflops()


def measured_matmul_tflops(size: int = 1024, dtype: torch.dtype = torch.float32,
                           device: torch.device | None = None, repeats: int = 10) -> float:
    """The best rate of ``repeats`` timed ``size``-square matmuls after two warm-ups (the best, since a peak
    is what the hardware reaches, and a shared machine only ever slows a repetition down)."""
    device = device or torch.device("cpu")
    a, b = (torch.randn(size, size, device=device).to(dtype) for _ in range(2))
    best = math.inf
    for repetition in range(repeats + 2):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        if repetition >= 2:
            best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e12


def memory_gib() -> float:
    """Peak accelerator memory of this process, or its resident memory on CPU."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**30
    with open(f"/proc/{os.getpid()}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20
    return 0.0


class MetricsWriter:
    """Appends one JSON object per record to metrics.jsonl and mirrors scalars to TensorBoard and, with
    ``run.wandb``, to Weights & Biases (the same W&B run across resumed launches)."""

    def __init__(self, run_dir: str | os.PathLike, enabled: bool, tensorboard: bool, wandb_project: str | None = None,
                 config: dict | None = None) -> None:
        self.enabled = enabled
        self.path = Path(run_dir) / "metrics.jsonl"
        self.tb = self.wandb = None
        if enabled and tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(Path(run_dir) / "tensorboard"))
        if enabled and wandb_project:
            self.wandb = _start_wandb(Path(run_dir), wandb_project, config or {})

    def truncate_after(self, step: int) -> None:
        """On resume, drop records logged after the checkpoint (they will be logged again), and a last
        line cut short by a crash."""
        if not self.enabled or not self.path.exists():
            return
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                if json.loads(line)["step"] <= step:
                    kept.append(line)
            except (ValueError, KeyError):
                continue
        temp = self.path.with_suffix(".tmp")
        temp.write_text("".join(line + "\n" for line in kept))
        os.replace(temp, self.path)

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        scalars = {k: v for k, v in record.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if self.tb is not None:
            for key, value in scalars.items():
                if key != "step":
                    self.tb.add_scalar(key, value, record["step"])
            self.tb.flush()
        if self.wandb is not None:
            try:
                self.wandb.log(scalars)
            except Exception as exc:  # noqa: BLE001 - W&B failing mid-run costs the mirror, never the run
                log.warning("W&B stopped taking records (%s): the mirror ends at step %s; %s has every record.",
                            str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__, record["step"],
                            self.path)
                self.wandb = None

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            try:
                self.wandb.finish()
            except Exception as exc:  # noqa: BLE001 - as above
                log.warning("W&B did not finish cleanly (%s); %s has every record.", exc, self.path)
            self.wandb = None


def _start_wandb(run_dir: Path, project: str, config: dict):
    """A W&B run named after the run dir; its id is kept in run_dir/wandb_id so that a resumed launch
    continues it. Every metric is plotted against our ``step`` (a resumed launch logs some steps again,
    which W&B's own step counter would drop). A W&B that cannot start (not logged in, no network) costs
    the mirror, never the run: metrics.jsonl and the plots have everything."""
    import wandb

    id_file = run_dir / "wandb_id"
    run_id = id_file.read_text().strip() if id_file.exists() else uuid.uuid4().hex[:8]
    atomic_write_text(id_file, run_id + "\n")
    try:
        run = wandb.init(project=project, name=run_dir.resolve().name, id=run_id, resume="allow", dir=str(run_dir),
                         config=config)
    except Exception as exc:  # wandb raises its own error types, and more than one
        log.warning("W&B did not start (%s): metrics go to %s and its plots only. Run `wandb login`, or set "
                    "WANDB_MODE=offline and `wandb sync` the run later.", str(exc).splitlines()[0][:200], run_dir)
        return None
    run.define_metric("step")
    run.define_metric("*", step_metric="step")
    return run


@dataclass
class RunMetrics:
    """A run's records, one per step, in step order."""

    name: str
    train: list[dict] = field(default_factory=list)
    evals: list[dict] = field(default_factory=list)


def read_metrics(run_dir: str | os.PathLike, name: str | None = None) -> RunMetrics:
    """The records of ``run_dir/metrics.jsonl`` (a line cut short by a crash is ignored)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: is {run_dir} a run dir (run.dir of a training run)?")
    train: dict[int, dict] = {}
    evals: dict[int, dict] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "loss" in record:
            train[record["step"]] = record
        elif "eval_loss" in record:
            evals[record["step"]] = record
    return RunMetrics(name or Path(run_dir).resolve().name, [train[s] for s in sorted(train)],
                      [evals[s] for s in sorted(evals)])
