"""Optimizers: the fastest kernel available for this run, chosen once and said once.

    adamw, GPU             torch.optim.AdamW(fused=True), one multi-tensor CUDA kernel; DeepSpeed's
                           FusedAdam (the same arithmetic) only where DeepSpeed was installed with it
                           built (DS_BUILD_FUSED_ADAM=1): never a just-in-time build at start-up
    adamw, optimizer on    DeepSpeed's CPU Adam (AVX kernel); if it cannot be built, torch AdamW on
    CPU (ZeRO offload)     the CPU (and DeepSpeed is told to accept it)
    adamw, CPU-only run    torch.optim.AdamW (foreach)
    lamb, GPU              DeepSpeed's FusedLamb; else ``Lamb`` below
    lamb, CPU              ``Lamb`` below
    stable_adamw           ``StableAdamW`` below (plain PyTorch, per tensor)

DeepSpeed's kernels are built just in time through ``jit_ops``, so that a build killed earlier cannot
hang this run.

LAMB scales each layer's update by ||weights|| / ||update||, and StableAdamW each tensor's step by its
update's RMS; ZeRO flattens and partitions parameters, so both run without ZeRO partitioning
(train.ds_config=zero0), as NVIDIA's BERT recipe does (OptimConfig.whole_tensors).

Without ZeRO the optimizer also clips: ``ClipsGradients`` takes the global norm with one foreach
kernel and scales the gradients by min(1, max_norm / norm) on the device, so nothing waits for the
GPU; the norm stays a tensor until the trainer logs it.
"""

from __future__ import annotations

import functools
import logging

import torch

from pretrain.jit_ops import load_op, prebuilt

log = logging.getLogger(__name__)


class PerTensorAdam(torch.optim.Optimizer):
    """Adam's two moments for each tensor on its own (fp32; the step counted on the host); a subclass turns them
    into that tensor's step (``apply``)."""

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = self.state[param]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(param, dtype=torch.float32)
                    state["exp_avg_sq"] = torch.zeros_like(param, dtype=torch.float32)
                state["step"] += 1
                grad = param.grad.float()
                state["exp_avg"].mul_(beta1).add_(grad, alpha=1 - beta1)
                state["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                self.apply(param, grad, state, group)
        return loss

    def apply(self, param: torch.Tensor, grad: torch.Tensor, state: dict, group: dict) -> None:
        raise NotImplementedError


class Lamb(PerTensorAdam):
    """LAMB (You et al., 2019) in plain PyTorch, with DeepSpeed FusedLamb's exact arithmetic (read from
    its CUDA kernel): update = m / (sqrt(v) + eps) + weight_decay * p on the raw moments; trust ratio
    ||p|| / ||update|| clipped to [min_coeff, max_coeff] (1 where either norm is zero); the bias
    correction goes into the step size, lr * sqrt(1 - beta2^t) / (1 - beta1^t), as in Adam."""

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-6,
                 weight_decay: float = 0.01, max_coeff: float = 10.0, min_coeff: float = 0.01) -> None:
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, max_coeff=max_coeff, min_coeff=min_coeff)
        super().__init__(params, defaults)

    def apply(self, param: torch.Tensor, grad: torch.Tensor, state: dict, group: dict) -> None:
        beta1, beta2 = group["betas"]
        weights = param.float()
        update = state["exp_avg"] / (state["exp_avg_sq"].sqrt() + group["eps"])
        if group["weight_decay"]:
            update.add_(weights, alpha=group["weight_decay"])
        weight_norm, update_norm = weights.norm(), update.norm()
        trust = torch.where((weight_norm > 0) & (update_norm > 0), weight_norm / update_norm,
                            torch.ones_like(weight_norm)).clamp(group["min_coeff"], group["max_coeff"])
        step_size = group["lr"] * (1 - beta2 ** state["step"]) ** 0.5 / (1 - beta1 ** state["step"])
        param.add_((update * (-step_size * trust)).to(param.dtype))


class StableAdamW(PerTensorAdam):
    """AdamW whose step shrinks, tensor by tensor, where the update would be unstable: StableAdamW (Wortsman et
    al. 2023), the optimizer ModernBERT was trained with. Each tensor's learning rate is lr / max(1, RMS), RMS
    the root mean square of g / sqrt(max(v_hat, eps^2)) over its elements (AdaFactor's update clipping: the
    current gradient against the second-moment estimate), so it needs no gradient clipping. Otherwise torch's
    AdamW: bias-corrected moments, decoupled weight decay, p -= lr_t * (m_hat / (sqrt(v_hat) + eps) + wd * p).
    The clipped rate stays a tensor: nothing is read back to the host."""

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.98), eps: float = 1e-6,
                 weight_decay: float = 0.0) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    def apply(self, param: torch.Tensor, grad: torch.Tensor, state: dict, group: dict) -> None:
        beta1, beta2 = group["betas"]
        second_hat = state["exp_avg_sq"] / (1 - beta2 ** state["step"])
        rms = (grad * grad / second_hat.clamp_min(group["eps"] ** 2)).mean().sqrt()
        rate = group["lr"] / rms.clamp_min(1.0)
        weights = param.float()
        update = state["exp_avg"] / (1 - beta1 ** state["step"]) / (second_hat.sqrt() + group["eps"])
        if group["weight_decay"]:
            update.add_(weights, alpha=group["weight_decay"])
        param.copy_(weights - rate * update)


