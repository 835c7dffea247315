"""Batching: stack samples, count the labelled tokens, and drop an attention mask that masks nothing.

Both are decided here, on the host, where the batch already is:
  * ``num_labels`` (the tokens the loss is taken over) lets the trainer weight each micro batch by its
    share of the step's tokens before any of them reaches the GPU (masked LM batches differ);
  * a batch without padding reaches the model with no mask at all, so SDPA can use its flash kernel,
    and the model never has to ask the GPU whether the mask is all ones (a host sync);
  * packed documents with ``position_ids`` (document masking) get ``cu_seqlens``: where each document
    starts in the flattened batch, and its end (int32), as FlashAttention's varlen kernel takes them.
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
    if "position_ids" in batch:  # a document starts at each position 0 and at each sample's first token
        starts = batch["position_ids"] == 0
        starts[:, 0] = True
        where = torch.nonzero(starts.reshape(-1)).reshape(-1)
        batch["cu_seqlens"] = torch.cat([where, torch.tensor([starts.numel()])]).to(torch.int32)
    mask = batch.get("attention_mask")
    if mask is not None and bool(mask.all()):
        del batch["attention_mask"]
    return batch
