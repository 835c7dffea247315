"""Language-model loss from hidden states: the vocabulary projection fused with cross-entropy.

``lm_cross_entropy`` returns (mean loss over positions whose label is not -100, their count), both as
tensors: nothing here reads a value back to the host, so a step never waits on the GPU.

Implementations (``model.lm_head``):
  * ``chunked``: rows in chunks, each chunk's logits in the compute precision (bf16 tensor cores),
    softmax and its gradient in one fused pass (compiled on GPUs) that reads those logits and writes
    the gradient in place of them, and the two gradient GEMMs right away in forward (as Liger-Kernel
    does), so backward has nothing left to recompute and the [tokens x vocab] logits never exist at once.
  * ``liger``: Liger-Kernel's fused linear cross-entropy (Triton), where it is installed and asked for
    by name (it reads values back to the host in each micro batch; see ``resolve_head``).
  * ``plain``: ``F.cross_entropy(hidden @ W.T)`` in fp32: the reference the others are tested against.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch.nn import functional as F

log = logging.getLogger(__name__)
IGNORE_INDEX = -100
CHUNK_ROWS = 8192  # 8192 rows x 50k vocabulary: 0.8 GB of bf16 logits at a time


def lm_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, bias: torch.Tensor | None = None,
                     chunk_rows: int | None = None,
                     chunk_kernel: Callable | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean loss over labelled rows, number of labelled rows). hidden: [N, H], weight: [V, H], labels: [N].

    ``chunk_rows=None`` is the plain path. The GEMMs run in the compute precision (``compute_dtype``):
    autocast's where autocast is on, else the hidden states'; the softmax and every sum across rows or
    chunks accumulate in fp32 (fp64 for fp64 inputs) whatever the precision."""
    count = (labels != IGNORE_INDEX).sum()
    if chunk_rows is None:
        logits = F.linear(hidden, weight, bias)
        logits = logits if logits.dtype == torch.float64 else logits.float()
        total = F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX, reduction="sum")
        return total / count.clamp(min=1), count
    loss = ChunkedLinearCrossEntropy.apply(hidden, weight, bias, labels, chunk_rows, chunk_kernel or softmax_xent_grad,
                                           compute_dtype(hidden))
    return loss, count


def compute_dtype(hidden: torch.Tensor) -> torch.dtype:
    """The precision of the head's GEMMs: autocast's dtype under autocast (there the weights are fp32 and
    the hidden states may arrive in fp32 too, from a LayerNorm), else the hidden states' own."""
    device = hidden.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else hidden.dtype


def _in_compute_precision(hidden, weight, bias):
    """Hidden states, weight and bias cast to ``compute_dtype`` (autograd brings their gradients back)."""
    dtype = compute_dtype(hidden)
    return hidden.to(dtype), weight.to(dtype), None if bias is None else bias.to(dtype)


