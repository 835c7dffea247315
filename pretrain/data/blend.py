"""Weighted blending of datasets, deterministic and vectorized.

Dataset d's k-th sample is due at "time" (k + 0.5) / w_d; merging all datasets' due times in order
(ties by dataset order) gives a sequence where every prefix holds each dataset within one sample of
its exact share, the same guarantee Megatron's greedy C++ blender gives.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def blend_counts(weights: list[float], size: int) -> list[int]:
    """Samples each dataset must provide for a blend of ``size`` (a small margin included)."""
    total = sum(weights)
    return [math.ceil(size * w / total) + 1 for w in weights]


def build_blend(weights: list[float], size: int) -> tuple[np.ndarray, np.ndarray]:
    """(dataset id, sample within that dataset) for each of ``size`` blended samples."""
    total = sum(weights)
    counts = blend_counts(weights, size)
    due = np.concatenate([(np.arange(n) + 0.5) / (w / total) for n, w in zip(counts, weights)])
    owner = np.concatenate([np.full(n, d, dtype=np.int16) for d, n in enumerate(counts)])
    within = np.concatenate([np.arange(n, dtype=np.int64) for n in counts])
    order = np.argsort(due, kind="stable")[:size]
    return owner[order], within[order]


class BlendedDataset(torch.utils.data.Dataset):
    def __init__(self, datasets: list[torch.utils.data.Dataset], weights: list[float], size: int) -> None:
        self.datasets = datasets
        self.dataset_index, self.sample_index = build_blend(weights, size)

    def __len__(self) -> int:
        return len(self.dataset_index)

    def __getitem__(self, index: int):
        return self.datasets[int(self.dataset_index[index])][int(self.sample_index[index])]
