"""The optimizers on CPU: gradient clipping inside the optimizer equals clip-then-AdamW (and reads nothing
back), LAMB's and StableAdamW's steps against their formulas, and the fallbacks when a fused kernel is
missing."""

from __future__ import annotations

import torch

from pretrain.host_sync import HostSyncs
from pretrain.optim import Lamb, build_optimizer


def test_clipping_in_the_optimizer_equals_clip_then_adamw():
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(8, 8)), torch.nn.Parameter(torch.randn(8))]
    copies = [torch.nn.Parameter(p.detach().clone()) for p in params]
    hyper = {"lr": 1e-2, "betas": (0.9, 0.95), "eps": 1e-8, "weight_decay": 0.1, "fused": True}
    clipped, chosen = build_optimizer([{"params": params, "weight_decay": 0.1}], "adamw", hyper, on_gpu=False,
                                      offloaded=False, ds_config={}, clip=0.5)
    plain = torch.optim.AdamW(copies, lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    assert "clipping to 0.5" in chosen
    for _ in range(3):
        grads = [torch.randn_like(p) * 10 for p in params]
        for p, q, g in zip(params, copies, grads):
            p.grad, q.grad = g.clone(), g.clone()
        clipped.step()
        want = torch.nn.utils.clip_grad_norm_(copies, 0.5)
        plain.step()
        assert torch.is_tensor(clipped._global_grad_norm)
        torch.testing.assert_close(clipped._global_grad_norm, want)
        for p, q in zip(params, copies):
            torch.testing.assert_close(p, q)
    for p in params:
        p.grad = torch.randn_like(p) * 10
    with HostSyncs() as syncs:  # the clipping alone: AdamW on the CPU counts its steps on the host
        clipped.clip_gradients()
    assert syncs.found == []


def test_lamb_step_matches_the_formula():
    torch.manual_seed(0)
    param = torch.nn.Parameter(torch.randn(5, 3))
    grad = torch.randn(5, 3)
    start = param.detach().clone()
    optimizer = Lamb([param], lr=0.1, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01)
    param.grad = grad.clone()
    optimizer.step()
    m, v = 0.1 * grad, 0.001 * grad * grad  # raw moments after one step
    update = m / (v.sqrt() + 1e-6) + 0.01 * start
    trust = min(max(start.norm() / update.norm(), 0.01), 10.0)
    step_size = 0.1 * (1 - 0.999) ** 0.5 / (1 - 0.9)  # FusedLamb folds the bias correction in here
    torch.testing.assert_close(param.detach(), start - step_size * trust * update)


def test_lamb_minimizes_a_quadratic_and_clamps_trust():
    torch.manual_seed(0)
    target = torch.randn(20)
    param = torch.nn.Parameter(torch.zeros(20))  # zero weights: trust ratio falls back to 1
    optimizer = Lamb([param], lr=0.05, weight_decay=0.0)
    for _ in range(300):
        optimizer.zero_grad()
        loss = ((param - target) ** 2).sum()
        loss.backward()
        optimizer.step()
    assert loss.item() < 1e-2 * (target ** 2).sum().item()


def test_stable_adamw_is_adamw_until_an_update_is_unstable():
    """StableAdamW (ModernBERT's optimizer) steps as torch's AdamW while each tensor's update RMS is at most 1
    (a steady gradient); after a gradient spike in one tensor, that tensor's step is AdamW's divided by its RMS
    (sqrt of the mean of g^2 / v_hat), the other tensor's is AdamW's; no host sync."""
    from pretrain.optim import StableAdamW

    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(6, 4)), torch.nn.Parameter(torch.randn(4))]
    copies = [torch.nn.Parameter(p.detach().clone()) for p in params]
    hyper = {"lr": 1e-2, "betas": (0.9, 0.98), "eps": 1e-6, "weight_decay": 0.1}
    optimizer, chosen = build_optimizer([{"params": params, "weight_decay": 0.1}], "stable_adamw",
                                        {**hyper, "fused": True}, on_gpu=False, offloaded=False, ds_config={})
    plain = torch.optim.AdamW(copies, **hyper)
    assert isinstance(optimizer, StableAdamW) and "StableAdamW" in chosen
    steady = [torch.randn_like(p) for p in params]
    for _ in range(4):
        for p, q, g in zip(params, copies, steady):
            p.grad, q.grad = g.clone(), g.clone()
        optimizer.step()
        plain.step()
        for p, q in zip(params, copies):
            torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
    spike = [steady[0] * 30, steady[1]]
    before = [p.detach().clone() for p in params]
    second = [optimizer.state[p]["exp_avg_sq"] * 0.98 + 0.02 * g * g for p, g in zip(params, spike)]
    rms = [(g * g / (v / (1 - 0.98 ** 5)).clamp_min(1e-12)).mean().sqrt() for g, v in zip(spike, second)]
    assert rms[0] > 2 and rms[1] <= 1 + 1e-6
    for p, q, g in zip(params, copies, spike):
        p.grad, q.grad = g.clone(), g.clone()
    with HostSyncs() as syncs:
        optimizer.step()
    plain.step()
    assert syncs.found == []
    torch.testing.assert_close(params[0] - before[0], (copies[0] - before[0]) / rms[0], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(params[1], copies[1], rtol=1e-6, atol=1e-7)


def test_optimizer_fallbacks(monkeypatch):
    import deepspeed.ops.adam as ds_adam

    from pretrain import optim

    monkeypatch.setattr(optim, "load_op", lambda name: None)  # building the C++ ops is tested in test_jit_ops
    params = [{"params": [torch.nn.Parameter(torch.randn(4, 4))], "weight_decay": 0.1}]
    hyper = {"lr": 1e-3, "betas": (0.9, 0.95), "eps": 1e-8, "weight_decay": 0.1, "fused": True}

    class Broken:
        def __init__(self, *args, **kwargs):
            raise RuntimeError("no CUDA compiler here")

    monkeypatch.setattr(ds_adam, "FusedAdam", Broken)
    monkeypatch.setattr(optim, "prebuilt", lambda name: False)  # a pip-installed DeepSpeed: nothing prebuilt
    optimizer, chosen = build_optimizer(params, "adamw", hyper, on_gpu=True, offloaded=False, ds_config={})
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.defaults["fused"] and chosen == "torch AdamW(fused=True)"
    monkeypatch.setattr(optim, "prebuilt", lambda name: True)  # prebuilt, but it fails to load
    optimizer, chosen = build_optimizer(params, "adamw", hyper, on_gpu=True, offloaded=False, ds_config={})
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.defaults["fused"] and "FusedAdam unavailable" in chosen
    optimizer, chosen = build_optimizer(params, "adamw", hyper, on_gpu=False, offloaded=False, ds_config={})
    assert isinstance(optimizer, torch.optim.AdamW) and "CPU" in chosen
    optimizer, chosen = build_optimizer(params, "lamb", hyper, on_gpu=False, offloaded=False, ds_config={})
    assert isinstance(optimizer, Lamb)
    monkeypatch.setattr(ds_adam, "DeepSpeedCPUAdam", Broken)
    ds_config: dict = {}
    optimizer, chosen = build_optimizer(params, "adamw", hyper, on_gpu=False, offloaded=True, ds_config=ds_config)
    assert isinstance(optimizer, torch.optim.AdamW) and ds_config["zero_force_ds_cpu_optimizer"] is False
