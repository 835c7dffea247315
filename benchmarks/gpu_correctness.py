#!/usr/bin/env python
"""The fused paths checked on the GPU against the plain ones (CPU tests cover the math; this covers
the CUDA kernels): FusedAdam, FusedLamb, the chunked LM head in bf16 and its memory, SDPA's flash and
memory-efficient kernels on GPT-2 and BERT, torch.compile, and a short real training run.
Prints one PASS/FAIL line per check; exits 1 if any failed."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS: list[tuple[str, bool, str]] = []


def check(name):
    def wrap(function):
        started = time.perf_counter()
        try:
            detail = function() or ""
            RESULTS.append((name, True, detail))
        except Exception as exc:  # noqa: BLE001 - report and go on
            RESULTS.append((name, False, f"{type(exc).__name__}: {exc}"))
            traceback.print_exc()
        print(f"{'PASS' if RESULTS[-1][1] else 'FAIL'} {name} ({time.perf_counter() - started:.1f} s) {RESULTS[-1][2]}",
              flush=True)
        return function
    return wrap


def params_pair(seed=0, shapes=((1024, 1024), (4096,), (50304, 64))):
    generator = torch.Generator(device="cuda").manual_seed(seed)
    first = [torch.nn.Parameter(torch.randn(s, device="cuda", generator=generator)) for s in shapes]
    second = [torch.nn.Parameter(p.detach().clone()) for p in first]
    return first, second


def step_both(a, b, opt_a, opt_b, steps=3):
    for i in range(steps):
        generator = torch.Generator(device="cuda").manual_seed(100 + i)
        for pa, pb in zip(a, b):
            grad = torch.randn(pa.shape, device="cuda", generator=generator)
            pa.grad, pb.grad = grad.clone(), grad.clone()
        opt_a.step()
        opt_b.step()
    return max((pa - pb).abs().max().item() for pa, pb in zip(a, b))


@check("FusedAdam (DeepSpeed CUDA op) = torch AdamW")
def fused_adam():
    from deepspeed.ops.adam import FusedAdam

    a, b = params_pair()
    hyper = dict(lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    diff = step_both(a, b, FusedAdam(a, adam_w_mode=True, **hyper), torch.optim.AdamW(b, foreach=False, **hyper))
    assert diff < 1e-5, diff
    return f"max |diff| {diff:.2e}"


@check("FusedLamb (DeepSpeed CUDA op) = pretrain.optim.Lamb")
def fused_lamb():
    from deepspeed.ops.lamb import FusedLamb

    from pretrain.optim import Lamb

    a, b = params_pair()
    hyper = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01)
    diff = step_both(a, b, FusedLamb(a, **hyper), Lamb(b, **hyper))
    assert diff < 1e-4, diff
    return f"max |diff| {diff:.2e}"


@check("chunked LM head + cross-entropy in bf16 = plain, and its peak memory")
def chunked_head():
    from pretrain.loss import lm_cross_entropy

    rows, hidden, vocab = 16 * 1024, 1024, 50304
    generator = torch.Generator(device="cuda").manual_seed(0)
    h = (torch.randn(rows, hidden, device="cuda", generator=generator) * 0.5).bfloat16().requires_grad_()
    w = (torch.randn(vocab, hidden, device="cuda", generator=generator) * 0.02).bfloat16().requires_grad_()
    y = torch.randint(0, vocab, (rows,), device="cuda", generator=generator)
    peaks, results = {}, {}
    for name, chunk in (("plain", None), ("chunked", 4096)):
        h.grad = w.grad = None
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        loss, _ = lm_cross_entropy(h, w, y, chunk_rows=chunk)
        loss.backward()
        torch.cuda.synchronize()
        peaks[name] = (torch.cuda.max_memory_allocated() - base) / 2**30
        results[name] = (loss.item(), h.grad.float().clone(), w.grad.float().clone())
    (l1, gh1, gw1), (l2, gh2, gw2) = results["plain"], results["chunked"]
    assert abs(l1 - l2) < 1e-2 * abs(l1), (l1, l2)
    for a, b in ((gh1, gh2), (gw1, gw2)):
        assert (a - b).abs().max().item() <= 0.05 * a.abs().max().item()
    assert peaks["chunked"] < peaks["plain"] / 2, peaks
    return f"loss {l1:.4f} vs {l2:.4f}; extra peak memory {peaks['plain']:.2f} GiB plain, {peaks['chunked']:.2f} GiB chunked"


@check("SDPA flash kernel on GPT-2 (bf16, causal) and memory-efficient kernel on BERT (padding mask)")
def sdpa_kernels():
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from transformers import BertConfig, BertModel, GPT2Config, GPT2Model

    gpt = GPT2Model(GPT2Config(n_embd=1024, n_layer=2, n_head=16, attn_implementation="sdpa")).cuda().bfloat16()
    ids = torch.randint(0, 50000, (4, 1024), device="cuda")
    with torch.no_grad(), sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
        flash = gpt(input_ids=ids).last_hidden_state.float()
    eager = GPT2Model(gpt.config.__class__(**{**gpt.config.to_dict(), "attn_implementation": "eager"})).cuda()
    eager.load_state_dict(gpt.state_dict())
    with torch.no_grad():
        exact = eager.float()(input_ids=ids).last_hidden_state  # fp32 reference
        rounded = eager.bfloat16()(input_ids=ids).last_hidden_state.float()  # eager bf16: the error to expect
    flash_error, eager_error = (flash - exact).abs().mean().item(), (rounded - exact).abs().mean().item()
    assert flash_error <= 2 * eager_error + 1e-3, (flash_error, eager_error)
    bert = BertModel(BertConfig(hidden_size=1024, num_hidden_layers=2, num_attention_heads=16,
                                intermediate_size=4096, attn_implementation="sdpa")).cuda().bfloat16()
    mask = torch.ones(4, 512, dtype=torch.long, device="cuda")
    mask[:, 400:] = 0
    with torch.no_grad(), sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION]):
        bert(input_ids=ids[:, :512] % bert.config.vocab_size, attention_mask=mask)
    return (f"flash and memory-efficient kernels ran (forcing them raises if they cannot); mean error vs fp32: "
            f"flash {flash_error:.4f}, eager bf16 {eager_error:.4f}")


@check("torch.compile of a GPT-2 block = eager")
def compiled():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_embd=256, n_layer=2, n_head=4)).cuda().eval()
    ids = torch.randint(0, 50000, (2, 128), device="cuda")
    with torch.no_grad():
        eager = model(input_ids=ids).logits
        fast = torch.compile(model)(input_ids=ids).logits
    assert (eager - fast).abs().max().item() < 1e-2
    return "ok"


@check("pretrain/train.py on the GPU: tiny GPT-2, bf16, ZeRO-3, 12 steps, loss falls")
def end_to_end():
    import json

    from benchmarks.gpu_sweep import synthetic_tokenizer
    from benchmarks.train_throughput import make_data

    work = Path(tempfile.mkdtemp(prefix="gpu-e2e-"))
    tokenizer = synthetic_tokenizer(work / "tok", 50257)
    data = make_data(work, tokenizer.vocab_size, tokenizer.specials.eod, 400_000)
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "MASTER_PORT": "29533"}
    proc = subprocess.run([sys.executable, "pretrain/train.py", "--config", "tiny_clm", f"data.tokenizer={work / 'tok'}",
                           f"data.prefixes=[{data}]", "train.precision=bf16", "train.steps=12", "optim.warmup_steps=2",
                           "train.log_interval=1", f"run.dir={work / 'run'}", "data.split=98,2,0", "train.eval_samples=16"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    losses = [json.loads(line)["loss"] for line in (work / "run" / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]
    assert losses[-1] < losses[0], losses
    chosen = [line for line in proc.stderr.splitlines() + proc.stdout.splitlines() if "optimizer" in line][:1]
    return f"loss {losses[0]:.3f} -> {losses[-1]:.3f}; {chosen[0].split('INFO')[-1].strip() if chosen else ''}"


if __name__ == "__main__":
    failed = [name for name, ok, _ in RESULTS if not ok]
    print(f"\n{len(RESULTS) - len(failed)} of {len(RESULTS)} GPU checks passed" + (f"; failed: {failed}" if failed else ""))
    sys.exit(1 if failed else 0)
