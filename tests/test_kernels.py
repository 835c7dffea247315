"""The fast paths checked against the plain ones on CPU: the chunked LM head + cross-entropy, SDPA
attention, LAMB, and the optimizer fallbacks (GPU-only kernels are checked by benchmarks/gpu_check.sh)."""

from __future__ import annotations

import math

import pytest
import torch

from pretrain.loss import lm_cross_entropy
from pretrain.optim import Lamb, build_optimizer


def head_case(dtype, rows=53, hidden=16, vocab=97, bias=True, ignore_every=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    h = torch.randn(rows, hidden, dtype=dtype, generator=generator).requires_grad_()
    w = torch.randn(vocab, hidden, dtype=dtype, generator=generator).requires_grad_()
    b = torch.randn(vocab, dtype=dtype, generator=generator).requires_grad_() if bias else None
    y = torch.randint(0, vocab, (rows,), generator=generator)
    if ignore_every:
        y[::ignore_every] = -100
    return h, w, b, y


def loss_and_grads(h, w, b, y, chunk, scale=3.0):
    loss, count = lm_cross_entropy(h, w, y, bias=b, chunk_rows=chunk)
    inputs = [t for t in (h, w, b) if t is not None]
    return loss, count, torch.autograd.grad(loss * scale, inputs)


@pytest.mark.parametrize("chunk", [1, 7, 64, 4096])
@pytest.mark.parametrize("bias", [True, False])
def test_chunked_head_is_exact_in_float64(chunk, bias):
    h, w, b, y = head_case(torch.float64, bias=bias)
    plain, count, plain_grads = loss_and_grads(h, w, b, y, None)
    fused, fused_count, fused_grads = loss_and_grads(h, w, b, y, chunk)
    assert count == fused_count == (y != -100).sum()
    torch.testing.assert_close(fused, plain, rtol=1e-12, atol=1e-12)
    for got, want in zip(fused_grads, plain_grads):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype,tolerance", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_chunked_head_in_training_precisions(dtype, tolerance):
    h, w, b, y = head_case(dtype, rows=300, hidden=64, vocab=1000)
    reference = [t.detach().double().requires_grad_() if t is not None else None for t in (h, w, b)]
    want_loss, _, want_grads = loss_and_grads(*reference, y, None)
    got_loss, _, got_grads = loss_and_grads(h, w, b, y, 64)
    assert got_loss.dtype == torch.float32  # the softmax runs in fp32 whatever the input precision
    torch.testing.assert_close(got_loss.double(), want_loss, rtol=tolerance, atol=tolerance)
    for got, want in zip(got_grads, want_grads):
        assert got.dtype == dtype
        torch.testing.assert_close(got.double(), want, rtol=tolerance * 10, atol=tolerance * want.abs().max().item())


def test_chunked_head_with_no_labelled_rows():
    h, w, b, y = head_case(torch.float64)
    y[:] = -100
    loss, count, grads = loss_and_grads(h, w, b, y, 8)
    assert count == 0 and loss == 0 and all(torch.count_nonzero(g) == 0 for g in grads)


@pytest.mark.parametrize("family", ["gpt2", "bert"])
def test_model_loss_same_with_and_without_the_fused_head(family):
    from pretrain.config import Config
    from pretrain.model import PretrainModel, create_uninitialized, hf_config, hf_model_class, initialize_weights
    from pretrain.presets import get_preset

    class _Vocabulary:
        vocab_size = 300
        specials = type("S", (), {"ids": {"eod": 1, "pad": 0}})()

    config = Config()
    config.model.preset = "tiny-gpt2" if family == "gpt2" else "tiny-bert"
    preset = get_preset(config.model.preset)
    hf = create_uninitialized(hf_model_class(family, False), hf_config(preset, config, _Vocabulary())).double()
    initialize_weights(hf, family, preset.layers, seed=1)
    generator = torch.Generator().manual_seed(2)
    if family == "gpt2":
        batch = {"tokens": torch.randint(0, 300, (3, 33), generator=generator)}
    else:
        labels = torch.full((3, 32), -100)
        labels[:, ::5] = torch.randint(2, 300, (3, 7), generator=generator)
        batch = {"input_ids": torch.randint(2, 300, (3, 32), generator=generator), "labels": labels,
                 "attention_mask": torch.ones(3, 32, dtype=torch.long), "token_type_ids": torch.zeros(3, 32, dtype=torch.long)}
    results = []
    for fused in (False, True):
        model = PretrainModel(hf, family, fused_loss=fused, chunk_rows=16)
        hf.zero_grad()
        loss, _ = model(batch)
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in hf.parameters()]))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-10, atol=1e-12)
    for plain, fused in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(plain, fused, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("family", ["gpt2", "bert"])
def test_sdpa_attention_matches_eager(family):
    from transformers import BertConfig, BertModel, GPT2Config, GPT2Model

    torch.manual_seed(0)
    outputs = []
    for implementation in ("eager", "sdpa"):
        torch.manual_seed(0)
        if family == "gpt2":
            model = GPT2Model(GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=128, vocab_size=100,
                                         attn_implementation=implementation)).eval()
            inputs = {"input_ids": torch.arange(80).reshape(2, 40) % 100}
        else:
            model = BertModel(BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                         intermediate_size=256, vocab_size=100, attn_implementation=implementation)).eval()
            mask = torch.ones(2, 40, dtype=torch.long)
            mask[1, 30:] = 0  # padding
            inputs = {"input_ids": torch.arange(80).reshape(2, 40) % 100, "attention_mask": mask}
        with torch.no_grad():
            outputs.append(model(**inputs).last_hidden_state)
    if family == "bert":  # padded positions are free to differ
        outputs = [o[:, :30] for o in outputs]
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-5, atol=1e-5)


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


def test_optimizer_fallbacks(monkeypatch):
    import deepspeed.ops.adam as ds_adam

    params = [{"params": [torch.nn.Parameter(torch.randn(4, 4))], "weight_decay": 0.1}]
    hyper = {"lr": 1e-3, "betas": (0.9, 0.95), "eps": 1e-8, "weight_decay": 0.1, "fused": True}

    class Broken:
        def __init__(self, *args, **kwargs):
            raise RuntimeError("no CUDA compiler here")

    monkeypatch.setattr(ds_adam, "FusedAdam", Broken)
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


def test_mfu_formula_matches_megatron():
    from pretrain.metrics import transformer_flops

    # Narayanan et al. (2021), eq. 3 without recomputation: 72 B s l h^2 (1 + s / 6h + V / 12 l h)
    b, s, l_, h, v = 8, 1024, 24, 1024, 50304
    megatron = 72 * b * s * l_ * h * h * (1 + s / (6 * h) + v / (12 * l_ * h))
    assert transformer_flops(l_, h, s, v, b * s, recompute=False) == pytest.approx(megatron, rel=1e-12)
    assert math.isclose(transformer_flops(l_, h, s, v, b * s, recompute=True),
                        96 * b * s * l_ * h * h * (1 + s / (6 * h) + v / (16 * l_ * h)), rel_tol=1e-12)