def softmax_xent_grad(logits: torch.Tensor, target: torch.Tensor,
                      row_scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For a chunk of logits: (sum of row losses x row_scale, its gradient with respect to the logits).

    ``row_scale`` is 1 / (labelled rows) on labelled rows and 0 on ignored ones; its dtype is the
    accumulation precision (fp32, or fp64 in tests). The softmax runs in it, in place in the chunk's own
    buffer (the logits are not needed afterwards); the gradient comes back in the logits' precision.
    Eager, that is four passes over the chunk; compiled (GPUs), one reduction and one elementwise pass."""
    x = logits.to(row_scale.dtype)
    safe = torch.where(target != IGNORE_INDEX, target, 0)
    log_norm = torch.logsumexp(x, dim=-1)
    picked = x.gather(1, safe[:, None]).squeeze(1)
    loss = ((log_norm - picked) * row_scale).sum()
    grad = x.sub_(log_norm[:, None]).exp_()
    grad[torch.arange(len(safe), device=grad.device), safe] -= 1.0
    return loss, grad.mul_(row_scale[:, None]).to(logits.dtype)


class ChunkedLinearCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of ``hidden @ weight.T + bias`` in row chunks, gradients made in forward.

    Autocast is off inside: every GEMM runs in the ``dtype`` given (the caller's compute precision), on
    inputs cast to it once, so fp32 weights under bf16 autocast (no ZeRO) and bf16 weights (ZeRO) take
    the same path. Each chunk's logits are replaced by their gradient, which feeds the two gradient
    GEMMs right away. The weight's and the bias's gradients are summed over chunks in fp32 (in bf16,
    each chunk's addition would round away the small contributions), and backward multiplies by the
    upstream gradient in fp32 (the loss scale of a micro batch, which bf16 would round by up to 0.4%).
    The mean's ``1 / count`` is folded into the per-row scale up front, so no count is read back to the
    host."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, labels, chunk_rows, kernel, dtype):  # noqa: D102 - see class docstring
        needs_hidden, needs_weight, needs_bias = ctx.needs_input_grad[:3]
        accumulate = torch.float64 if dtype == torch.float64 else torch.float32
        with torch.autocast(hidden.device.type, enabled=False):
            h, w = hidden.to(dtype), weight.to(dtype)
            b = None if bias is None else bias.to(dtype)
            keep = labels != IGNORE_INDEX
            row_scale = keep.to(accumulate) / keep.sum().clamp(min=1)
            loss = h.new_zeros((), dtype=accumulate)
            grad_hidden = torch.empty_like(h) if needs_hidden else None
            grad_weight = None
            grad_bias = torch.zeros(w.shape[0], dtype=accumulate, device=w.device) if needs_bias else None
            for start in range(0, h.shape[0], chunk_rows):
                rows = h[start : start + chunk_rows]
                chunk_loss, grad = kernel(F.linear(rows, w, b), labels[start : start + chunk_rows],
                                          row_scale[start : start + chunk_rows])
                loss += chunk_loss
                if grad_hidden is not None:
                    torch.mm(grad, w, out=grad_hidden[start : start + chunk_rows])
                if needs_weight:
                    part = torch.mm(grad.t(), rows)
                    if grad_weight is None:
                        grad_weight = part if part.dtype == accumulate else part.to(accumulate)
                    else:
                        grad_weight += part
                if grad_bias is not None:
                    grad_bias += grad.sum(0, dtype=accumulate)
        ctx.save_for_backward(grad_hidden, grad_weight, grad_bias)
        ctx.dtypes = (hidden.dtype, weight.dtype, None if bias is None else bias.dtype)
        return loss

    @staticmethod
    def backward(ctx, grad_output):  # noqa: D102
        saved, dtypes = ctx.saved_tensors, ctx.dtypes
        scale = grad_output.to(torch.float64 if grad_output.dtype == torch.float64 else torch.float32)
        grads = [None if grad is None else (grad.to(scale.dtype) * scale).to(dtype) for grad, dtype in zip(saved, dtypes)]
        return (*grads, None, None, None, None)


def liger_cross_entropy() -> Callable | None:
    """Liger-Kernel's fused linear cross-entropy as ``(hidden, weight, labels, bias) -> mean loss``, or None."""
    try:
        from liger_kernel.transformers.fused_linear_cross_entropy import LigerFusedLinearCrossEntropyLoss
    except Exception as exc:  # noqa: BLE001 - its Triton kernels import with the installed triton, or fail
        missing = isinstance(exc, ModuleNotFoundError) and exc.name == "liger_kernel"  # not installed (too old: said)
        if not missing:  # installed, but broken: say why (a triton that does not suit it, say)
            log.warning("liger-kernel is installed but cannot be imported (%s: %s)", type(exc).__name__,
                        str(exc).splitlines()[0] if str(exc) else "")
        return None
    loss = LigerFusedLinearCrossEntropyLoss(ignore_index=IGNORE_INDEX, reduction="mean")

    def apply(hidden, weight, labels, bias):
        hidden, weight, bias = _in_compute_precision(hidden, weight, bias)
        result = loss(weight, hidden, labels, bias)
        return result[0] if isinstance(result, tuple) else result  # some versions add the z-loss

    return apply


class LMHead(torch.nn.Module):
    """The loss head: projection with the (tied) output embedding, then cross-entropy.

    It owns no parameters: the output projection's weight (and BERT's decoder bias) are registered as
    external parameters under ZeRO-3, so ZeRO gathers them for this module's forward and backward."""

    def __init__(self, projection: torch.nn.Linear, kind: str, on_gpu: bool) -> None:
        super().__init__()
        self._projection = [projection]  # a list: not a submodule, its parameters stay where they are
        self.kind, self._liger, self._kernel = resolve_head(kind, on_gpu)

    @property
    def weight(self) -> torch.Tensor:
        return self._projection[0].weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self._projection[0].bias

    def register_with_zero3(self) -> None:
        import deepspeed

        deepspeed.zero.register_external_parameter(self, self.weight)
        if self.bias is not None:
            deepspeed.zero.register_external_parameter(self, self.bias)

    def forward(self, hidden: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self._liger is not None:
            return self._liger(hidden, self.weight, labels, self.bias), (labels != IGNORE_INDEX).sum()
        chunk = None if self.kind == "plain" else CHUNK_ROWS
        return lm_cross_entropy(hidden, self.weight, labels, self.bias, chunk_rows=chunk, chunk_kernel=self._kernel)


def resolve_head(kind: str, on_gpu: bool) -> tuple[str, Callable | None, Callable | None]:
    """(what runs, Liger's function or None, the chunk kernel) for ``model.lm_head``; said once in the log.

    "auto" is the chunked head: Liger-Kernel's (0.8) reads two values back to the host per micro batch
    (the count of labelled rows with ``.item()`` in forward, ``torch.equal(grad_output, 1.0)`` in
    backward), so it runs only when asked for by name."""
    liger = liger_cross_entropy() if on_gpu and kind == "liger" else None
    if liger is not None:
        log.info("LM head: Liger-Kernel's fused linear cross-entropy (it waits for the GPU twice per micro batch)")
        return "liger", liger, None
    if kind == "liger":
        log.warning("model.lm_head=liger, but %s: using the chunked head", "liger-kernel cannot be imported (pip "
                    "install liger-kernel)" if on_gpu else "Liger-Kernel runs on GPUs only")
    if kind == "plain":
        log.info("LM head: plain (full logits, then cross-entropy)")
        return "plain", None, None
    if on_gpu:
        from pretrain.model.compiled import CompiledOrEager

        log.info("LM head: chunked, softmax and its gradient compiled into one pass per chunk")
        return "chunked", None, CompiledOrEager(softmax_xent_grad, "the LM head's softmax kernel", dynamic=False)
    return "chunked", None, softmax_xent_grad
