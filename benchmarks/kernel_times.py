"""The two kernels behind the training step, timed alone (``mfu_check.py --kernels``), part by part:

  * one GPT-2 block, forward and backward under bf16 autocast: transformers' GPT2Block compiled, then
    this project's compact block compiled (adopted as the default only if more than 5% faster), each
    a part of its own, first: their cold compiles are the slow part, and a session cut short should
    still have the comparison;
  * the LM head + cross-entropy, forward and backward, in bf16: plain (logits, then cross-entropy in
    fp32), this project's chunked head (compiled softmax pass), Liger-Kernel's (where installed).

Median of CUDA-event timings after warm-up (perf_counter on a CPU, where ``--tiny`` shapes rehearse the
same code); each result is checked against the plain path first. Every record is appended to the JSONL
and printed the moment it is measured, so a session cut short keeps what it measured."""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

FULL = {"heads": [(16 * 1024, 768, 50304), (16 * 1024, 1024, 50304)], "block": ("gpt2-medium", 16, 1024)}
TINY = {"heads": [(256, 64, 1024)], "block": ("tiny-gpt2", 4, 64)}


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def median_ms(run: Callable[[], None], repeats: int = 20, warmup: int = 5) -> float:
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        if device().type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            run()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            began = time.perf_counter()
            run()
            times.append(1000 * (time.perf_counter() - began))
    return statistics.median(times)


def head_times(rows: int, hidden: int, vocab: int) -> list[dict]:
    from pretrain.model.head import CHUNK_ROWS, liger_cross_entropy, lm_cross_entropy, resolve_head

    on_gpu = device().type == "cuda"
    generator = torch.Generator(device=device()).manual_seed(0)
    h = (torch.randn(rows, hidden, device=device(), generator=generator) * 0.5).bfloat16().requires_grad_()
    w = (torch.randn(vocab, hidden, device=device(), generator=generator) * 0.02).bfloat16().requires_grad_()
    y = torch.randint(0, vocab, (rows,), device=device(), generator=generator)
    kernels = {"plain": lambda: lm_cross_entropy(h, w, y)[0]}
    _, _, compiled = resolve_head("chunked", on_gpu=on_gpu)
    kernels["chunked"] = lambda: lm_cross_entropy(h, w, y, chunk_rows=min(CHUNK_ROWS, rows // 2), chunk_kernel=compiled)[0]
    liger = liger_cross_entropy() if on_gpu else None  # None where it cannot be imported (its log says why)
    if liger is not None:
        kernels["liger"] = lambda: liger(h, w, y, None)
    results, reference = [], None
    for name, loss_of in kernels.items():
        def run(loss_of=loss_of):
            h.grad = w.grad = None
            loss_of().backward()

        try:  # a kernel's first call compiles it (Liger's Triton JIT): a failure costs that head alone
            run()
        except Exception as exc:  # noqa: BLE001
            print(f"LM head {name}: not timed, {type(exc).__name__}: {str(exc)[:160]}", file=sys.stderr, flush=True)
            continue
        value = float(loss_of().detach())
        reference = reference if reference is not None else value
        if on_gpu:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() if on_gpu else 0
        milliseconds = median_ms(run)
        results.append({"kernel": f"LM head {name}", "shape": f"{rows} x {hidden} -> {vocab}", "ms": milliseconds,
                        "loss_error": abs(value - reference) / reference,
                        "extra_gib": (torch.cuda.max_memory_allocated() - base) / 2**30 if on_gpu else None})
    return results


def block_time(preset: str, batch: int, seq: int, block: str) -> list[dict]:
    """One GPT-2 block of this kind, compiled, forward and backward under bf16 autocast; the whole model's loss
    (the same seed for both kinds) to check they compute the same function."""
    from pretrain.config import ModelConfig
    from pretrain.model import build_model
    from pretrain.presets import get_preset

    on_gpu, hidden = device().type == "cuda", get_preset(preset).hidden
    ids = torch.randint(0, 1000, (batch, seq + 1), device=device(), generator=torch.Generator(device=device()).manual_seed(0))
    torch.manual_seed(0)
    backend = "inductor" if on_gpu else "aot_eager"  # on a CPU, the graphs without minutes of C++ generation
    model = build_model(ModelConfig(preset=preset, block=block, compile_backend=backend), 50257, {"eod": 0, "pad": 0},
                        sentence_order=False, seed=1, ds_config=None, compile_blocks=True, on_gpu=on_gpu).to(device())
    first = model.hf.transformer.h[0]
    x = torch.randn(batch, seq, hidden, device=device(), requires_grad=True)

    def run():
        with torch.autocast(device().type, dtype=torch.bfloat16):
            out = first(x)
        out.float().square().mean().backward()

    with torch.autocast(device().type, dtype=torch.bfloat16):
        loss = float(model({"tokens": ids})[0])
    return [{"kernel": f"GPT-2 block {block} (compiled)", "shape": f"{batch * seq} tokens x {hidden}",
             "ms": median_ms(run), "loss": loss}]


def parts(tiny: bool) -> Iterator[Callable[[], list[dict]]]:
    """The measurements in order, each a part whose records are kept the moment it ends: the two blocks first
    (transformers' before this project's, which is judged against it), as each compiles cold and the adoption
    of the compact block hangs on both; the heads after, which the GPU tests also check (not time)."""
    shapes = TINY if tiny else FULL
    for block in ("hf", "own"):
        yield lambda block=block: block_time(*shapes["block"], block)
    for rows, hidden, vocab in shapes["heads"]:
        yield lambda rows=rows, hidden=hidden, vocab=vocab: head_times(rows, hidden, vocab)


def judge_blocks(records: list[dict], seen: dict) -> None:
    """The compact block against transformers' (seen before it): same loss, adopted only if >5% faster."""
    for record in records:
        if record["kernel"].startswith("GPT-2 block"):
            reference = seen.setdefault("block", record)
            record["loss_error"] = abs(record["loss"] - reference["loss"]) / reference["loss"]
            if record is not reference:
                record["vs_hf"] = reference["ms"] / record["ms"]
                record["adopt"] = record["vs_hf"] > 1.05


def line(record: dict, plain: dict) -> str:
    if record["kernel"] == "LM head plain":
        plain[record["shape"]] = record["ms"]
    ratio = f"  {plain[record['shape']] / record['ms']:.2f}x plain" if record["kernel"].startswith("LM head") else ""
    extra = f"  +{record['extra_gib']:.2f} GiB" if record.get("extra_gib") is not None else ""
    verdict = (f"  {record['vs_hf']:.2f}x HF: {'adopt' if record['adopt'] else 'keep HF'}" if "vs_hf" in record else "")
    return (f"{record['kernel']:<32} {record['shape']:<26} {record['ms']:8.2f} ms{ratio}{extra}{verdict} "
            f"(loss rel. diff {record['loss_error']:.1e})")


def time_kernels(jsonl: Path, tiny: bool = False) -> Iterator[str]:
    """Lines to print, each as soon as its part is measured (its records already appended to ``jsonl``)."""
    name = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    yield f"{name}: forward + backward, median ms"
    plain: dict[str, float] = {}
    seen: dict[str, dict] = {}
    for part in parts(tiny):
        try:
            records = part()
            judge_blocks(records, seen)
        except Exception as exc:  # noqa: BLE001 - one part failing must not lose the others
            records = [{"kernel": "error", "error": f"{type(exc).__name__}: {str(exc)[:200]}"}]
        with open(jsonl, "a") as handle:
            for record in records:
                handle.write(json.dumps(record) + "\n")
        for record in records:
            yield record["error"] if "error" in record else line(record, plain)
