#!/usr/bin/env python
"""Training speed on one device: each case with this project's default (the parallel plan, compiled
blocks, the chunked head, a step that never waits for the GPU) beside a baseline, every run in its own
process with a deadline, each record appended to results.jsonl and the table rewritten as it finishes.

    python benchmarks/mfu_check.py --out /tmp/mfu                  # GPU: the cases below, deciding ones first
    python benchmarks/mfu_check.py --kernels                       # the LM heads and GPT-2 blocks alone
    python benchmarks/mfu_check.py --cases tiny-gpt2 tiny-bert --baseline zero3 --steps 4   # CPU rehearsal

Baselines: ``previous`` runs the code of the round before (``--baseline-root``, a checkout of that commit,
made by prepare_device.sh) with its own sweep harness and its default for the case (ZeRO-3 with
whole-block gathering, eager blocks, the chunked head; its BERT batches had no padding, so its BERT
figures are optimistic); ``zero3`` runs this code with train.ds_config=zero3 and model.compile=false at
the baseline's micro batch and recompute, on the same batches as the default.

Per run: tokens/s, MFU (model FLOPs: 6 N T + attention, no recompute) and HFU (recompute counted), the
median step (timed per step with device events, never a mean), the plan, the host's time to queue a
step ("queue ms": near the step time when the launch queue is full, which is fine) and the share of the
step the GPU spends in kernels ("GPU busy", from the profiler), peak memory against the planner, what
made the host wait in a steady-state step (set_sync_debug_mode and patched synchronizes), recompilations
seen (TORCH_LOGS=recompiles), the top kernels of the step's profile, and the speed-up over the
baseline. BERT batches are padded as real ones are: their lengths are drawn from
benchmarks/mlm_lengths.json (measured on real articles).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.device import runs  # noqa: E402 - once ROOT is on the path

# case -> (seq len, samples per step, the baseline's micro batch and activation checkpointing)
CASES = {
    "gpt2-medium": (1024, 16, 16, False),
    "gpt2-xl": (1024, 16, 16, True),
    "bert-large": (512, 32, 32, False),
    "gpt2-small": (1024, 16, 16, False),
    "bert-base": (512, 32, 32, False),
    "llama-1b": (2048, 16, 8, True),  # TinyLlama's shape and sequence length; target >= 45% MFU
    "modernbert-base": (1024, 64, 64, False),  # ModernBERT's pretraining length; target >= 35% MFU
    "tiny-gpt2": (64, 8, 8, False),  # CPU rehearsals (--dry-run)
    "tiny-bert": (64, 8, 8, False),
    "llama-tiny": (64, 8, 8, False),
    "modernbert-tiny": (64, 8, 8, False),
}
DECIDING = ["gpt2-medium", "gpt2-xl", "bert-large"]  # measured first, with their baselines, before the rest
NEW_FAMILIES = ("llama", "modernbert")  # the previous round's code has no such model: no "previous" baseline
SWEEP_VOCAB = 50257  # the GPU cases', as the previous round's harness had it (GPT-2's vocabulary, BERT's cases too)
LENGTHS = ROOT / "benchmarks" / "mlm_lengths.json"
# a GPU case needs its imports, NCCL's start-up and a cold compile before its first step: none starts on less
MIN_SECONDS = {"gpu": 60, "cpu": 20}


def bert_lengths(seq: int, count: int, rng: random.Random) -> list[int]:
    """Sample lengths of real MLM batches (mlm_lengths.json, scaled to ``seq``): nearly every batch is padded."""
    measured = json.loads(LENGTHS.read_text())
    lengths, weights = zip(*((int(k), v) for k, v in measured["lengths"].items()))
    return [max(8, min(seq, round(length * seq / measured["seq_len"]))) for length in rng.choices(lengths, weights, k=count)]


def document_positions(seq: int, rng: random.Random) -> list[int]:
    """Positions restarting at each packed document's first token (data.document_mask), documents of 64 to
    ``seq`` tokens (uniform); the sample's first one continues a document from the previous sample."""
    positions: list[int] = []
    while len(positions) < seq:
        length = rng.randint(min(64, seq), seq)
        positions += range(0 if positions else rng.randint(0, length - 1), length)
    return positions[:seq]


