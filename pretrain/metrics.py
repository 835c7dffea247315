"""Training metrics: FLOPs, MFU and HFU (Megatron's formula), and where metrics go (console, JSONL,
TensorBoard). Only rank 0 writes."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import torch

log = logging.getLogger(__name__)

# dense bf16/fp16 tensor-core peaks, TFLOP/s per device (no sparsity)
PEAK_TFLOPS = {"H200": 989.0, "H100 PCIe": 756.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 125.0,
               "L4": 121.0, "V100": 125.0, "A6000": 155.0}


def transformer_flops(layers: int, hidden: int, seq_len: int, vocab: int, tokens: int, recomputed_layers: int = 0,
                      head_tokens: int | None = None) -> float:
    """FLOPs of one forward+backward over ``tokens`` tokens (Megatron-LM, Narayanan et al. 2021).

    Per token, each layer costs 72 h^2 + 12 s h (QKV/projection/MLP matmuls and attention scores: PaLM's
    6N + 12 L h s), and each recomputed layer one more forward, a third of that again; the output
    projection costs 6 h V per token that reaches it (every token for CLM, only masked ones for MLM).
    Model FLOPs (for MFU) count no recompute; hardware FLOPs (for HFU) count ``recomputed_layers``.
    """
    per_layer = 72 * hidden * hidden + 12 * seq_len * hidden
    body = (layers + recomputed_layers / 3) * per_layer
    head = 6 * hidden * vocab * (tokens if head_tokens is None else head_tokens)
    return body * tokens + head


def peak_tflops(configured: float | None) -> float:
    """Per-device peak for MFU: configured, else by GPU name, else a measured fp32 matmul rate (CPU)."""
    if configured:
        return configured
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        for key, value in PEAK_TFLOPS.items():
            if key in name:
                return value
        log.warning("unknown GPU %r: set train.peak_tflops for a meaningful MFU (using 100)", name)
        return 100.0
    return measured_matmul_tflops()


def measured_matmul_tflops(size: int = 1024, repeats: int = 3) -> float:
    """What this CPU sustains on a fp32 matmul: the honest 'peak' for MFU on a CPU run."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e12


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
    """Appends one JSON object per record to metrics.jsonl and mirrors scalars to TensorBoard."""

    def __init__(self, run_dir: str | os.PathLike, enabled: bool, tensorboard: bool) -> None:
        self.enabled = enabled
        self.path = Path(run_dir) / "metrics.jsonl"
        self.tb = None
        if enabled and tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(Path(run_dir) / "tensorboard"))

    def truncate_after(self, step: int) -> None:
        """On resume, drop records logged after the checkpoint (they will be logged again)."""
        if not self.enabled or not self.path.exists():
            return
        kept = [line for line in self.path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
        temp = self.path.with_suffix(".tmp")
        temp.write_text("".join(line + "\n" for line in kept))
        os.replace(temp, self.path)

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.tb.add_scalar(key, value, record["step"])
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
