"""Distributed batch sampling that resumes in O(1) from the number of consumed samples.

Each optimizer step consumes the next G samples of the dataset (G = its global batch: train.global_batch, or
on a batch ramp-up its size at that point), whatever the data-parallel size; each rank takes its micro-batch
slice of every ``micro_batch * dp_size`` block. So the samples of each optimizer step are the same on 1 rank
or many, and resuming starts at ``consumed_samples`` directly, replaying nothing.
"""

from __future__ import annotations

from collections.abc import Iterator


class PretrainingBatchSampler:
    def __init__(self, total_samples: int, consumed_samples: int, micro_batch: int, dp_rank: int, dp_size: int) -> None:
        if consumed_samples > total_samples:
            raise ValueError(f"consumed {consumed_samples} samples but the dataset has only {total_samples}")
        self.total_samples = total_samples
        self.consumed_samples = consumed_samples
        self.micro_batch = micro_batch
        self.dp_rank = dp_rank
        self.dp_size = dp_size

    def __len__(self) -> int:
        return (self.total_samples - self.consumed_samples) // (self.micro_batch * self.dp_size)

    def __iter__(self) -> Iterator[list[int]]:
        block = self.micro_batch * self.dp_size
        mine = self.dp_rank * self.micro_batch
        for start in range(self.consumed_samples, self.total_samples - block + 1, block):
            yield list(range(start + mine, start + mine + self.micro_batch))