def synthetic_batches(family: str, micro: int, seq: int, vocab: int, count: int, document_mask: bool) -> list[dict]:
    """Random token batches shaped as the loaders make them with the family's default: packed decoder samples
    (GPT-2: without document boundaries, the plain causal kernel; Llama: packed documents masked, with their
    positions); BERT's sentence pairs padded to ``seq`` after a real sample's length, with their padding mask
    (dropped by the collate function only when nothing in the batch is padded), 15% of their tokens to predict;
    ModernBERT's packed documents, no padding, 30% to predict."""
    import torch

    from pretrain.data.collate import collate
    from pretrain.data.masking import max_predictions
    from pretrain.presets import FAMILIES

    generator, rng = torch.Generator().manual_seed(0), random.Random(0)
    batches = []
    for _ in range(count):
        positions = [torch.tensor(document_positions(seq, rng)) for _ in range(micro)] if document_mask else None
        if FAMILIES[family].objective == "clm":
            samples = [{"tokens": torch.randint(0, vocab, (seq + 1,), generator=generator)} for _ in range(micro)]
        else:
            share = FAMILIES[family].mask_prob  # ModernBERT's 30%, BERT's 15%
            width = max_predictions(seq, share, packed=document_mask)
            samples = []
            for length in [seq] * micro if document_mask else bert_lengths(seq, micro, rng):
                ids = torch.full((seq,), 0, dtype=torch.long)
                ids[:length] = torch.randint(5, vocab, (length,), generator=generator)
                chosen = torch.randperm(length - 2, generator=generator)[: min(width, round(share * length))] + 1
                chosen = chosen.sort().values
                sample = {"input_ids": ids, "labels": torch.full_like(ids, -100).scatter(0, chosen, ids[chosen]),
                          "masked_positions": torch.zeros(width, dtype=torch.long).scatter(0, torch.arange(len(chosen)),
                                                                                           chosen)}
                if not document_mask:
                    mask = torch.zeros(seq, dtype=torch.long)
                    mask[:length] = 1
                    sample.update(token_type_ids=torch.zeros_like(ids), attention_mask=mask)
                samples.append(sample)
        for sample, position in zip(samples, positions or []):
            sample["position_ids"] = position
        batches.append(collate(samples))
    return batches


