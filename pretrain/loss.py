"""Language-model loss from hidden states: the vocabulary projection fused with cross-entropy.

``lm_cross_entropy`` returns the mean loss over positions whose label is not -100. With
``chunk_rows`` it never holds the [tokens x vocab] logits at once (a 50k vocabulary at seq 1024 and
batch 16 is 3 GB in fp32): rows are processed in chunks, and each chunk's gradients with respect to
the hidden states and the weight are computed right away in the forward pass (as Liger-Kernel's
fused linear cross-entropy does), so backward has nothing left to recompute. Without ``chunk_rows``
it is the plain ``F.cross_entropy(hidden @ W.T)``, the reference the fused path is tested against.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

IGNORE_INDEX = -100


def _upcast(x: torch.Tensor) -> torch.Tensor:
    """Half-precision logits go to fp32 for the softmax; fp32/fp64 stay as they are."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def lm_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, bias: torch.Tensor | None = None,
                     chunk_rows: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean loss over labelled rows, number of labelled rows). hidden: [N, H], weight: [V, H], labels: [N]."""
    count = (labels != IGNORE_INDEX).sum()
    if chunk_rows is None:
        logits = _upcast(F.linear(hidden, weight, bias))
        if count == 0:
            return logits.sum() * 0.0, count
        return F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX), count
    return ChunkedLinearCrossEntropy.apply(hidden, weight, bias, labels, chunk_rows), count


class ChunkedLinearCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of ``hidden @ weight.T + bias`` in row chunks, gradients made in forward."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, labels, chunk_rows):  # noqa: D102 - see class docstring
        needs_hidden, needs_weight, needs_bias = ctx.needs_input_grad[:3]
        acc = torch.float64 if weight.dtype == torch.float64 else torch.float32  # accumulation precision
        count = (labels != IGNORE_INDEX).sum().clamp(min=1).to(acc)
        loss = torch.zeros((), dtype=acc, device=hidden.device)
        grad_hidden = torch.empty_like(hidden) if needs_hidden else None
        grad_weight = torch.zeros(weight.shape, dtype=acc, device=weight.device) if needs_weight else None
        grad_bias = torch.zeros(weight.shape[0], dtype=acc, device=weight.device) if needs_bias else None
        some_ignored = bool((labels == IGNORE_INDEX).any())  # causal LM: none, and one pass saved per chunk
        for start in range(0, hidden.shape[0], chunk_rows):
            rows = hidden[start : start + chunk_rows]
            target = labels[start : start + chunk_rows]
            logits = _upcast(F.linear(rows, weight, bias))
            keep = target != IGNORE_INDEX
            safe = torch.where(keep, target, 0)
            log_norm = torch.logsumexp(logits, dim=-1)
            picked = logits.gather(1, safe[:, None]).squeeze(1)
            loss += ((log_norm - picked) * keep).sum()
            if grad_hidden is None and grad_weight is None and grad_bias is None:
                continue
            # d(sum of losses)/d(logits) = softmax - one_hot, in place in the logits buffer and zero on
            # ignored rows; the 1/count of the mean is applied once, in backward. The two matmuls run
            # in the weights' precision (bf16 tensor cores on GPUs, accumulating in fp32 inside).
            grad = logits.sub_(log_norm[:, None]).exp_()
            grad[torch.arange(len(safe), device=grad.device), safe] -= 1.0
            if some_ignored:
                grad *= keep[:, None]
            low = grad.to(weight.dtype)
            if grad_hidden is not None:
                grad_hidden[start : start + chunk_rows] = (low @ weight).to(hidden.dtype)
            if grad_weight is not None:
                grad_weight += low.t() @ rows.to(weight.dtype)
            if grad_bias is not None:
                grad_bias += grad.sum(0).to(acc)
        ctx.save_for_backward(grad_hidden, grad_weight, grad_bias, count)
        ctx.dtypes = (weight.dtype, None if bias is None else bias.dtype)
        return loss / count

    @staticmethod
    def backward(ctx, grad_output):  # noqa: D102
        grad_hidden, grad_weight, grad_bias, count = ctx.saved_tensors
        weight_dtype, bias_dtype = ctx.dtypes
        scale = grad_output / count
        return (
            None if grad_hidden is None else grad_hidden * scale.to(grad_hidden.dtype),
            None if grad_weight is None else (grad_weight * scale.to(grad_weight.dtype)).to(weight_dtype),
            None if grad_bias is None else (grad_bias * scale.to(grad_bias.dtype)).to(bias_dtype),
            None,
            None,
        )