class ClipsGradients:
    """Mixin for a torch optimizer: clip the global gradient norm at the start of ``step`` and keep it as
    ``_global_grad_norm`` (a tensor; DeepSpeed's engine hands it on as ``get_global_grad_norm()``)."""

    max_grad_norm: float = 0.0

    def step(self, closure=None):
        self.clip_gradients()
        return super().step(closure)

    def clip_gradients(self) -> None:
        params = [p for group in self.param_groups for p in group["params"] if p.grad is not None]
        if not params:
            return
        if self.max_grad_norm > 0:
            self._global_grad_norm = torch.nn.utils.clip_grad_norm_(params, self.max_grad_norm, foreach=True)
        else:
            self._global_grad_norm = torch.nn.utils.get_total_norm([p.grad for p in params], foreach=True)


@functools.cache
def clipping(cls: type) -> type:
    """``cls`` with ``ClipsGradients`` in front (one subclass per optimizer class)."""
    return type(f"Clipped{cls.__name__}", (ClipsGradients, cls), {})


def build_optimizer(param_groups: list[dict], name: str, hyper: dict, on_gpu: bool, offloaded: bool,
                    ds_config: dict, clip: float | None = None) -> tuple[torch.optim.Optimizer, str]:
    """The optimizer instance for deepspeed.initialize, and what was chosen (for the log). With ``clip``
    (not None) the optimizer clips gradients to that norm itself (see ``ClipsGradients``)."""
    optimizer, chosen = _build(param_groups, name, hyper, on_gpu, offloaded, ds_config)
    if clip is not None:
        optimizer.__class__ = clipping(type(optimizer))
        optimizer.max_grad_norm = clip
        chosen += f", clipping to {clip:g} on the device" if clip > 0 else ""
    return optimizer, chosen


def _build(param_groups: list[dict], name: str, hyper: dict, on_gpu: bool, offloaded: bool,
           ds_config: dict) -> tuple[torch.optim.Optimizer, str]:
    if name == "lamb":
        lamb_hyper = {k: v for k, v in hyper.items() if k != "fused"}
        if on_gpu:
            try:
                from deepspeed.ops.lamb import FusedLamb

                load_op("FusedLambBuilder")
                return FusedLamb(param_groups, **lamb_hyper), "FusedLamb (DeepSpeed, CUDA)"
            except Exception as exc:  # noqa: BLE001 - any build or import failure means: fall back
                return Lamb(param_groups, **lamb_hyper), f"Lamb (PyTorch; FusedLamb unavailable: {_short(exc)})"
        return Lamb(param_groups, **lamb_hyper), "Lamb (PyTorch, CPU)"
    adam_hyper = {k: v for k, v in hyper.items() if k != "fused"}
    if name == "stable_adamw":
        return StableAdamW(param_groups, **adam_hyper), "StableAdamW (PyTorch, per tensor)"
    if offloaded:
        try:
            from deepspeed.ops.adam import DeepSpeedCPUAdam

            load_op("CPUAdamBuilder")
            return DeepSpeedCPUAdam(param_groups, adamw_mode=True, **adam_hyper), "DeepSpeedCPUAdam (offloaded)"
        except Exception as exc:  # noqa: BLE001
            ds_config["zero_force_ds_cpu_optimizer"] = False
            return torch.optim.AdamW(param_groups, **adam_hyper), f"torch AdamW on CPU (CPU Adam unavailable: {_short(exc)})"
    if on_gpu and hyper.get("fused", True):
        if not prebuilt("FusedAdamBuilder"):  # the same fused kernel in torch: no minute-long JIT build per node
            return torch.optim.AdamW(param_groups, fused=True, **adam_hyper), "torch AdamW(fused=True)"
        try:
            from deepspeed.ops.adam import FusedAdam

            load_op("FusedAdamBuilder")
            return FusedAdam(param_groups, adam_w_mode=True, **adam_hyper), "FusedAdam (DeepSpeed, prebuilt)"
        except Exception as exc:  # noqa: BLE001
            return (torch.optim.AdamW(param_groups, fused=True, **adam_hyper),
                    f"torch AdamW(fused=True) (FusedAdam unavailable: {_short(exc)})")
    if on_gpu:
        return torch.optim.AdamW(param_groups, foreach=False, **adam_hyper), "torch AdamW (per-tensor, unfused)"
    return torch.optim.AdamW(param_groups, foreach=True, **adam_hyper), "torch AdamW (foreach, CPU)"


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1] if text else ''}"[:160]