def run_case(preset: str, variant: str, steps: int, warmup: int) -> dict:
    """Child process: build this code's engine for the case and time ``steps`` optimizer steps."""
    import torch

    from pretrain.config import load_config
    from pretrain.engine import clips_in_optimizer, create_engine, deepspeed_config
    from pretrain.metrics import peak_tflops
    from pretrain.model import build_model, parameter_groups
    from pretrain.model.families import get_family
    from pretrain.parallel import choose_plan, device_memory_bytes, request_from_config
    from pretrain.planner import parameter_sizes
    from pretrain.presets import get_preset
    from pretrain.trainer import optimizer_step

    on_gpu = torch.cuda.is_available()
    device = torch.device("cuda", 0) if on_gpu else torch.device("cpu")
    if on_gpu:
        torch.cuda.set_device(device)
    shape = get_preset(preset)
    seq, samples, base_micro, base_ckpt = CASES[preset]
    vocab = 1024 if "tiny" in preset else SWEEP_VOCAB
    overrides = [f"model.preset={preset}", f"data.seq_len={seq}", f"train.global_batch={samples}",
                 "train.precision=bf16", "optim.warmup_steps=1", "train.steps=100"]
    if not on_gpu:  # rehearse the compiled blocks on CPU too (the graphs, not the minutes of C++ generation)
        overrides += ["model.compile=true", "model.compile_backend=aot_eager"]
    if variant == "zero3":
        overrides += ["train.ds_config=zero3", "model.compile=false", f"train.micro_batch={base_micro}",
                      f"model.activation_checkpointing={'full' if base_ckpt else 'none'}"]
    config = load_config(None, overrides)
    engine_log = runs.LogLines("pretrain.engine")  # its INFO line names the optimizer it built
    plan = choose_plan(request_from_config(config, vocab, 1, 1, device_memory_bytes(None, device, 1)))
    _, block, _ = parameter_sizes(preset, vocab)
    ds = deepspeed_config(config.train, config.optim, plan, block)
    if on_gpu:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.cuda.reset_peak_memory_stats()
    compile_blocks = config.model.compile is not False and (on_gpu or config.model.compile is True)
    built = time.perf_counter()
    document_mask = bool(config.data.document_mask)  # the family's default: Llama's and ModernBERT's packed documents
    model = build_model(config.model, vocab, {"eod": 0, "pad": 0, "cls": 1, "sep": 2, "mask": 3}, sentence_order=False,
                        seed=1, ds_config=ds, recompute_layers=plan.recompute_layers, compile_blocks=compile_blocks,
                        on_gpu=on_gpu, document_mask=document_mask)
    engine, _ = create_engine(model, parameter_groups(model, 0.1), config.optim, 100, ds, on_gpu,
                              clips_in_optimizer(plan, config.train.precision))
    build_s = time.perf_counter() - built
    micro = synthetic_batches(shape.family, plan.micro_batch, seq, vocab, plan.accumulation, document_mask)
    if on_gpu:
        micro = [{k: v.pin_memory() if hasattr(v, "pin_memory") else v for k, v in b.items()} for b in micro]

    def step():
        return optimizer_step(engine, [dict(b) for b in micro], device, 1)

    began = time.perf_counter()
    for _ in range(warmup):
        step()
    if on_gpu:
        torch.cuda.synchronize()
    warmup_s = time.perf_counter() - began
    step_s, host_ms, loss = timed_steps(step, steps, on_gpu)
    record = {"preset": preset, "variant": variant, "plan": plan.summary(), "micro_batch": plan.micro_batch,
              "accumulation": plan.accumulation, "seq_len": seq, "recompute_layers": plan.recompute_layers,
              "step_s": step_s, "host_ms": host_ms, "loss": loss, "planned_gib": plan.planned_bytes / 2**30,
              "build_s": build_s, "warmup_s": warmup_s,
              "optimizer": runs.optimizer_named("\n".join(engine_log.lines))
              or f"{type(getattr(engine.optimizer, 'optimizer', engine.optimizer)).__name__} (no log line named it)"}
    if on_gpu:
        record["gpu_ms"], record["top_kernels"] = profile_step(step)
    record["syncs"] = host_syncs(step, micro, engine.optimizer)
    tokens = samples * seq
    head_rows = None if "masked_positions" not in micro[0] else samples * micro[0]["masked_positions"].shape[1]
    peak = peak_tflops(None)
    family = get_family(shape.family)  # GQA and gated MLPs counted
    model_flops = family.flops(shape, seq, model.hf.config.vocab_size, tokens, 0, head_rows)
    hardware_flops = family.flops(shape, seq, model.hf.config.vocab_size, tokens, plan.recompute_layers, head_rows)
    record.update(tokens_per_s=tokens / step_s, mfu=model_flops / step_s / 1e12 / peak,
                  hfu=hardware_flops / step_s / 1e12 / peak, peak_tflops=peak,
                  peak_gib=torch.cuda.max_memory_allocated() / 2**30 if on_gpu else None)
    return record


def timed_steps(step, steps: int, on_gpu: bool) -> tuple[float, float, float]:
    """(median seconds per step, median host milliseconds to queue a step, the last loss). On a GPU each step
    is bracketed by device events, recorded without waiting, so steps still overlap as in training."""
    import torch

    host, marks, loss = [], [], None
    for _ in range(steps):
        if on_gpu:
            marks.append(torch.cuda.Event(enable_timing=True))
            marks[-1].record()
        else:
            marks.append(time.perf_counter())
        queued = time.perf_counter()
        loss, _ = step()
        host.append(1000 * (time.perf_counter() - queued))
    if on_gpu:
        marks.append(torch.cuda.Event(enable_timing=True))
        marks[-1].record()
        marks[-1].synchronize()
        seconds = [a.elapsed_time(b) / 1000 for a, b in zip(marks, marks[1:])]
    else:
        marks.append(time.perf_counter())
        seconds = [b - a for a, b in zip(marks, marks[1:])]
    return statistics.median(seconds), statistics.median(host), float(loss)


