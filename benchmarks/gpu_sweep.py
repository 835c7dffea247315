#!/usr/bin/env python
"""MFU sweep on one device: each preset with the fused paths on, then off (the baseline), in one process.

    python benchmarks/gpu_sweep.py                                  # gpt2 small/medium/xl, bert base/large
    python benchmarks/gpu_sweep.py --presets tiny-gpt2 tiny-bert --seq-len 64 --micro-batch 4   # CPU smoke run

Each case builds the model under ZeRO-3 (world size 1) with DeepSpeed's engine and this project's
optimizer choice, trains on random tokens for --warmup + --steps steps and reports the median step:
tokens/s, TFLOP/s and MFU per device (Megatron's formula, counting recompute; peak from the device
name), and peak memory beside the planner's prediction (tools/plan.py). Fused = SDPA attention +
chunked LM head/cross-entropy + DeepSpeed FusedAdam; unfused = eager attention + full logits + torch's
per-tensor AdamW. A case that does not fit is reported as OOM and the sweep goes on.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# preset -> (micro batch, seq len, activation checkpointing): what one 80 GB GPU holds in both variants
CASES = {
    "gpt2-small": (16, 1024, False), "gpt2-medium": (16, 1024, False), "gpt2-large": (8, 1024, False),
    "gpt2-xl": (16, 1024, True), "bert-base": (32, 512, False), "bert-large": (32, 512, False),
}


def synthetic_tokenizer(folder: Path, vocab_size: int):
    """A byte-level BPE vocabulary of the right size (no text needed: the data is random ids)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    from pretrain.tokenization.loading import from_backend

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {token: i for i, token in enumerate(sorted(alphabet))}
    for i in range(len(vocab), vocab_size - 1):
        vocab[f"tok{i}"] = i
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = from_backend(backend, str(folder), {}, False, None)
    tokenizer.save(folder)
    return tokenizer


def batch_for(family: str, micro: int, seq: int, vocab: int, device: torch.device) -> dict:
    generator = torch.Generator(device="cpu").manual_seed(0)
    if family == "gpt2":
        return {"tokens": torch.randint(0, vocab, (micro, seq + 1), generator=generator).to(device)}
    ids = torch.randint(5, vocab, (micro, seq), generator=generator)
    labels = torch.where(torch.rand(micro, seq, generator=generator) < 0.15, ids, torch.full_like(ids, -100))
    return {"input_ids": ids.to(device), "labels": labels.to(device), "attention_mask": torch.ones_like(ids).to(device),
            "token_type_ids": torch.zeros_like(ids).to(device)}


