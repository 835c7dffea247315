#!/usr/bin/env python
"""Training speed on one device: each case with this project's default (the parallel plan, compiled
blocks, the fused head, a step that never waits for the GPU) beside a baseline, every run in its own
process with a deadline, results appended to a JSONL as they finish, a table at the end.

    python benchmarks/mfu_check.py --out /tmp/mfu                  # GPU: the five cases below
    python benchmarks/mfu_check.py --kernels                       # GPU: LM heads and GPT-2 blocks alone
    python benchmarks/mfu_check.py --cases gpt2-small --baseline zero3 --steps 4

Baselines: ``previous`` runs the code of the round before (``--baseline-root``, a checkout of that commit,
made by mfu_check.sh) with its own sweep harness and its default for the case (ZeRO-3 with whole-block
gathering, eager blocks, the chunked head, the micro batch and recompute it used); ``zero3`` runs this
code with train.ds_config=zero3 and model.compile=false at the baseline's micro batch and recompute.

Per run: tokens/s, MFU (model FLOPs: 6 N T + attention, no recompute) and HFU (recompute counted), the
plan, host time per step (until the step is queued) against GPU time per step (kernel time from the
profiler), peak memory against the planner, host syncs in a step, and the speed-up over the baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# case -> (seq len, samples per step, the baseline's micro batch and activation checkpointing)
CASES = {
    "gpt2-medium": (1024, 16, 16, False),
    "gpt2-xl": (1024, 16, 16, True),
    "gpt2-small": (1024, 16, 16, False),
    "bert-large": (512, 32, 32, False),
    "bert-base": (512, 32, 32, False),
    "tiny-gpt2": (64, 16, 16, False),  # CPU smoke runs
}
SWEEP_VOCAB = 50257  # the GPU cases', as the previous round's harness had it (GPT-2's vocabulary, BERT's cases too)


def synthetic_batches(family: str, micro: int, seq: int, vocab: int, count: int) -> list[dict]:
    """Random token batches shaped as the loaders make them (full-length BERT samples: no padding mask)."""
    import torch

    from pretrain.data.masking import max_predictions

    generator = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(count):
        if family == "gpt2":
            batches.append({"tokens": torch.randint(0, vocab, (micro, seq + 1), generator=generator),
                            "num_labels": micro * seq})
            continue
        width = max_predictions(seq, 0.15)
        positions = torch.stack([torch.randperm(seq - 2, generator=generator)[:width] + 1 for _ in range(micro)])
        ids = torch.randint(5, vocab, (micro, seq), generator=generator)
        labels = torch.full_like(ids, -100).scatter(1, positions, ids.gather(1, positions))
        batches.append({"input_ids": ids, "token_type_ids": torch.zeros_like(ids), "labels": labels,
                        "masked_positions": positions, "num_labels": micro * width})
    return batches


def run_case(preset: str, variant: str, steps: int, warmup: int) -> dict:
    """Child process: build this code's engine for the case and time ``steps`` optimizer steps."""
    import torch

    from pretrain.config import load_config
    from pretrain.distributed import init_process_group
    from pretrain.engine import clips_in_optimizer, create_engine, deepspeed_config
    from pretrain.metrics import peak_tflops, transformer_flops
    from pretrain.model import build_model, parameter_groups
    from pretrain.parallel import choose_plan, device_memory_bytes, request_from_config
    from pretrain.planner import parameter_sizes
    from pretrain.presets import get_preset
    from pretrain.trainer import optimizer_step

    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=os.environ.get("MASTER_PORT", "29517"))
    init_process_group()
    on_gpu = torch.cuda.is_available()
    device = torch.device("cuda" if on_gpu else "cpu")
    shape = get_preset(preset)
    seq, samples, base_micro, base_ckpt = CASES[preset]
    vocab = 1024 if preset.startswith("tiny") else SWEEP_VOCAB
    overrides = [f"model.preset={preset}", f"data.seq_len={seq}", f"train.global_batch={samples}",
                 f"train.precision={'bf16' if on_gpu else 'fp32'}", "optim.warmup_steps=1", "train.steps=100"]
    if variant == "zero3":
        overrides += ["train.ds_config=zero3", "model.compile=false", f"train.micro_batch={base_micro}",
                      f"model.activation_checkpointing={'full' if base_ckpt else 'none'}"]
    config = load_config(None, overrides)
    plan = choose_plan(request_from_config(config, vocab, 1, 1, device_memory_bytes(None, device, 1)))
    _, block, _ = parameter_sizes(preset, vocab)
    ds = deepspeed_config(config.train, config.optim, plan, block)
    if on_gpu:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.cuda.reset_peak_memory_stats()
    compile_blocks = on_gpu and config.model.compile is not False
    model = build_model(config.model, vocab, {"eod": 0, "pad": 0}, sentence_order=False, seed=1, ds_config=ds,
                        recompute_layers=plan.recompute_layers, compile_blocks=compile_blocks, on_gpu=on_gpu)
    engine, _ = create_engine(model, parameter_groups(model, 0.1), config.optim, 100, ds, on_gpu,
                              clips_in_optimizer(plan, config.train.precision))
    micro = synthetic_batches(shape.family, plan.micro_batch, seq, vocab, plan.accumulation)
    if on_gpu:
        micro = [{k: v.pin_memory() if hasattr(v, "pin_memory") else v for k, v in b.items()} for b in micro]

    def step():
        return optimizer_step(engine, [dict(b) for b in micro], device, 1)

    def sync():
        if on_gpu:
            torch.cuda.synchronize()

    for _ in range(warmup):
        step()
    sync()
    host, started = [], time.perf_counter()
    for _ in range(steps):
        queued = time.perf_counter()
        loss, _ = step()
        host.append(time.perf_counter() - queued)
    sync()
    step_s = (time.perf_counter() - started) / steps
    record = {"preset": preset, "variant": variant, "plan": plan.summary(), "micro_batch": plan.micro_batch,
              "accumulation": plan.accumulation, "seq_len": seq, "recompute_layers": plan.recompute_layers,
              "step_s": step_s, "host_ms": 1000 * statistics.median(host), "loss": float(loss),
              "planned_gib": plan.planned_bytes / 2**30}
    record["gpu_ms"] = gpu_milliseconds(step) if on_gpu else None
    record["syncs"] = sync_errors(step) if on_gpu else None
    tokens = samples * seq
    head_rows = None if shape.family == "gpt2" else samples * micro[0]["masked_positions"].shape[1]
    peak = peak_tflops(None)
    model_flops = transformer_flops(shape.layers, shape.hidden, seq, model.hf.config.vocab_size, tokens, 0, head_rows)
    hardware_flops = transformer_flops(shape.layers, shape.hidden, seq, model.hf.config.vocab_size, tokens,
                                       plan.recompute_layers, head_rows)
    record.update(tokens_per_s=tokens / step_s, mfu=model_flops / step_s / 1e12 / peak,
                  hfu=hardware_flops / step_s / 1e12 / peak, peak_tflops=peak,
                  peak_gib=torch.cuda.max_memory_allocated() / 2**30 if on_gpu else None)
    return record