def profile_step(step, steps: int = 2) -> tuple[float, list[list]]:
    """(kernel milliseconds per step, the 8 kernels with the most device time: [name, ms per step])."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
    events = [e for e in prof.key_averages() if e.self_device_time_total > 0]
    total_us = sum(e.self_device_time_total for e in events)
    top = sorted(events, key=lambda e: e.self_device_time_total, reverse=True)[:8]
    return total_us / 1000 / steps, [[e.key[:80], e.self_device_time_total / 1000 / steps] for e in top]


def host_syncs(step, batches, optimizer) -> list[str]:
    """What made the host wait in a steady-state step: one step under HostSyncs (values read, copies to the host,
    data-dependent shapes, explicit synchronizes, each with where it happened), then on a GPU one under
    set_sync_debug_mode("error") (what the CUDA runtime itself sees). The batches before their copy and an
    optimizer's step counts kept on the host are free to read."""
    import torch

    from pretrain.host_sync import HostSyncs

    inner = getattr(optimizer, "optimizer", optimizer)  # DeepSpeed's ZeRO optimizers wrap the torch one
    steps = [s.get("step") for s in inner.state.values()]
    host = [t for b in batches for t in b.values() if torch.is_tensor(t)]
    host += [s for s in steps if torch.is_tensor(s) and s.device.type == "cpu"]
    with HostSyncs(host_tensors=host) as syncs:
        step()
    found = list(syncs.found)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            step()
        except RuntimeError as exc:
            found.append(f"set_sync_debug_mode: {str(exc).splitlines()[0][:200]}")
        finally:
            torch.cuda.set_sync_debug_mode(0)
    return found


