"""The fast paths checked against the plain ones on CPU: the fused LM head, this project's model (padding
masks, the fixed-size MLM gather, the compact GPT-2 block, compiled blocks), the absence of host syncs
in a step, and FLOPs (the optimizers: tests/test_optim.py; GPU kernels are checked by
benchmarks/mfu_check.sh on a GPU)."""

from __future__ import annotations

import logging
import math

import pytest
import torch

from pretrain.config import ModelConfig
from pretrain.host_sync import HostSyncs
from pretrain.model import build_model
from pretrain.model.head import lm_cross_entropy, softmax_xent_grad

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


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    got, want = got.detach().double(), want.detach().double()
    return float((got - want).norm() / want.norm().clamp(min=1e-30))


def head_in_run_precision(h, w, b, y, weights: str, hidden_dtype: torch.dtype, chunk: int | None, scale: float):
    """The head as a bf16 run calls it, from fp64 inputs: without ZeRO, fp32 weights under autocast with hidden
    states in fp32 (a LayerNorm's output under autocast) or bf16; with ZeRO, everything bf16, no autocast.
    Returns (loss, gradients of hidden, weight, bias, the inputs they belong to)."""
    on_autocast = weights.startswith("fp32")
    params = [t.detach().to(torch.float32 if on_autocast else torch.bfloat16).requires_grad_() for t in (w, b)]
    hidden = h.detach().to(hidden_dtype if on_autocast else torch.bfloat16).requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=on_autocast):
        loss, _ = lm_cross_entropy(hidden, params[0], y, bias=params[1], chunk_rows=chunk)
    return loss.detach(), torch.autograd.grad(loss * scale, [hidden, *params]), (hidden, *params)


@pytest.mark.parametrize("weights", ["fp32 under autocast (no ZeRO)", "bf16 (ZeRO)"])
@pytest.mark.parametrize("hidden_dtype", [torch.float32, torch.bfloat16])
def test_chunked_head_gradients_in_each_precision_a_run_takes(weights, hidden_dtype):
    """Against the fp64 plain head: the loss within 5e-3 and each gradient (hidden, weight, bias; in its
    input's dtype) within 1.1x the relative error of the plain head in the same precision (about 1e-2:
    bf16's rounding of inputs and logits), over 6 chunks."""
    h, w, b, y = head_case(torch.float64, rows=512, hidden=64, vocab=700, seed=3)
    want_loss, _, want_grads = loss_and_grads(h, w, b, y, None, scale=1.37)
    loss, grads, inputs = head_in_run_precision(h, w, b, y, weights, hidden_dtype, 96, 1.37)
    _, plain_grads, _ = head_in_run_precision(h, w, b, y, weights, hidden_dtype, None, 1.37)
    assert loss.dtype == torch.float32 and relative_error(loss, want_loss) < 5e-3
    for got, plain, want, given in zip(grads, plain_grads, want_grads, inputs):
        assert got.dtype == given.dtype
        assert relative_error(plain, want) < 2e-2
        assert relative_error(got, want) < 1.1 * relative_error(plain, want)


def test_chunked_head_sums_the_weight_gradient_over_chunks_in_fp32():
    """bf16 weights (ZeRO), 64 chunks: each chunk's weight gradient added in bf16 would round the running sum
    64 times (relative error ~1e-2 here, measured); summed in fp32 it is one bf16 GEMM's rounding (~3e-3)."""
    h, w, b, y = head_case(torch.float64, rows=1024, hidden=32, vocab=64, bias=False, ignore_every=0, seed=4)
    want = loss_and_grads(h, w, None, y, None)[2][1]
    hb, wb = h.detach().bfloat16().requires_grad_(), w.detach().bfloat16().requires_grad_()
    got = loss_and_grads(hb, wb, None, y, 16)[2][1]
    assert got.dtype == torch.bfloat16
    assert relative_error(got, want) < 5e-3


@pytest.mark.parametrize("weights", ["fp32 under autocast (no ZeRO)", "bf16 (ZeRO)"])
def test_chunked_head_scales_its_gradients_in_fp32(weights):
    """The upstream gradient (a micro batch's share of the step, 1.37 here) multiplies in fp32: rounded to
    bf16 it would be 1.3671875, 0.2% off for every element at once."""
    h, w, b, y = head_case(torch.float64, rows=256, hidden=32, vocab=300)
    _, once, _ = head_in_run_precision(h, w, b, y, weights, torch.float32, 64, 1.0)
    _, scaled, _ = head_in_run_precision(h, w, b, y, weights, torch.float32, 64, 1.37)
    for a, b_ in zip(once, scaled):
        assert (b_.double().norm() / a.double().norm()).item() == pytest.approx(1.37, rel=3e-4)


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


