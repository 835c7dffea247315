"""Attention masks for decoders over packed samples, built on the device from what the batch carries.

A packed causal-LM sample holds several documents one after another. With ``data.document_mask`` the
batch carries ``position_ids`` (restarting at 0 at each document's first token; made on the host by the
dataset) and a token attends only to earlier tokens of its own document. Here the documents are numbered
by a cumulative sum of the restarts, so building the mask reads nothing back to the host.
"""

from __future__ import annotations

import torch


def mask_dtype(reference: torch.Tensor) -> torch.dtype:
    """The dtype an additive mask must have: autocast's where autocast is on, else the weights'."""
    device = reference.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else reference.dtype


def decoder_mask(length: int, device: torch.device, attention: str, dtype: torch.dtype,
                 position_ids: torch.Tensor | None = None) -> torch.Tensor | None:
    """The mask decoder blocks take: None where SDPA's causal kernel needs none (no document mask), else an
    additive mask (0 where a token may attend, the dtype's minimum elsewhere), [batch or 1, 1, length,
    length], in the attention's compute precision ``dtype``. Additive, not boolean: SDPA turns a boolean
    mask into an additive one in every block and keeps each copy for backward; this one tensor is kept
    once. Eager attention applies only the mask it is given, so it always gets the causal one."""
    if position_ids is None and attention == "sdpa":
        return None
    index = torch.arange(length, device=device)
    keep = index[:, None] >= index[None, :]
    if position_ids is None:
        keep = keep[None, None]
    else:
        document = (position_ids == 0).cumsum(dim=1)
        keep = (keep & (document[:, :, None] == document[:, None, :]))[:, None]
    return torch.zeros((), dtype=dtype, device=device).masked_fill(~keep, torch.finfo(dtype).min)


def varlen_arguments(cu_seqlens: torch.Tensor | None, length: int) -> dict:
    """What transformers' flash_attention_2 takes for packed documents: their boundaries (made on the host by
    pretrain.data.collate) and the sample length as the longest document, so no value is read back."""
    if cu_seqlens is None:
        raise ValueError("the varlen kernel needs the batch's cu_seqlens (pretrain.data.collate makes them)")
    return {"cu_seq_lens_q": cu_seqlens, "cu_seq_lens_k": cu_seqlens, "max_length_q": length, "max_length_k": length}
