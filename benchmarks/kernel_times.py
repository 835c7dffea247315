"""The two kernels behind the training step, timed alone on a GPU (``mfu_check.py --kernels``):

  * the LM head + cross-entropy, forward and backward, in bf16: plain (logits, then cross-entropy in
    fp32), this project's chunked head (compiled softmax pass), Liger-Kernel's (where installed);
  * one GPT-2 block, forward and backward under bf16 autocast: transformers' GPT2Block compiled, and
    this project's compact block compiled (adopted as the default only if more than 5% faster).

Median of CUDA-event timings after warm-up; each result is checked against the plain path first."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import torch


def median_ms(run, repeats: int = 20, warmup: int = 5) -> float:
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def head_times(rows: int, hidden: int, vocab: int) -> list[dict]:
    from pretrain.model.head import CHUNK_ROWS, liger_cross_entropy, lm_cross_entropy, resolve_head

    generator = torch.Generator(device="cuda").manual_seed(0)
    h = (torch.randn(rows, hidden, device="cuda", generator=generator) * 0.5).bfloat16().requires_grad_()
    w = (torch.randn(vocab, hidden, device="cuda", generator=generator) * 0.02).bfloat16().requires_grad_()
    y = torch.randint(0, vocab, (rows,), device="cuda", generator=generator)
    kernels = {"plain": lambda: lm_cross_entropy(h, w, y)[0]}
    _, _, compiled = resolve_head("chunked", on_gpu=True)
    kernels["chunked"] = lambda: lm_cross_entropy(h, w, y, chunk_rows=CHUNK_ROWS, chunk_kernel=compiled)[0]
    liger = liger_cross_entropy()
    if liger is not None:
        kernels["liger"] = lambda: liger(h, w, y, None)
    results, reference = [], None
    for name, loss_of in kernels.items():
        def run(loss_of=loss_of):
            h.grad = w.grad = None
            loss_of().backward()

        run()
        torch.cuda.synchronize()
        value = float(loss_of())
        reference = reference if reference is not None else value
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        milliseconds = median_ms(run)
        results.append({"kernel": f"LM head {name}", "shape": f"{rows} x {hidden} -> {vocab}", "ms": milliseconds,
                        "loss_error": abs(value - reference) / reference,
                        "extra_gib": (torch.cuda.max_memory_allocated() - base) / 2**30})
    return results


def block_times(tokens: int, seq: int) -> list[dict]:
    from pretrain.config import ModelConfig
    from pretrain.model import build_model

    results, reference = [], None
    ids = torch.randint(0, 50000, (tokens // seq, seq + 1), device="cuda")
    for block in ("hf", "own"):
        torch.manual_seed(0)
        model = build_model(ModelConfig(preset="gpt2-medium", block=block), 50257, {"eod": 0, "pad": 0},
                            sentence_order=False, seed=1, ds_config=None, compile_blocks=True, on_gpu=True).cuda()
        first = model.hf.transformer.h[0]
        x = torch.randn(tokens // seq, seq, 1024, device="cuda", requires_grad=True)

        def run(first=first, x=x):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                out = first(x)
            out.float().square().mean().backward()

        with torch.autocast("cuda", dtype=torch.bfloat16):
            value = float(model({"tokens": ids})[0])
        reference = reference if reference is not None else value
        results.append({"kernel": f"GPT-2 block {block} (compiled)", "shape": f"{tokens} tokens x 1024",
                        "ms": median_ms(run), "loss_error": abs(value - reference) / reference})
    hf_ms, own_ms = results[0]["ms"], results[1]["ms"]
    results[1]["vs_hf"] = hf_ms / own_ms
    results[1]["adopt"] = hf_ms / own_ms > 1.05
    return results


def time_kernels(jsonl: Path) -> list[str]:
    records = head_times(16 * 1024, 768, 50304) + head_times(16 * 1024, 1024, 50304) + block_times(16 * 1024, 1024)
    with open(jsonl, "a") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")
    lines = [f"{torch.cuda.get_device_name()}: forward + backward, median ms"]
    plain = {}
    for r in records:
        if r["kernel"] == "LM head plain":
            plain[r["shape"]] = r["ms"]
        ratio = f"  {plain[r['shape']] / r['ms']:.2f}x plain" if r["kernel"].startswith("LM head") else ""
        extra = f"  +{r['extra_gib']:.2f} GiB" if "extra_gib" in r else ""
        verdict = f"  {r['vs_hf']:.2f}x HF: {'adopt' if r['adopt'] else 'keep HF'}" if "vs_hf" in r else ""
        lines.append(f"{r['kernel']:<32} {r['shape']:<26} {r['ms']:8.2f} ms{ratio}{extra}{verdict} "
                     f"(loss rel. diff {r['loss_error']:.1e})")
    return lines
