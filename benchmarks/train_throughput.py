#!/usr/bin/env python
"""Training throughput: tokens/s, TFLOP/s and MFU per device, beside a baseline from the same run.

    python benchmarks/train_throughput.py                       # CPU: tiny GPT-2, 2 ranks, vs HF Trainer
    python benchmarks/train_throughput.py --preset llama-tiny   # CPU: tiny Llama vs LlamaForCausalLM in HF's Trainer
    python benchmarks/train_throughput.py --preset gpt2-medium --ranks 1 --micro-batch 8 --seq-len 1024 \
        --precision bf16 --baseline unfused                      # GPU: fused paths on vs off

Both runs train the same model on the same samples (random token documents, EOD-separated, in the
tokenizer's vocabulary) with the same DeepSpeed ZeRO config, launched by the deepspeed launcher. Against
HF's Trainer a Llama trains without document masking (data.document_mask=false): the Trainer's model
attends across documents, and the two must do the same work.
Baselines:
  hf        Hugging Face's Trainer with that DeepSpeed config (its own loss, data loader and loop);
  zero3     this trainer with train.ds_config=zero3 (against the default parallel plan);
  unfused   this trainer with the fused paths off (plain LM head + cross-entropy, eager attention,
            no torch.compile, ZeRO-3 hooks on every layer);
  layer-hooks  this trainer with only model.zero3_whole_blocks off (ZeRO-3 gathers parameters through
            a hook on every linear and norm layer, DeepSpeed's default);
A run's step time is the median over its steps after --warmup; the runs alternate --rounds times
and the table shows the median over rounds (this machine's speed drifts by tens of percent).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_data(folder: Path, vocab_size: int, special_ids: list[int], eod: int, tokens: int) -> str:
    """Documents (lengths 50-2000, ending with EOD) of Zipf-distributed ordinary token ids (special tokens left
    out, wherever the tokenizer puts them), like words in text: enough data without a tokenizer run, and a
    unigram distribution a model can learn (loss falls)."""
    import numpy as np

    from pretrain.data.indexed import IndexedDatasetWriter, token_dtype

    ordinary = np.setdiff1d(np.arange(vocab_size), special_ids)
    prefix = folder / "random_text_document"
    rng = np.random.default_rng(0)
    with IndexedDatasetWriter(prefix, token_dtype(vocab_size)) as writer:
        written = 0
        while written < tokens:
            ranks = np.minimum(rng.zipf(1.2, int(rng.integers(50, 2000))), len(ordinary)) - 1
            writer.add_document([np.append(ordinary[ranks], eod)])
            written += len(ranks) + 1
        writer.finalize()
    return str(prefix)


def default_tokenizer(work: Path) -> str:
    """The shared multilingual BPE where ../shared is, else a byte-level BPE trained on the demo corpus."""
    shared = ROOT.parent / "shared" / "tokenizers" / "multilingual-bpe"
    if shared.exists():
        return str(shared)
    from pretrain.tokenization.training import TokenizerTrainingOptions, train_tokenizer

    corpus = [str(p) for p in sorted((ROOT / "pretrain" / "demo" / "corpus").glob("*.txt"))]
    train_tokenizer(TokenizerTrainingOptions(kind="bpe", inputs=corpus, output=str(work / "tok"), vocab_size=1024,
                                             text_mode="paragraph"))
    return str(work / "tok")


def overrides(args, data: str, run_dir: Path) -> list[str]:
    from pretrain.presets import get_preset

    tiny, shape = "tiny" in args.preset, get_preset(args.preset)
    config = {"gpt2": ("tiny_clm", "gpt2_small"), "bert": ("tiny_mlm", "bert_base"),
              "llama": ("tiny_llama", "llama_125m"), "modernbert": ("modernbert_tiny", "modernbert_base")}[shape.family][not tiny]
    # a decoder of transformers' under HF's Trainer attends across packed documents: the same work has no mask
    masked_decoder = shape.objective == "clm" and shape.traits.document_mask
    same_work = ["data.document_mask=false"] if masked_decoder and args.baseline == "hf" else []
    return ["--config", config, *same_work, f"model.preset={args.preset}", f"data.tokenizer={args.tokenizer}",
            f"data.prefixes=[{data}]", f"data.seq_len={args.seq_len}", f"train.micro_batch={args.micro_batch}",
            f"train.global_batch={args.micro_batch * args.ranks * args.accumulation}", f"train.steps={args.steps}",
            f"train.precision={args.precision}", f"train.ds_config={args.ds_config}", "train.log_interval=1",
            f"train.eval_interval={args.steps}", "train.eval_samples=8", f"train.save_interval={10 * args.steps}",
            "optim.warmup_steps=2", f"model.activation_checkpointing={'full' if args.checkpointing else 'none'}",
            "data.split=99,1,0", "run.tensorboard=false", f"run.dir={run_dir}",
            "train.rampup_batch_size=null"]  # a constant batch: the shipped ModernBERT configs ramp it


def launch(args, script: list[str]) -> None:
    deepspeed = shutil.which("deepspeed") or str(Path(sys.executable).parent / "deepspeed")
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "TOKENIZERS_PARALLELISM": "false"}
    from pretrain.distributed import free_port

    proc = subprocess.run([deepspeed, "--num_gpus", str(args.ranks), "--master_port", str(free_port()), *script],
                          cwd=ROOT, env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(script[:3])} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


def ours(args, data: str, run_dir: Path, extra: list[str]) -> list[float]:
    launch(args, [str(ROOT / "tools" / "train.py"), *overrides(args, data, run_dir), *extra])
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["step_time_s"] for r in records if "step_time_s" in r]


def hf_trainer(args, data: str, run_dir: Path) -> list[float]:
    launch(args, [str(Path(__file__).resolve()), "--hf-worker", json.dumps(vars(args)), data, str(run_dir)])
    return json.loads((run_dir / "hf_step_times.json").read_text())


def hf_worker(raw_args: str, data: str, run_dir: str) -> None:
    """Inside a deepspeed-launched rank: the same model and samples through transformers.Trainer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, Trainer, TrainerCallback, TrainingArguments

    from pretrain.config import load_config
    from pretrain.data.builder import SplitSizes, build_datasets
    from pretrain.engine import deepspeed_config
    from pretrain.model.families import get_family
    from pretrain.model.hf import hf_config, padded_vocab_size
    from pretrain.parallel import choose_plan, device_memory_bytes, request_from_config
    from pretrain.planner import parameter_sizes
    from pretrain.presets import get_preset
    from pretrain.tokenization import load_tokenizer

    args = argparse.Namespace(**json.loads(raw_args))
    config = load_config(None, [o for o in overrides(args, data, Path(run_dir)) if "=" in o][0:])
    world = int(os.environ.get("WORLD_SIZE", 1))
    preset = get_preset(config.model.preset)
    tokenizer = load_tokenizer(config.data.tokenizer, get_family(preset.family).tokenizer_roles)  # as the trainer
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if torch.cuda.is_available() else torch.device("cpu")
    memory = device_memory_bytes(config.train.device_memory_gib, device, world)  # as the trainer sizes its plan
    plan = choose_plan(request_from_config(config, tokenizer.vocab_size, world, world, memory))  # the same plan as ours
    ds = deepspeed_config(config.train, config.optim, plan, parameter_sizes(preset.name, tokenizer.vocab_size)[1])
    for key in ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "gradient_clipping"):
        ds[key] = "auto"
    training = TrainingArguments(
        output_dir=run_dir, per_device_train_batch_size=args.micro_batch, gradient_accumulation_steps=args.accumulation,
        max_steps=args.steps, learning_rate=config.optim.lr, weight_decay=config.optim.weight_decay,
        adam_beta1=config.optim.beta1, adam_beta2=config.optim.beta2, adam_epsilon=config.optim.eps,
        max_grad_norm=config.optim.grad_clip, lr_scheduler_type="cosine", warmup_steps=2, logging_steps=10_000,
        save_strategy="no", report_to=[], deepspeed=ds, bf16=args.precision == "bf16", fp16=args.precision == "fp16",
        dataloader_num_workers=0, use_cpu=not torch.cuda.is_available(), gradient_checkpointing=args.checkpointing)
    model_config = hf_config(preset, padded_vocab_size(tokenizer.vocab_size, 64), tokenizer.specials.ids)
    auto = AutoModelForCausalLM if preset.objective == "clm" else AutoModelForMaskedLM
    model = auto.from_config(model_config)
    dataset = build_datasets(config.data, tokenizer, preset.objective, config.run.seed,
                             SplitSizes(args.steps * config.train.global_batch, 0, 0), True)["train"]

    class Shifted(torch.utils.data.Dataset):  # HF shifts labels itself: give it seq_len aligned tokens
        def __len__(self):
            return len(dataset)

        def __getitem__(self, i):
            sample = dataset[i]
            if "tokens" in sample:
                return {"input_ids": sample["tokens"][:-1], "labels": sample["tokens"][:-1]}
            return sample

    times: list[float] = []

    class Timer(TrainerCallback):  # wall time between step ends: data, compute and logging, as ours
        last = None

        def on_step_end(self, *_, **__):
            now = time.perf_counter()
            if self.last is not None:
                times.append(now - self.last)
            self.last = now

    Trainer(model=model, args=training, train_dataset=Shifted(), callbacks=[Timer()]).train()
    if int(os.environ.get("RANK", 0)) == 0:
        (Path(run_dir) / "hf_step_times.json").write_text(json.dumps(times))


