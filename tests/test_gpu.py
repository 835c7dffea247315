"""GPU checks of what a CPU cannot run: the CUDA kernels (flash attention, the compiled head and blocks with
Triton) against the plain paths, and a steady-state step under torch.cuda.set_sync_debug_mode("error").
Skipped without a GPU; benchmarks/mfu_check.sh runs them on one. Every path they take ran on CPU first
(tests/test_rehearsal.py, tests/test_kernels.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from tests.conftest import ROOT
from tests.distributed import metrics, preprocess, train_env

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.double() - want.double()).norm() / want.double().norm().clamp(min=1e-30))


@pytest.mark.parametrize("kind", ["chunked", "liger"])
def test_fused_head_equals_the_plain_one_in_bf16_and_holds_less(kind):
    from pretrain.model.head import CHUNK_ROWS, liger_cross_entropy, lm_cross_entropy, resolve_head

    if kind == "liger" and liger_cross_entropy() is None:
        pytest.skip("liger-kernel is not installed")
    rows, hidden, vocab = 16 * 1024, 1024, 50304
    generator = torch.Generator(device="cuda").manual_seed(0)
    h = (torch.randn(rows, hidden, device="cuda", generator=generator) * 0.5).bfloat16().requires_grad_()
    w = (torch.randn(vocab, hidden, device="cuda", generator=generator) * 0.02).bfloat16().requires_grad_()
    y = torch.randint(0, vocab, (rows,), device="cuda", generator=generator)
    y[::7] = -100
    results, peaks = {}, {}
    _, liger, kernel = resolve_head(kind, on_gpu=True)
    for name in ("plain", kind):
        h.grad = w.grad = None
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        if name == "plain":
            loss, _ = lm_cross_entropy(h, w, y)
        elif liger is not None:
            loss = liger(h, w, y, None)
        else:
            loss, _ = lm_cross_entropy(h, w, y, chunk_rows=CHUNK_ROWS, chunk_kernel=kernel)
        loss.backward()
        torch.cuda.synchronize()
        peaks[name] = (torch.cuda.max_memory_allocated() - base) / 2**30
        results[name] = (loss.detach().float(), h.grad.clone(), w.grad.clone())
    (l1, gh1, gw1), (l2, gh2, gw2) = results["plain"], results[kind]
    assert abs(l1 - l2) / l1 < 1e-2
    assert relative_error(gh2, gh1) < 2e-2 and relative_error(gw2, gw1) < 2e-2
    assert peaks[kind] < peaks["plain"] / 2, peaks


def test_own_block_and_compiled_blocks_match_on_the_gpu():
    from pretrain.config import ModelConfig
    from pretrain.model import build_model

    specials = {"eod": 1, "pad": 0}
    ids = torch.randint(0, 50000, (4, 257), device="cuda")
    results = {}
    for name, fields, compiled in (("hf", {}, False), ("own", {"block": "own"}, False), ("hf compiled", {}, True),
                                   ("own compiled", {"block": "own"}, True)):
        torch.manual_seed(0)
        model = build_model(ModelConfig(preset="gpt2-small", **fields), 50257, specials, sentence_order=False, seed=1,
                            ds_config=None, compile_blocks=compiled, on_gpu=True).cuda()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss, _ = model({"tokens": ids})
        loss.backward()
        results[name] = (loss.detach().float(), model.hf.transformer.h[0].attn.c_attn.weight.grad.float())
    reference = results["hf"]
    for name, (loss, grad) in results.items():
        assert abs(loss - reference[0]) / reference[0] < 1e-2, name
        assert relative_error(grad, reference[1]) < 5e-2, name


def test_bert_without_padding_runs_on_the_flash_kernel_and_padded_batches_on_another():
    """A batch without padding reaches SDPA with no mask, which the flash kernel runs (with only flash allowed,
    anything else raises); a padded batch carries its mask, which flash cannot take, so it runs on the
    memory-efficient kernel, to the same loss as the math kernel."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from pretrain.config import ModelConfig
    from pretrain.model import build_model

    model = build_model(ModelConfig(preset="bert-base"), 30522, {"pad": 0, "cls": 1, "sep": 2, "mask": 3},
                        sentence_order=False, seed=1,
                        ds_config=None, on_gpu=True).cuda()
    batch = {"input_ids": torch.randint(5, 30000, (4, 512), device="cuda"),
             "token_type_ids": torch.zeros(4, 512, dtype=torch.long, device="cuda"),
             "labels": torch.randint(5, 30000, (4, 512), device="cuda"),
             "masked_positions": torch.randint(0, 512, (4, 77), device="cuda")}
    with torch.autocast("cuda", dtype=torch.bfloat16), sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
        loss, _ = model(batch)
    loss.backward()
    assert torch.isfinite(loss)
    padded = {**batch, "attention_mask": torch.ones(4, 512, dtype=torch.long, device="cuda")}
    padded["attention_mask"][1, 400:] = 0
    with torch.autocast("cuda", dtype=torch.bfloat16), pytest.raises(RuntimeError):
        with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
            model(padded)
    losses = []
    for backend in (SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH):
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16), sdpa_kernel([backend]):
            losses.append(float(model(padded)[0]))
    assert abs(losses[0] - losses[1]) / losses[1] < 1e-2