def test_the_chunk_kernel_compiled_by_inductor_gives_the_eager_numbers_in_bf16():
    """The kernel as a GPU runs it: inductor's generated code (C++ here, Triton there), bf16 logits replaced in
    place by their bf16 gradient, the softmax in fp32; the same numbers as eager, to bf16's rounding."""
    torch._dynamo.reset()
    generator = torch.Generator().manual_seed(3)
    logits = (4 * torch.randn(64, 301, generator=generator)).bfloat16()
    target = torch.randint(0, 301, (64,), generator=generator)
    target[::5] = -100
    scale = (target != -100).float() / (target != -100).sum()
    compiled = torch.compile(softmax_xent_grad, backend="inductor", dynamic=False)
    got_loss, got_grad = compiled(logits.clone(), target, scale)
    want_loss, want_grad = softmax_xent_grad(logits.clone(), target, scale)
    assert got_grad.dtype == torch.bfloat16 and got_loss.dtype == torch.float32
    torch.testing.assert_close(got_loss, want_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got_grad, want_grad, rtol=1.6e-2, atol=1e-5)  # bf16: 8 bits of mantissa


TINY = {"gpt2": "tiny-gpt2", "bert": "tiny-bert", "llama": "llama-tiny", "modernbert": "modernbert-tiny"}


def tiny_model(family: str, **model_fields):
    model = ModelConfig(preset=TINY[family], **model_fields)
    return build_model(model, 300, SPECIALS, sentence_order=False, seed=1, ds_config=None).double()


def batch_for(family: str, padded: bool = False, seed: int = 2):
    generator = torch.Generator().manual_seed(seed)
    if family == "gpt2":
        return {"tokens": torch.randint(0, 300, (3, 33), generator=generator)}
    if family == "llama":  # "padded" for a decoder: packed documents, masked (positions and boundaries as collated)
        from pretrain.data.collate import collate
        from pretrain.data.gpt_dataset import document_positions

        tokens = torch.randint(6, 300, (3, 33), generator=generator)
        if not padded:
            return {"tokens": tokens}
        tokens[0, 9], tokens[0, 20], tokens[2, 4] = SPECIALS["eod"], SPECIALS["eod"], SPECIALS["eod"]
        samples = [{"tokens": row, "position_ids": torch.from_numpy(document_positions(row[:-1].numpy(), SPECIALS["eod"]))}
                   for row in tokens]
        batch = collate(samples)
        del batch["num_labels"]
        return batch
    labels = torch.full((3, 32), -100)
    labels[:, 1::5] = torch.randint(6, 300, (3, 7), generator=generator)
    positions = torch.zeros(3, 9, dtype=torch.long)
    positions[:, :7] = torch.arange(1, 32, 5)
    batch = {"input_ids": torch.randint(6, 300, (3, 32), generator=generator), "labels": labels,
             "masked_positions": positions, "token_type_ids": torch.zeros(3, 32, dtype=torch.long)}
    if family == "modernbert":  # no segments; "padded": a padding mask, else its default: packed documents
        del batch["token_type_ids"]
        if not padded:
            batch["input_ids"][:, [0, 12, 25]] = SPECIALS["cls"]  # three documents a sample, positions restarting
            index = torch.arange(32).expand(3, 32)
            starts = torch.where(batch["input_ids"] == SPECIALS["cls"], index, 0).cummax(dim=1).values
            batch["position_ids"] = index - starts
            return batch
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