def previous_code(preset: str, args, deadline: float) -> dict:
    """The baseline: the previous round's code and harness (benchmarks/gpu_sweep.py there), its default.
    Its MFU counted recompute; both are recomputed here from its tokens/s with this round's formula. The
    optimizer is the one its engine's log line names (FusedAdam, or the fused AdamW it falls back to)."""
    from pretrain.metrics import peak_tflops, transformer_flops
    from pretrain.model.hf import padded_vocab_size
    from pretrain.presets import get_preset

    seq, samples, micro, checkpointing = CASES[preset]
    root = Path(args.baseline_root).resolve()
    peak = peak_tflops(None)
    command = [sys.executable, "-c", runs.PREVIOUS_RUNNER, str(root / "benchmarks" / "gpu_sweep.py"), "--case", preset,
               "fused", str(micro), str(seq), str(int(checkpointing)), "--steps", str(args.steps), "--warmup",
               str(args.warmup), "--port", "29531", "--peak", str(peak)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    stdout, stderr, ended = runs.run_child(command, deadline, env, cwd=root)
    old, optimizer = runs.child_record(stdout, stderr), runs.optimizer_named(stderr)
    if old is None or "error" in old:
        runs.show_tail(preset, "previous", stderr)
        error = old["error"] if old else f"{ended or 'exit 0'}: {runs.failure_line(stderr)}"
        return {"preset": preset, "variant": "previous", "error": error[:240], "optimizer": optimizer}
    shape = get_preset(preset)
    tokens, vocab = micro * seq, padded_vocab_size(SWEEP_VOCAB, 64)
    head = None if shape.objective == "clm" else round(tokens * 0.15)  # the previous code's BERT predicted 15%
    step_s = tokens / old["tokens_per_s"]
    flops = [transformer_flops(shape.layers, shape.hidden, seq, vocab, tokens, recomputed, head)
             for recomputed in (0, shape.layers if checkpointing else 0)]
    record = {"preset": preset, "variant": "previous", "plan": f"ZeRO-3, micro batch {micro}, recompute "
              f"{'full' if checkpointing else 'none'} (the previous default; BERT batches unpadded)", "micro_batch": micro,
              "accumulation": 1, "seq_len": seq, "recompute_layers": shape.layers if checkpointing else 0,
              "step_s": step_s, "tokens_per_s": old["tokens_per_s"], "mfu": flops[0] / step_s / 1e12 / peak,
              "hfu": flops[1] / step_s / 1e12 / peak, "peak_gib": old.get("peak_gib"),
              "planned_gib": old.get("planned_gib"), "host_ms": None, "gpu_ms": None, "syncs": None,
              "optimizer": optimizer}
    return runs.kept_after(record, ended)


def child(preset: str, variant: str, args, deadline: float) -> dict:
    """Run one case in its own process (a fresh GPU, a deadline); the record or the reason it failed. A case
    measured but stuck on its way out still counts."""
    if variant == "previous":
        return previous_code(preset, args, deadline)
    command = [sys.executable, __file__, "--child", preset, variant, "--steps", str(args.steps), "--warmup",
               str(args.warmup)]
    stdout, stderr, ended = runs.run_child(command, deadline, {**os.environ, "TORCH_LOGS": "recompiles"})
    record = runs.child_record(stdout, stderr)
    if record:
        return runs.kept_after(record, ended)
    runs.show_tail(preset, variant, stderr)
    return {"preset": preset, "variant": variant, "error": f"{ended or 'exit 0'}: {runs.failure_line(stderr)}"}


def skip_reason(variant: str, left: float, on_gpu: bool, default_failed: bool) -> str | None:
    """Why a run is not started, if it is not: too little time to reach its first step, or (a baseline) its
    default run failed, so no speed-up can come of it and its minutes go to the next case."""
    need = MIN_SECONDS["gpu" if on_gpu else "cpu"]
    if left < need:
        return f"skipped for time: {max(left, 0):.0f} s left, a run needs {need} s"
    if variant != "default" and default_failed:
        return "skipped: its default run failed"
    return None


def run_order(cases: list[str], baseline: str) -> list[tuple[str, str]]:
    """Each case's default, then its baseline at once (a speed-up needs both), deciding cases first."""
    from pretrain.presets import get_preset

    ordered = [c for c in DECIDING if c in cases] + [c for c in cases if c not in DECIDING]
    return [(case, variant) for case in ordered for variant in ("default", baseline) if variant != "none"
            and not (variant == "previous" and get_preset(case).family in NEW_FAMILIES)]


def busy(record: dict) -> str:
    """The share of the step the GPU spends in kernels (profiled kernel time over the median step): well
    under 100% means the GPU waits (for the host, the data, or between kernels)."""
    if not record.get("gpu_ms"):
        return "-"
    return f"{100 * record['gpu_ms'] / (1000 * record['step_s']):.0f}%"


def table(records: list[dict], device: str) -> list[str]:
    lines = [f"{device}: tokens/s, MFU (model FLOPs) and HFU (recompute counted) per device; median step",
             f"{'case':<12} {'run':<9} {'micro x acc x seq':>18} {'recompute':>10} {'tok/s':>9} {'MFU':>6} {'HFU':>6} "
             f"{'queue ms':>8} {'GPU busy':>8} {'step ms':>8} {'peak GiB':>9} {'planned':>8} {'speed-up':>8} "
             f"{'recompiles':>10} syncs"]
    baselines = {r["preset"]: r for r in records if r["variant"] != "default" and "error" not in r}
    for r in records:
        head = f"{r['preset']:<12} {r['variant']:<9}"
        if "error" in r:
            lines.append(f"{head} {r['error']}")
            continue

        def number(key, record=r):
            return "-" if record.get(key) is None else f"{record[key]:.1f}"

        base = baselines.get(r["preset"])
        speed = f"{r['tokens_per_s'] / base['tokens_per_s']:.2f}x" if base and r["variant"] == "default" else "-"
        syncs = "-" if r.get("syncs") is None else ("none" if not r["syncs"] else f"{len(r['syncs'])}: {r['syncs'][0][:60]}")
        shape = f"{r['micro_batch']} x {r['accumulation']} x {r['seq_len']}"
        recompute = r.get("recompute_layers")
        lines.append(f"{head} {shape:>18} {'-' if recompute is None else recompute:>10} {r['tokens_per_s']:>9,.0f} "
                     f"{100 * r['mfu']:>5.1f}% {100 * r['hfu']:>5.1f}% {number('host_ms'):>8} {busy(r):>8} "
                     f"{1000 * r['step_s']:>8.1f} {number('peak_gib'):>9} {number('planned_gib'):>8} {speed:>8} "
                     f"{r.get('recompiles', '-'):>10} {syncs}")
    lines += [f"  {r['preset']} {r['variant']}: {r['plan']}; optimizer {r.get('optimizer') or 'not in its log'}"
              for r in records if "plan" in r]
    measured = [r for r in records if r["variant"] == "default" and r.get("top_kernels")]
    if measured:
        worst = min(measured, key=lambda r: r["mfu"])
        lines.append(f"  top kernels of the lowest-MFU case ({worst['preset']}), ms per step:")
        lines += [f"    {ms:8.2f}  {name}" for name, ms in worst["top_kernels"]]
    return lines


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        parser = argparse.ArgumentParser()
        parser.add_argument("--child", nargs=2)
        parser.add_argument("--steps", type=int, default=6)
        parser.add_argument("--warmup", type=int, default=3)
        args = parser.parse_args()
        from pretrain.distributed import process_group

        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=os.environ.get("MASTER_PORT", "29517"))
        with process_group():
            record = run_case(args.child[0], args.child[1], args.steps, args.warmup)
            print("RESULT " + json.dumps(record), flush=True)  # before the group ends: a hang there loses nothing
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=["gpt2-medium", "gpt2-xl", "bert-large", "llama-1b",
                                                       "modernbert-base", "gpt2-small", "bert-base"],
                        choices=list(CASES))
    parser.add_argument("--baseline", choices=["previous", "zero3", "none"], default="previous")
    parser.add_argument("--baseline-root", default=str(ROOT / ".device" / "baseline"))
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--deadline", type=float, default=120, help="seconds per run at most")
    parser.add_argument("--until", type=float, default=None,
                        help="a time (seconds since the epoch) after which no run starts; a run's deadline ends there")
    parser.add_argument("--out", default="/tmp/mfu_check", help="results.jsonl, table.txt and kernels.jsonl go here")
    parser.add_argument("--kernels", action="store_true", help="time the LM heads and GPT-2 blocks alone")
    parser.add_argument("--tiny", action="store_true", help="--kernels: tiny shapes (a CPU rehearsal)")
    args = parser.parse_args()
    import torch

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    if args.kernels:
        from benchmarks.kernel_times import time_kernels

        for line in time_kernels(out / "kernels.jsonl", tiny=args.tiny):
            print(line, flush=True)
        return
    if args.baseline == "previous" and not (Path(args.baseline_root) / "benchmarks" / "gpu_sweep.py").exists():
        print(f"no previous code at {args.baseline_root}: using the zero3 baseline", flush=True)
        args.baseline = "zero3"
    results = out / "results.jsonl"  # appended to by every invocation of a session; the table covers them all
    failed: set[str] = set()  # cases whose default run failed
    for preset, variant in run_order(args.cases, args.baseline):
        left = args.deadline if args.until is None else min(args.deadline, args.until - time.time())
        reason = skip_reason(variant, left, torch.cuda.is_available(), preset in failed)
        record = {"preset": preset, "variant": variant, "error": reason} if reason else child(preset, variant, args, left)
        if variant == "default" and "error" in record:
            failed.add(preset)
        with open(results, "a") as handle:
            handle.write(json.dumps(record) + "\n")
        records = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
        (out / "table.txt").write_text("\n".join(table(records, device)) + "\n")
        print(json.dumps({k: v for k, v in record.items() if k != "top_kernels"}), flush=True)
    if (out / "table.txt").exists():
        print("\n" + (out / "table.txt").read_text(), flush=True)


if __name__ == "__main__":
    main()
