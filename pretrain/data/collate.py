"""Batching: stack samples, count the labelled tokens, and drop an attention mask that masks nothing.

Both are decided here, on the host, where the batch already is:
  * ``num_labels`` (the tokens the loss is taken over) lets the trainer weight each micro batch by its
    share of the step's tokens before any of them reaches the GPU (masked LM batches differ);
  * a batch without padding reaches the model with no mask at all, so SDPA can use its flash kernel,
    and the model never has to ask the GPU whether the mask is all ones (a host sync).
"""

from __future__ import annotations

import torch
from torch.utils.data import default_collate

IGNORE_INDEX = -100


def collate(samples: list[dict[str, torch.Tensor]]) -> dict:
    """The stacked tensors, plus ``num_labels``: a plain int, read where the batch is made (a loader worker)."""
    batch = default_collate(samples)
    if "tokens" in batch:  # packed causal LM: every position but the last predicts the next token
        batch["num_labels"] = batch["tokens"].shape[0] * (batch["tokens"].shape[1] - 1)
    else:
        batch["num_labels"] = int((batch["labels"] != IGNORE_INDEX).sum())
    mask = batch.get("attention_mask")
    if mask is not None and bool(mask.all()):
        del batch["attention_mask"]
    return batch