@pytest.mark.parametrize("family", ["gpt2", "bert", "llama", "modernbert"])
def test_model_loss_same_with_the_fused_and_the_plain_head(family):
    results = []
    for head in ("plain", "chunked"):
        torch.manual_seed(0)
        model = tiny_model(family, lm_head=head)
        results.append(loss_and_parameter_grads(model, batch_for(family)))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-10, atol=1e-12)
    for plain, fused in zip(results[0][2], results[1][2]):
        torch.testing.assert_close(plain, fused, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("family", ["gpt2", "bert", "llama", "modernbert"])
def test_whole_model_gradients_in_bf16_are_the_fp32_ones_within_bf16s_error(family):
    """Every parameter's gradient under bf16 autocast (fp32 weights: no ZeRO) and with bf16 weights (ZeRO's),
    against the same model in fp32, each family on its default batch and a padded one: within 3% (bf16 has 8
    bits of mantissa; measured 0.7-1% under autocast, 1-2.5% with bf16 weights), so a gradient a bf16 path
    scales, truncates or drops is seen, not only a loss."""
    for padded in (False, True):
        batch = batch_for(family, padded=padded)
        reference = loss_and_parameter_grads(tiny_model(family).float(), batch)
        for weights, autocast in ((torch.float32, True), (torch.bfloat16, False)):
            model = tiny_model(family).to(weights)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                loss, _, grads = loss_and_parameter_grads(model, batch)
            assert abs(loss.float() - reference[0]) < 1e-3 * reference[0], (padded, weights)
            for (name, _), got, want in zip(model.named_parameters(), grads, reference[2]):
                if want.norm() < 1e-6:  # a gradient that is zero in exact arithmetic (BERT's key bias)
                    continue
                error = ((got.double() - want.double()).norm() / want.double().norm()).item()
                assert error < 0.03, (padded, weights, name, error)


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


@pytest.mark.parametrize("family", ["gpt2", "bert", "llama"])
def test_forward_and_backward_never_wait_for_the_device(family):
    """No value read back, no data-dependent shape: what would make the host wait for a GPU."""
    for padded in (False, True):
        model = tiny_model(family)
        batch = batch_for(family, padded=padded)
        with HostSyncs() as syncs:
            loss, _ = model(batch)
            loss.backward()
        assert syncs.found == [], (family, padded, syncs.found)


def test_the_sync_probe_sees_every_kind_of_host_sync():
    """HostSyncs, which the step tests rely on, sees each way a host can wait for a GPU, and nothing else."""
    from deepspeed.accelerator import get_accelerator

    t, host = torch.arange(6.0), torch.ones(3)
    waits = {
        "item": lambda: t.sum().item(), "bool": lambda: bool(t.sum() > 0), "float": lambda: float(t.sum()),
        "tolist": lambda: t.tolist(), "cpu": lambda: t.cpu(), "numpy": lambda: t.numpy(),
        "to cpu": lambda: t.to("cpu"), "nonzero": lambda: t.nonzero(), "mask": lambda: t[t > 2],
        "equal": lambda: torch.equal(t, t * 1), "allclose": lambda: torch.allclose(t, t * 1),  # Liger's backward
        "accelerator synchronize": lambda: get_accelerator().synchronize(), "cpu synchronize": lambda: torch.cpu.synchronize(),
    }
    for name, wait in waits.items():
        with HostSyncs() as syncs:
            wait()
        assert len(syncs.found) >= 1, name
    with HostSyncs(host_tensors=[host]) as syncs:  # the batch before its copy, optimizer step counts: free
        host.tolist(), host.sum(), t * 2, t.to(torch.float64), host.to("cpu")
    assert syncs.found == []
    assert torch.Tensor.tolist is torch._C.TensorBase.tolist  # the patches are undone


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


def assert_same_loss_and_gradients(got, want, rtol=1e-10, atol=1e-12) -> None:
    """Loss and every parameter's gradient (recompute and compile cannot change the forward's loss, but can
    get the backward wrong)."""
    torch.testing.assert_close(got[0], want[0], rtol=rtol, atol=atol)
    assert len(got[2]) == len(want[2])
    for a, b in zip(got[2], want[2]):
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol)


def compiled_tiny_model(backend, family="gpt2", **fields):
    from pretrain.model import build as model_build

    model = tiny_model(family, **fields)
    model_build.compile_each_block(model.hf, backend)
    return model


@pytest.mark.parametrize("family,fields,padded", [
    ("gpt2", {}, False), ("gpt2", {"block": "own"}, False), ("bert", {}, True), ("llama", {}, True),
    ("llama", {"tie_embeddings": False}, True), ("modernbert", {}, False), ("modernbert", {}, True)])
def test_compiled_blocks_give_the_eager_gradients(family, fields, padded):
    """The compiled graph (aot_eager: dynamo and AOTAutograd's forward and backward graphs without a C++
    compiler) gives the eager loss and gradients; padded BERT batches, packed and masked Llama batches, and
    ModernBERT's packed documents and padded batches too."""
    batch = batch_for(family, padded=padded)
    eager = loss_and_parameter_grads(tiny_model(family, **fields), batch)
    compiled = loss_and_parameter_grads(compiled_tiny_model("aot_eager", family, **fields), batch)
    assert_same_loss_and_gradients(compiled, eager)


@pytest.mark.slow
def test_inductor_compiled_blocks_give_the_eager_gradients_in_fp32():
    """The real backend a GPU uses, inductor, here generating C++ for the CPU: fp32 loss and gradients of the
    compiled GPT-2 blocks within 1e-5 (relative norm) of eager: the same graph, other kernels."""
    batch = batch_for("gpt2")
    torch.manual_seed(0)
    eager_model = tiny_model("gpt2").float()
    from pretrain.model import build as model_build

    compiled_model = tiny_model("gpt2").float()
    model_build.compile_each_block(compiled_model.hf)
    eager, compiled = (loss_and_parameter_grads(m, batch) for m in (eager_model, compiled_model))
    assert relative_error(compiled[0], eager[0]) < 1e-5
    for got, want in zip(compiled[2], eager[2]):
        assert relative_error(got, want) < 1e-5