def report(args, name: str, times: list[float], flops: float, peak: float) -> dict:
    step = statistics.median(times)
    tokens = args.micro_batch * args.ranks * args.accumulation * args.seq_len / step
    tflops = flops / step / args.ranks / 1e12
    return {"name": name, "step_s": step, "tokens_per_s": tokens, "tflops": tflops, "mfu": tflops / peak}


def main() -> None:
    argv = [a for a in sys.argv[1:] if not a.startswith("--local_rank")]  # added by the deepspeed launcher
    if argv and argv[0] == "--hf-worker":
        from pretrain.distributed import process_group

        with process_group():
            hf_worker(*argv[1:4])
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny-gpt2")
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--micro-batch", type=int, default=4)
    p.add_argument("--accumulation", type=int, default=1)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--precision", default="fp32")
    p.add_argument("--ds-config", default="auto", help="this trainer's (and the hf baseline's, through the same plan)")
    p.add_argument("--checkpointing", action="store_true")
    p.add_argument("--baseline", choices=["hf", "zero3", "unfused", "layer-hooks", "none"], default="hf")
    p.add_argument("--tokenizer", help="default: the shared multilingual BPE where ../shared has it, else one trained "
                                       "on the demo corpus")
    p.add_argument("--rounds", type=int, default=3, help="alternate the two runs this many times (noisy machines)")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()
    from pretrain.metrics import peak_tflops
    from pretrain.model import padded_vocab_size
    from pretrain.model.families import get_family
    from pretrain.presets import get_preset
    from pretrain.tokenization import load_tokenizer

    work = Path(tempfile.mkdtemp(prefix="throughput-"))
    args.tokenizer = args.tokenizer or default_tokenizer(work)
    preset = get_preset(args.preset)
    tokenizer = load_tokenizer(args.tokenizer, get_family(preset.family).tokenizer_roles)
    data = make_data(work, tokenizer.vocab_size, sorted(set(tokenizer.specials.ids.values())), tokenizer.specials.eod,
                     2 * args.steps * args.micro_batch * args.ranks * args.accumulation * (args.seq_len + 1) + 100_000)
    tokens = args.micro_batch * args.ranks * args.accumulation * args.seq_len
    flops = get_family(preset.family).flops(preset, args.seq_len, padded_vocab_size(tokenizer.vocab_size, 64), tokens,
                                            preset.layers if args.checkpointing else 0)
    peak = peak_tflops(None)
    runs: dict[str, list[float]] = {}
    for round_ in range(args.rounds):  # alternate, so slow phases of a shared machine hit both alike
        times = ours(args, data, work / f"ours{round_}", [])
        runs.setdefault("pretrain", []).append(statistics.median(times[args.warmup:]))
        if args.baseline == "hf":
            times = hf_trainer(args, data, work / f"hf{round_}")
            runs.setdefault("hf-trainer", []).append(statistics.median(times[args.warmup:]))
        elif args.baseline == "zero3":
            times = ours(args, data, work / f"zero3{round_}", ["train.ds_config=zero3"])
            runs.setdefault("zero3", []).append(statistics.median(times[args.warmup:]))
        elif args.baseline == "unfused":
            off = ["model.lm_head=plain", "model.attention=eager", "model.compile=false",
                   "model.zero3_whole_blocks=false"]
            times = ours(args, data, work / f"unfused{round_}", off)
            runs.setdefault("unfused", []).append(statistics.median(times[args.warmup:]))
        elif args.baseline == "layer-hooks":
            times = ours(args, data, work / f"hooks{round_}", ["model.zero3_whole_blocks=false"])
            runs.setdefault("layer-hooks", []).append(statistics.median(times[args.warmup:]))
    results = [report(args, name, [statistics.median(steps)], flops, peak) for name, steps in runs.items()]
    print(f"{args.preset}, {args.ranks} rank(s), micro batch {args.micro_batch} x {args.accumulation}, seq {args.seq_len}, "
          f"{args.precision}, {args.ds_config}; peak {peak:.3g} TFLOP/s per device")
    print(f"{'run':<12} {'step s':>8} {'tokens/s':>10} {'TFLOP/s/dev':>12} {'MFU':>7} {'vs baseline':>12}")
    for r in results:
        ratio = r["tokens_per_s"] / results[-1]["tokens_per_s"] if len(results) > 1 else 1.0
        print(f"{r['name']:<12} {r['step_s']:>8.4f} {r['tokens_per_s']:>10,.0f} {r['tflops']:>12.3g} "
              f"{100 * r['mfu']:>6.1f}% {ratio:>11.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
