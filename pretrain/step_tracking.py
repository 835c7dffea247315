"""What the training loop reads back from the device, and when: per-step statistics one step late, and
a throughput window that counts training steps only.

A step never waits for the GPU. Its loss and gradient norm stay on the device, are averaged over the
ranks there, and are copied to pinned host memory behind an event; the loop reads step t's numbers
after it has queued step t+1, when they are long finished, so the host stays one step ahead and the
GPU never runs dry. Log steps, evaluations and checkpoints read everything at once.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass

import torch


@dataclass
class StepNumbers:
    step: int
    loss: float
    grad_norm: float | None


class StepStats:
    """Loss and gradient norm of each step, reduced over ranks on the device, read one step late."""

    def __init__(self, device: torch.device, world_size: int) -> None:
        self.device, self.world_size = device, world_size
        self.on_gpu = device.type == "cuda"
        self._pending: deque = deque()

    def push(self, step: int, loss_share: torch.Tensor, grad_norm: torch.Tensor | None) -> None:
        """Queue step ``step``'s device tensors (no host sync): this rank's share of the step's loss (the
        shares of all ranks sum to it) and the gradient norm (the same on every rank)."""
        norm = grad_norm if grad_norm is not None else torch.zeros((), device=self.device)
        values = torch.stack([loss_share.float().reshape(()), norm.float().reshape(()).to(self.device) / self.world_size])
        if torch.distributed.is_initialized() and self.world_size > 1:
            torch.distributed.all_reduce(values)
        host = torch.empty(2, dtype=torch.float32, pin_memory=self.on_gpu)
        host.copy_(values, non_blocking=self.on_gpu)
        event = None
        if self.on_gpu:
            event = torch.cuda.Event()
            event.record()
        self._pending.append((step, host, event, grad_norm is not None))

    def collect(self, keep_last: int = 1) -> list[StepNumbers]:
        """Numbers of every queued step but the newest ``keep_last`` (0: all; waits for them)."""
        out = []
        while len(self._pending) > keep_last:
            step, host, event, has_norm = self._pending.popleft()
            if event is not None:
                event.synchronize()
            loss, norm = host.tolist()
            out.append(StepNumbers(step, loss, norm if has_norm else None))
        return out


def finite(numbers: StepNumbers) -> bool:
    return math.isfinite(numbers.loss) and (numbers.grad_norm is None or math.isfinite(numbers.grad_norm))


class ThroughputWindow:
    """Wall time of training steps alone, for tokens/s and MFU.

    It opens after the launch's first step (compilation and warm-up), is paused around evaluation and
    checkpoint saving, and synchronizes the device at each edge, so work queued before an edge is
    counted on the side where it ran."""

    def __init__(self, device: torch.device) -> None:
        self.on_gpu = device.type == "cuda"
        self.seconds, self.steps, self.samples, self._started = 0.0, 0, 0, None

    def _now(self) -> float:
        if self.on_gpu:
            torch.cuda.synchronize()
        return time.perf_counter()

    def open(self) -> None:
        if self._started is None:
            self._started = self._now()

    def pause(self) -> None:
        if self._started is not None:
            self.seconds += self._now() - self._started
            self._started = None

    def count_step(self, samples: int) -> None:
        """A step of ``samples`` samples (the global batch; on a batch ramp-up it varies) ended."""
        if self._started is not None:
            self.steps += 1
            self.samples += samples

    def lap(self) -> tuple[float, float] | None:
        """(seconds per counted step, samples per second) since the last lap, or None if no step was counted;
        starts a new lap."""
        running = self._started is not None
        self.pause()
        figures = (self.seconds / self.steps, self.samples / self.seconds) if self.steps and self.seconds else None
        self.seconds, self.steps, self.samples = 0.0, 0, 0
        if running:
            self.open()
        return figures