@pytest.mark.parametrize("evaluated_first", [False, True])
def test_compiled_blocks_fall_back_when_compiling_fails(caplog, evaluated_first):
    """A backend that fails, and one whose backward fails to compile: the failure is met in the forward call,
    where the block falls back to eager (said once for all blocks), never in backward. Also where the first
    call was step 0's evaluation under no_grad, whose graph compiled (it has no backward): the training
    graph compiles at the first step, and its failing backward still falls back there."""
    from torch._dynamo.backends.common import aot_autograd

    batch = batch_for("gpt2")
    eager = loss_and_parameter_grads(tiny_model("gpt2"), batch)
    failing_backward = aot_autograd(fw_compiler=lambda graph, inputs: graph, bw_compiler=_failing_backend)
    for backend in (_failing_backend, failing_backward):
        torch._dynamo.reset()
        model = compiled_tiny_model(backend)
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            if evaluated_first and backend is failing_backward:
                with torch.no_grad():
                    model(batch)
                assert "torch.compile of" not in caplog.text  # the evaluation graph compiled and ran
            fallback = loss_and_parameter_grads(model, batch)
        assert_same_loss_and_gradients(fallback, eager)
        warnings = [r.message for r in caplog.records if "torch.compile of" in r.message]
        assert len(warnings) == 1 and "running it eager" in warnings[0], backend


def test_a_torch_that_compiles_the_backward_lazily_is_named(caplog, monkeypatch):
    """Where torch lacks the switch that compiles the backward with the forward, the run says so (once)."""
    import types

    from pretrain.model import compiled

    compiled._say_the_backward_compiles_lazily.cache_clear()
    monkeypatch.setattr(torch._functorch, "config", types.SimpleNamespace())
    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            with compiled._backward_compiled_with_forward():
                pass
    assert caplog.text.count("backward that fails to compile would stop the run") == 1
    compiled._say_the_backward_compiles_lazily.cache_clear()


def _failing_backend(graph, example_inputs):
    raise RuntimeError("no working compiler here")


@pytest.mark.parametrize("recompute", ["selective", "full"])
@pytest.mark.parametrize("family", ["gpt2", "llama", "modernbert"])
def test_recompute_gives_the_same_gradients(recompute, family):
    """Selective (the first block) and full recompute (every block: 2, or ModernBERT's 3): the same loss and
    gradients as storing everything (Llama: packed documents, masked; ModernBERT: a padded batch)."""
    from pretrain.model.build import set_recompute
    from pretrain.model.hf import transformer_blocks

    model = tiny_model(family)
    blocks = transformer_blocks(model.hf)
    layers = 1 if recompute == "selective" else len(blocks)
    set_recompute(model.hf, layers)
    assert [b.gradient_checkpointing for b in blocks] == [index < layers for index in range(len(blocks))]
    batch = batch_for(family, padded=True)
    assert_same_loss_and_gradients(loss_and_parameter_grads(model, batch),
                                   loss_and_parameter_grads(tiny_model(family), batch))


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


def test_a_liger_kernel_that_fails_to_import_falls_back_to_the_chunked_head(tmp_path, monkeypatch, caplog):
    """model.lm_head=liger where liger-kernel is installed but its Triton kernels fail to import (an error other
    than ImportError, as a triton that does not suit them raises, or an ImportError from inside it): a warning and
    the chunked head, not a crash; only liger-kernel itself missing is silent."""
    import importlib.util
    import sys

    from pretrain.model.head import resolve_head

    module = tmp_path / "liger_kernel" / "transformers"
    module.mkdir(parents=True)
    for package in (module.parent, module):
        (package / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [name for name in sys.modules if name.startswith("liger_kernel")]:
        monkeypatch.delitem(sys.modules, name)
    failures = {"raise RuntimeError('triton 9.9 does not suit these kernels')":
                "cannot be imported (RuntimeError: triton 9.9 does not suit these kernels)",
                "from triton.language import no_such_op": "cannot be imported (ModuleNotFoundError: No module named "
                                                         "'triton')" if importlib.util.find_spec("triton") is None
                else "cannot be imported (ImportError: cannot import name 'no_such_op'"}
    try:
        for code, message in failures.items():
            (module / "fused_linear_cross_entropy.py").write_text(code)
            sys.modules.pop("liger_kernel.transformers.fused_linear_cross_entropy", None)
            caplog.clear()
            with caplog.at_level(logging.WARNING):
                kind, liger, _ = resolve_head("liger", on_gpu=True)
            assert (kind, liger) == ("chunked", None)
            assert message in caplog.text, caplog.text
    finally:  # the stand-in is not left for a later test (monkeypatch restores only what was there)
        for name in [name for name in sys.modules if name.startswith("liger_kernel")]:
            del sys.modules[name]