def gpu_milliseconds(step, steps: int = 2) -> float:
    """Kernel time per step (the profiler's device self time), against the host's time to queue it."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
    total_us = sum(event.self_device_time_total for event in prof.key_averages())
    return total_us / 1000 / steps


def sync_errors(step) -> list[str]:
    """A steady-state step under torch.cuda.set_sync_debug_mode("error"): what made the host wait."""
    import torch

    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        step()
        return []
    except RuntimeError as exc:
        return [str(exc).splitlines()[0][:200]]
    finally:
        torch.cuda.set_sync_debug_mode(0)


def previous_code(preset: str, args) -> dict:
    """The baseline: the previous round's code and harness (benchmarks/gpu_sweep.py there), its default.
    Its MFU counted recompute; both are recomputed here from its tokens/s with this round's formula."""
    from pretrain.metrics import peak_tflops, transformer_flops
    from pretrain.model.hf import padded_vocab_size
    from pretrain.presets import get_preset

    seq, samples, micro, checkpointing = CASES[preset]
    root = Path(args.baseline_root).resolve()
    command = [sys.executable, str(root / "benchmarks" / "gpu_sweep.py"), "--case", preset, "fused", str(micro), str(seq),
               str(int(checkpointing)), "--steps", str(args.steps), "--warmup", str(args.warmup), "--port", "29531",
               "--peak", str(peak_tflops(None))]
    proc = subprocess.run(command, cwd=root, env={**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(root), os.environ.get("PYTHONPATH", "")])}, capture_output=True, text=True, timeout=args.deadline)
    found = [json.loads(line[7:]) for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if not found:
        raise RuntimeError(f"exit {proc.returncode}: {(proc.stderr.strip().splitlines() or [''])[-1][:200]}")
    old = found[0]
    if "error" in old:
        raise RuntimeError(old["error"])
    shape = get_preset(preset)
    tokens, vocab = micro * seq, padded_vocab_size(SWEEP_VOCAB, 64)
    head = None if shape.family == "gpt2" else round(tokens * 0.15)
    step_s = tokens / old["tokens_per_s"]
    flops = [transformer_flops(shape.layers, shape.hidden, seq, vocab, tokens, recomputed, head)
             for recomputed in (0, shape.layers if checkpointing else 0)]
    return {"preset": preset, "variant": "previous", "plan": f"ZeRO-3, micro batch {micro}, recompute "
            f"{'full' if checkpointing else 'none'} (the previous default)", "micro_batch": micro, "accumulation": 1,
            "seq_len": seq, "recompute_layers": shape.layers if checkpointing else 0, "step_s": step_s,
            "tokens_per_s": old["tokens_per_s"], "mfu": flops[0] / step_s / 1e12 / peak_tflops(None),
            "hfu": flops[1] / step_s / 1e12 / peak_tflops(None), "peak_gib": old.get("peak_gib"),
            "planned_gib": old.get("planned_gib"), "host_ms": None, "gpu_ms": None, "syncs": None}


def child(preset: str, variant: str, args) -> dict:
    """Run one case in its own process (a fresh GPU, a deadline); the record or the reason it failed."""
    if variant == "previous":
        try:
            return previous_code(preset, args)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            return {"preset": preset, "variant": variant, "error": str(exc)[:200]}
    command = [sys.executable, __file__, "--child", preset, variant, "--steps", str(args.steps), "--warmup",
               str(args.warmup)]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=args.deadline)
    except subprocess.TimeoutExpired:
        return {"preset": preset, "variant": variant, "error": f"over the {args.deadline} s deadline"}
    found = [json.loads(line[7:]) for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if found:
        return found[0]
    tail = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    return {"preset": preset, "variant": variant, "error": f"exit {proc.returncode}: {(tail or [''])[-1][:200]}"}


def table(records: list[dict], device: str) -> list[str]:
    lines = [f"{device}: tokens/s, MFU (model FLOPs) and HFU (recompute counted) per device; median of the timed steps",
             f"{'case':<12} {'run':<9} {'micro x acc x seq':>18} {'recompute':>10} {'tok/s':>9} {'MFU':>6} {'HFU':>6} "
             f"{'host ms':>8} {'GPU ms':>8} {'step ms':>8} {'peak GiB':>9} {'planned':>8} {'speed-up':>8} syncs"]
    baselines = {r["preset"]: r for r in records if r["variant"] != "default" and "error" not in r}
    for r in records:
        head = f"{r['preset']:<12} {r['variant']:<9}"
        if "error" in r:
            lines.append(f"{head} {r['error']}")
            continue

        def number(key, record=r):
            return "-" if record.get(key) is None else f"{record[key]:.1f}"

        base = baselines.get(r["preset"])
        speed = f"{r['tokens_per_s'] / base['tokens_per_s']:.2f}x" if base and r["variant"] == "default" else "1.00x"
        syncs = "-" if r.get("syncs") is None else ("none" if not r["syncs"] else r["syncs"][0][:60])
        shape = f"{r['micro_batch']} x {r['accumulation']} x {r['seq_len']}"
        recompute = r.get("recompute_layers")
        lines.append(f"{head} {shape:>18} {'-' if recompute is None else recompute:>10} {r['tokens_per_s']:>9,.0f} "
                     f"{100 * r['mfu']:>5.1f}% {100 * r['hfu']:>5.1f}% {number('host_ms'):>8} {number('gpu_ms'):>8} "
                     f"{1000 * r['step_s']:>8.1f} {number('peak_gib'):>9} {number('planned_gib'):>8} {speed:>8} {syncs}")
    lines += [f"  {r['preset']} {r['variant']}: {r['plan']}" for r in records if "plan" in r]
    return lines


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        parser = argparse.ArgumentParser()
        parser.add_argument("--child", nargs=2)
        parser.add_argument("--steps", type=int, default=6)
        parser.add_argument("--warmup", type=int, default=3)
        args = parser.parse_args()
        record = run_case(args.child[0], args.child[1], args.steps, args.warmup)
        print("RESULT " + json.dumps(record), flush=True)
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=["gpt2-medium", "gpt2-xl", "gpt2-small", "bert-large", "bert-base"])
    parser.add_argument("--baseline", choices=["previous", "zero3", "none"], default="previous")
    parser.add_argument("--baseline-root", default=str(ROOT / ".device" / "baseline"))
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--deadline", type=int, default=120, help="seconds per run")
    parser.add_argument("--out", default="/tmp/mfu_check", help="results.jsonl and table.txt go here")
    parser.add_argument("--kernels", action="store_true", help="time the LM heads and GPT-2 blocks alone")
    args = parser.parse_args()
    import torch

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    if args.kernels:
        from benchmarks.kernel_times import time_kernels

        for line in time_kernels(out / "kernels.jsonl"):
            print(line, flush=True)
        return
    if args.baseline == "previous" and not Path(args.baseline_root).exists():
        print(f"no previous code at {args.baseline_root}: using the zero3 baseline", flush=True)
        args.baseline = "zero3"
    records = []
    for preset in args.cases:
        for variant in ("default", args.baseline) if args.baseline != "none" else ("default",):
            record = child(preset, variant, args)
            records.append(record)
            with open(out / "results.jsonl", "a") as handle:
                handle.write(json.dumps(record) + "\n")
            print(json.dumps(record), flush=True)
    lines = table(records, device)
    (out / "table.txt").write_text("\n".join(lines) + "\n")
    print("\n" + "\n".join(lines), flush=True)


if __name__ == "__main__":
    main()
