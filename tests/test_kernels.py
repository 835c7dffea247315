"""The fast paths checked against the plain ones on CPU: the fused LM head, this project's model (padding
masks, the fixed-size MLM gather, the compact GPT-2 block, compiled blocks), the absence of host syncs
in a step, gradient clipping in the optimizer, LAMB, and the optimizer fallbacks (GPU kernels are
checked by benchmarks/mfu_check.sh on a GPU)."""

from __future__ import annotations

import logging
import math

import pytest
import torch

from pretrain.config import ModelConfig
from pretrain.model import build_model
from pretrain.model.head import lm_cross_entropy, softmax_xent_grad
from pretrain.optim import Lamb, build_optimizer
from tests.host_sync import HostSyncs

SPECIALS = {"eod": 1, "pad": 0, "cls": 2, "sep": 3, "mask": 4, "unk": 5}


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


def test_chunked_head_under_autocast_keeps_fp32_weights_and_their_gradient():
    """bf16 autocast: fp32 weights, bf16 hidden states; the head casts the weights for its GEMMs and the
    gradient flows back to the fp32 weights."""
    h, w, b, y = head_case(torch.float32, rows=200, hidden=32, vocab=300, bias=False)
    want_loss, _, (want_h, want_w) = loss_and_grads(h, w, None, y, None)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        hidden = h.bfloat16()
        loss, _ = lm_cross_entropy(hidden, w, y, chunk_rows=64)
    got_h, got_w = torch.autograd.grad(loss * 3.0, [h, w])
    assert got_w.dtype == torch.float32
    torch.testing.assert_close(loss, want_loss, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(got_w, want_w, rtol=0.1, atol=0.02 * want_w.abs().max().item())


def test_chunked_head_with_no_labelled_rows():
    h, w, b, y = head_case(torch.float64)
    y[:] = -100
    loss, count, grads = loss_and_grads(h, w, b, y, 8)
    assert count == 0 and loss == 0 and all(torch.count_nonzero(g) == 0 for g in grads)


def test_the_chunk_kernel_compiles_to_the_same_numbers():
    """The softmax kernel GPUs run compiled (here with the aot_eager backend: the graph, not inductor)."""
    logits = torch.randn(40, 97, dtype=torch.float64)
    target = torch.randint(0, 97, (40,))
    target[::3] = -100
    scale = (target != -100).double() / (target != -100).sum()
    compiled = torch.compile(softmax_xent_grad, backend="aot_eager", dynamic=False)
    for got, want in zip(compiled(logits.clone(), target, scale), softmax_xent_grad(logits.clone(), target, scale)):
        torch.testing.assert_close(got, want)


def tiny_model(family: str, **model_fields):
    model = ModelConfig(preset="tiny-gpt2" if family == "gpt2" else "tiny-bert", **model_fields)
    return build_model(model, 300, SPECIALS, sentence_order=False, seed=1, ds_config=None).double()


def batch_for(family: str, padded: bool = False, seed: int = 2):
    generator = torch.Generator().manual_seed(seed)
    if family == "gpt2":
        return {"tokens": torch.randint(0, 300, (3, 33), generator=generator)}
    labels = torch.full((3, 32), -100)
    labels[:, 1::5] = torch.randint(6, 300, (3, 7), generator=generator)
    positions = torch.zeros(3, 9, dtype=torch.long)
    positions[:, :7] = torch.arange(1, 32, 5)
    batch = {"input_ids": torch.randint(6, 300, (3, 32), generator=generator), "labels": labels,
             "masked_positions": positions, "token_type_ids": torch.zeros(3, 32, dtype=torch.long)}
    if padded:
        mask = torch.ones(3, 32, dtype=torch.long)
        mask[1, 20:] = 0
        batch["attention_mask"] = mask
    return batch


def loss_and_parameter_grads(model, batch):
    model.zero_grad()
    loss, count = model(batch)
    loss.backward()
    return loss.detach(), count, [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("family", ["gpt2", "bert"])
def test_model_loss_same_with_the_fused_and_the_plain_head(family):
    results = []
    for head in ("plain", "chunked"):
        torch.manual_seed(0)
        model = tiny_model(family, lm_head=head)
        results.append(loss_and_parameter_grads(model, batch_for(family)))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-10, atol=1e-12)
    for plain, fused in zip(results[0][2], results[1][2]):
        torch.testing.assert_close(plain, fused, rtol=1e-8, atol=1e-10)


def test_bert_loss_equals_cross_entropy_over_the_labelled_tokens():
    """The fixed-size gather of predicted positions computes exactly the masked-LM loss of all labels."""
    model = tiny_model("bert")
    batch = batch_for("bert", padded=True)
    loss, count, _ = loss_and_parameter_grads(model, batch)
    with torch.no_grad():
        logits = model.hf(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                          token_type_ids=batch["token_type_ids"]).logits
    want = torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten(), ignore_index=-100)
    assert count == 21
    torch.testing.assert_close(loss, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("padded", [False, True])
def test_bert_padding_mask_with_sdpa_and_eager_attention(padded):
    """The ready-made 4-D mask (boolean for SDPA, additive for eager) gives the same loss either way, and
    the same as transformers' own handling of the 2-D mask."""
    batch = batch_for("bert", padded=padded)
    losses = []
    for attention in ("sdpa", "eager"):
        model = tiny_model("bert", attention=attention)
        losses.append(loss_and_parameter_grads(model, batch)[0])
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("family", ["gpt2", "bert"])
def test_forward_and_backward_never_wait_for_the_device(family):
    """No value read back, no data-dependent shape: what would make the host wait for a GPU."""
    for padded in (False, True):
        model = tiny_model(family)
        batch = batch_for(family, padded=padded)
        with HostSyncs() as syncs:
            loss, _ = model(batch)
            loss.backward()
        assert syncs.found == [], (family, padded, syncs.found)


def test_own_gpt2_block_gives_the_hugging_face_models_logits():
    """model.block=own keeps transformers' parameters (names, shapes, Conv1D layout): the same state dict,
    the same logits; so the checkpoint exports as a plain GPT2LMHeadModel."""
    torch.manual_seed(0)
    hf_model = tiny_model("gpt2", block="hf", dropout=0.0)
    own_model = tiny_model("gpt2", block="own", dropout=0.0)
    assert list(own_model.state_dict()) == list(hf_model.state_dict())
    own_model.load_state_dict(hf_model.state_dict())
    batch = batch_for("gpt2")
    ids = batch["tokens"][:, :-1]
    with torch.no_grad():
        torch.testing.assert_close(own_model.hf(input_ids=ids).logits, hf_model.hf(input_ids=ids).logits,
                                   rtol=1e-12, atol=1e-12)
    own, hf = loss_and_parameter_grads(own_model, batch), loss_and_parameter_grads(hf_model, batch)
    torch.testing.assert_close(own[0], hf[0], rtol=1e-12, atol=1e-12)
    for a, b in zip(own[2], hf[2]):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_compiled_blocks_match_eager_and_fall_back_when_compiling_fails(caplog, monkeypatch):
    from pretrain.model import build as model_build
    from pretrain.model.compiled import CompiledOrEager

    batch = batch_for("gpt2")
    eager = loss_and_parameter_grads(tiny_model("gpt2"), batch)
    original = CompiledOrEager.__init__

    def aot_eager(self, function, name, **options):  # the graph machinery without a C++ compiler
        original(self, function, name, backend="aot_eager", **options)

    monkeypatch.setattr(CompiledOrEager, "__init__", aot_eager)
    model = tiny_model("gpt2")
    model_build.compile_each_block(model.hf)
    compiled = loss_and_parameter_grads(model, batch)
    torch.testing.assert_close(compiled[0], eager[0], rtol=1e-10, atol=1e-12)

    def broken(self, function, name, **options):
        original(self, function, name, backend=_failing_backend, **options)

    monkeypatch.setattr(CompiledOrEager, "__init__", broken)
    model = tiny_model("gpt2")
    model_build.compile_each_block(model.hf)
    with caplog.at_level(logging.WARNING):
        fallback = loss_and_parameter_grads(model, batch)
    torch.testing.assert_close(fallback[0], eager[0], rtol=1e-10, atol=1e-12)
    warnings = [r.message for r in caplog.records if "torch.compile of" in r.message]
    assert len(warnings) == 1 and "running it eager" in warnings[0]  # said once for all blocks


def _failing_backend(graph, example_inputs):
    raise RuntimeError("no working compiler here")


def test_recompute_marks_the_first_blocks():
    from pretrain.model.build import set_recompute
    from pretrain.model.hf import transformer_blocks

    model = tiny_model("gpt2")
    set_recompute(model.hf, 1)
    assert [b.gradient_checkpointing for b in transformer_blocks(model.hf)] == [True, False]
    batch = batch_for("gpt2")
    plain = loss_and_parameter_grads(tiny_model("gpt2"), batch)
    recomputed = loss_and_parameter_grads(model, batch)
    torch.testing.assert_close(recomputed[0], plain[0], rtol=1e-12, atol=1e-12)


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


def test_model_and_hardware_flops():
    from pretrain.metrics import transformer_flops

    # Narayanan et al. (2021), eq. 3 without recomputation: 72 B s l h^2 (1 + s / 6h + V / 12 l h)
    b, s, l_, h, v = 8, 1024, 24, 1024, 50304
    megatron = 72 * b * s * l_ * h * h * (1 + s / (6 * h) + v / (12 * l_ * h))
    assert transformer_flops(l_, h, s, v, b * s) == pytest.approx(megatron, rel=1e-12)
    assert math.isclose(transformer_flops(l_, h, s, v, b * s, recomputed_layers=l_),
                        96 * b * s * l_ * h * h * (1 + s / (6 * h) + v / (16 * l_ * h)), rel_tol=1e-12)
    half = transformer_flops(l_, h, s, v, b * s, recomputed_layers=l_ // 2)
    assert transformer_flops(l_, h, s, v, b * s) < half < transformer_flops(l_, h, s, v, b * s, recomputed_layers=l_)