def profile_steps(engine, batch, steps: int = 2) -> None:
    """Where a step's time goes: the top operators by self time, CPU and CUDA, as PROFILE lines."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            loss, _ = engine(batch)
            engine.backward(loss)
            engine.step()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
    for key in ("self_cpu_time_total",) + (("self_cuda_time_total",) if torch.cuda.is_available() else ()):
        for line in prof.key_averages().table(sort_by=key, row_limit=14).splitlines():
            print("PROFILE " + line, flush=True)


def measure(preset: str, fused: bool, micro: int, seq: int, checkpointing: bool, args, tokenizer) -> dict:
    from pretrain.config import load_config
    from pretrain.engine import create_engine, deepspeed_config
    from pretrain.metrics import transformer_flops
    from pretrain.model import build_model, parameter_groups
    from pretrain.planner import PlanInput, plan
    from pretrain.presets import get_preset

    shape = get_preset(preset)
    on_gpu = torch.cuda.is_available()
    device = torch.device("cuda" if on_gpu else "cpu")
    precision = args.precision if on_gpu else "fp32"
    config = load_config(None, [f"model.preset={preset}", f"data.seq_len={seq}", f"train.micro_batch={micro}",
                                f"train.global_batch={micro}", f"train.precision={precision}", "train.ds_config=zero3_bf16",
                                f"model.fused_loss={fused}", f"model.attention={'sdpa' if fused else 'eager'}",
                                f"optim.fused={fused}", f"model.zero3_whole_blocks={fused}",
                                f"model.activation_checkpointing={checkpointing}",
                                "optim.warmup_steps=1", "train.steps=100"])
    ds = deepspeed_config(config, 1, shape.hidden)
    record = {"preset": preset, "variant": "fused" if fused else "unfused", "micro_batch": micro, "seq_len": seq,
              "checkpointing": checkpointing}
    engine = model = None
    try:
        if on_gpu:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        model = build_model(config, tokenizer, ds)
        engine, _ = create_engine(model, parameter_groups(model, config.optim.weight_decay), config, ds, on_gpu)
        batch = batch_for(shape.family, micro, seq, tokenizer.vocab_size, device)
        times = []
        for _ in range(args.warmup + args.steps):
            if on_gpu:
                torch.cuda.synchronize()
            started = time.perf_counter()
            loss, _ = engine(batch)
            engine.backward(loss)
            engine.step()
            if on_gpu:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - started)
        step = statistics.median(times[args.warmup:])
        if getattr(args, "profile", False):
            profile_steps(engine, batch)
        tokens = micro * seq
        head = round(tokens * 0.15) if shape.family == "bert" else None
        flops = transformer_flops(shape.layers, shape.hidden, seq, model.hf.config.vocab_size, tokens, checkpointing, head)
        tflops = flops / step / 1e12
        predicted = plan(PlanInput(preset, vocab_size=tokenizer.vocab_size, seq_len=seq, micro_batch=micro, zero_stage=3,
                                   precision=precision, activation_checkpointing=checkpointing,
                                   attention="sdpa" if fused else "eager", fused_loss=fused, gpus_per_node=1)).total
        record.update(step_s=step, tokens_per_s=tokens / step, tflops=tflops, mfu=tflops / args.peak,
                      loss=float(loss), peak_gib=torch.cuda.max_memory_allocated() / 2**30 if on_gpu else None,
                      planned_gib=predicted / 2**30)
    except torch.cuda.OutOfMemoryError:
        record["error"] = "OOM"
    finally:
        del engine, model
        gc.collect()
        if on_gpu:
            torch.cuda.empty_cache()
    return record


def run_case(argv: list[str]) -> None:
    """Child process: one case, its record printed as a RESULT line (a fresh process per case keeps
    one case's memory from leaking into the next one's peak)."""
    from pretrain.distributed import init_process_group

    parser = argparse.ArgumentParser()
    parser.add_argument("preset")
    parser.add_argument("variant")
    parser.add_argument("micro", type=int)
    parser.add_argument("seq", type=int)
    parser.add_argument("checkpointing", type=int)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--peak", type=float)
    parser.add_argument("--port", default="29517")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args(argv)
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=args.port)
    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
    init_process_group()
    tokenizer = synthetic_tokenizer(Path(tempfile.mkdtemp(prefix="tok-")), 50257)
    record = measure(args.preset, args.variant == "fused", args.micro, args.seq, bool(args.checkpointing), args, tokenizer)
    print("RESULT " + json.dumps(record), flush=True)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--case":
        run_case(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["gpt2-medium", "gpt2-xl", "gpt2-small", "bert-base", "bert-large"])
    parser.add_argument("--micro-batch", type=int, help="override the per-preset default")
    parser.add_argument("--seq-len", type=int, help="override the per-preset default")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--peak", type=float, help="peak TFLOP/s per device (default: from the device name)")
    parser.add_argument("--variants", nargs="+", default=["fused", "unfused"])
    parser.add_argument("--profile", nargs="*", default=[], help="presets whose fused case also prints a profile")
    parser.add_argument("--json", help="write the records here too")
    args = parser.parse_args()
    from pretrain.metrics import peak_tflops

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    peak = peak_tflops(args.peak)
    precision = args.precision if torch.cuda.is_available() else "fp32"
    records = []
    for number, preset in enumerate(args.presets):
        micro, seq, checkpointing = CASES.get(preset, (4, 64, False))
        micro, seq = args.micro_batch or micro, args.seq_len or seq
        for variant in args.variants:
            command = [sys.executable, __file__, "--case", preset, variant, str(micro), str(seq), str(int(checkpointing)),
                       "--steps", str(args.steps), "--warmup", str(args.warmup), "--precision", precision,
                       "--peak", str(peak), "--port", str(29600 + 2 * number + (variant == "fused"))]
            if preset in args.profile and variant == "fused":
                command.append("--profile")
            proc = subprocess.run(command, capture_output=True, text=True)
            found = [line[len("RESULT "):] for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
            record = json.loads(found[0]) if found else {
                "preset": preset, "variant": variant, "micro_batch": micro, "seq_len": seq, "checkpointing": checkpointing,
                "error": f"exit {proc.returncode}: {(proc.stderr.strip().splitlines() or [''])[-1][:120]}"}
            records.append(record)
            print(json.dumps(record), flush=True)
            for line in proc.stdout.splitlines():
                if line.startswith("PROFILE"):
                    print(line, flush=True)
    print(f"\n{device} (peak {peak:.3g} TFLOP/s), {precision}, ZeRO-3 on 1 device; median of {args.steps} steps after "
          f"{args.warmup}")
    print(f"{'preset':<12} {'micro x seq':>12} {'ckpt':>5} {'variant':<8} {'tokens/s':>10} {'TFLOP/s':>8} {'MFU':>6} "
          f"{'speed-up':>8} {'peak GiB':>9} {'planned':>8}")
    base = {r["preset"]: r for r in records if r["variant"] == "unfused" and "error" not in r}
    for r in records:
        head = (f"{r['preset']:<12} {r['micro_batch']:>5} x {r['seq_len']:<5} {'yes' if r['checkpointing'] else 'no':>5} "
                f"{r['variant']:<8}")
        if "error" in r:
            print(f"{head} {r['error']}")
            continue
        speed = r["tokens_per_s"] / base[r["preset"]]["tokens_per_s"] if r["preset"] in base else float("nan")
        peak_gib = f"{r['peak_gib']:.1f}" if r["peak_gib"] is not None else "-"
        print(f"{head} {r['tokens_per_s']:>10,.0f} {r['tflops']:>8.1f} {100 * r['mfu']:>5.1f}% {speed:>7.2f}x "
              f"{peak_gib:>9} {r['planned_gib']:>8.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(records, indent=1))


if __name__ == "__main__":
    main()