def test_chunked_head_under_autocast_with_fp32_weights():
    """The default GPU path without ZeRO: fp32 weights and fp32 hidden states (a LayerNorm's output) under bf16
    autocast; last round's head crashed here. Gradients against the plain head in the same precision."""
    from pretrain.model.head import CHUNK_ROWS, lm_cross_entropy, resolve_head

    rows, hidden, vocab = 16 * 1024, 1024, 50304
    generator = torch.Generator(device="cuda").manual_seed(0)
    h = (torch.randn(rows, hidden, device="cuda", generator=generator) * 0.5).requires_grad_()
    w = (torch.randn(vocab, hidden, device="cuda", generator=generator) * 0.02).requires_grad_()
    y = torch.randint(0, vocab, (rows,), device="cuda", generator=generator)
    _, _, kernel = resolve_head("chunked", on_gpu=True)
    results = []
    for chunk in (None, CHUNK_ROWS):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss, _ = lm_cross_entropy(h, w, y, chunk_rows=chunk, chunk_kernel=kernel if chunk else None)
        results.append([loss.detach(), *torch.autograd.grad(loss, [h, w])])
    for got, want in zip(results[1], results[0]):
        assert got.dtype == want.dtype and relative_error(got, want) < 1e-2


@pytest.fixture(scope="module")
def gpu_data(tmp_path_factory, small_corpus, tokenizer_dir):
    folder = tmp_path_factory.mktemp("gpudata")
    preprocess(small_corpus, tokenizer_dir, folder / "d", "--append-eod")
    preprocess(small_corpus, tokenizer_dir, folder / "d", "--split-sentences")
    return {"clm": folder / "d_text_document", "mlm": folder / "d_text_sentence", "tokenizer": tokenizer_dir}


@pytest.mark.parametrize("config,objective", [("tiny_clm", "clm"), ("tiny_mlm", "mlm")])
def test_a_steady_state_step_passes_sync_debug_mode_error(tmp_path, gpu_data, config, objective):
    """The default GPU configuration (bf16 autocast, no ZeRO, compiled blocks, the chunked head): a steady-state
    step under set_sync_debug_mode("error") with every synchronize patched to be counted (tests/probe.py)."""
    from tests.probe import result_path

    run_dir = tmp_path / "run"
    proc = subprocess.run([sys.executable, "tests/probe.py", "syncs", config, f"data.tokenizer={gpu_data['tokenizer']}",
                           f"data.prefixes=[{gpu_data[objective]}]", f"run.dir={run_dir}", "train.precision=bf16",
                           "data.split=90,10,0", "train.eval_samples=8"], cwd=ROOT,
                          env={**train_env(), "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])},
                          capture_output=True, text=True, timeout=600)
    found = result_path(run_dir, "syncs", 0)
    assert found.exists(), proc.stdout[-2000:] + proc.stderr[-3000:]
    assert json.loads(found.read_text()) == []


@pytest.mark.parametrize("config,objective", [("tiny_clm", "clm"), ("tiny_mlm", "mlm")])
def test_training_on_the_gpu_learns(tmp_path, gpu_data, config, objective):
    from tests.distributed import launch

    launch(1, config, tmp_path / "run", f"data.tokenizer={gpu_data['tokenizer']}", f"data.prefixes=[{gpu_data[objective]}]",
           "train.precision=bf16", "train.steps=30", "optim.warmup_steps=3", "train.log_interval=1", "data.split=95,5,0",
           "train.eval_samples=16")
    losses, evals = metrics(tmp_path / "run")
    assert losses[30] < losses[1] - 0.5 and evals[-1]["eval_loss"] < evals[0]["eval_loss"]
