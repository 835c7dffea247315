"""Run the whole product on the built-in corpus, on CPU: ``python -m pretrain.demo [--arch llama|bert|modernbert]``.

It is the pipeline's demo recipe (pretrain/recipes/demo.yaml: clean, tokenizer, preprocess, train, export),
then a look at the dataset, the loss before and after training, and a sample from the exported model.
A second run in the same folder skips every stage that is up to date."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

# The model each architecture trains: the recipe's one line train.config. Its model family's objective
# decides the rest (tokenizer kind, document or sentence datasets), so another family is one more entry here.
ARCHITECTURES = {"gpt2": ("tiny_clm", "GPT-2"), "llama": ("tiny_llama", "Llama"), "bert": ("tiny_mlm", "BERT"),
                 "modernbert": ("modernbert_tiny", "ModernBERT")}
OBJECTIVE_DEFAULT = {"clm": "gpt2", "mlm": "bert"}  # --objective, the demo's older switch


def objective_of(arch: str) -> str:
    """"clm" or "mlm": what the architecture's model family trains."""
    from pretrain.config import load_config
    from pretrain.presets import get_preset

    return get_preset(load_config(ARCHITECTURES[arch][0]).model.preset).objective


def step(title: str, command: list[str]) -> None:
    print(f"\n=== {title}\n$ {' '.join(map(str, command))}", flush=True)
    started = time.perf_counter()
    code = subprocess.run([str(c) for c in command]).returncode
    if code:
        raise SystemExit(code)  # the command said what went wrong
    print(f"--- {time.perf_counter() - started:.1f} s", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--arch", choices=sorted(ARCHITECTURES), help="the model family (default: gpt2, or the "
                        "objective's)")
    parser.add_argument("--objective", choices=sorted(OBJECTIVE_DEFAULT), help="clm (decoders) or mlm (encoders)")
    parser.add_argument("--out", default="demo_out", help="working folder (stages complete there are skipped)")
    parser.add_argument("--fresh", action="store_true", help="empty the working folder first")
    parser.add_argument("--ranks", type=int, default=2, help="CPU ranks (deepspeed --num_gpus)")
    parser.add_argument("--steps", type=int, default=120)
    args = parser.parse_args()
    arch = args.arch or OBJECTIVE_DEFAULT[args.objective or "clm"]
    clm = objective_of(arch) == "clm"
    if args.objective and args.objective != ("clm" if clm else "mlm"):
        parser.error(f"--arch {arch} trains {'a causal' if clm else 'a masked'} LM, not --objective {args.objective}")
    config, title = ARCHITECTURES[arch]
    out = Path(args.out).resolve()
    if args.fresh:
        shutil.rmtree(out, ignore_errors=True)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    python = sys.executable
    pipeline = [python, "-m", "pretrain.cli.pipeline", "demo", "--workdir", out, f"train.config={config}",
                f"train.ranks={args.ranks}", f"train.steps={args.steps}"]
    step(f"1. clean the corpus, train a tokenizer, tokenize, train a tiny {title} with DeepSpeed "
         f"on {args.ranks} CPU ranks, export it to a Hugging Face folder: the demo recipe", pipeline)
    prefix = out / "data" / ("corpus_text_document" if clm else "corpus_text_sentence")
    step("2. inspect the dataset", [python, "-m", "pretrain.cli.inspect_dataset", prefix, "--document", "0", "--tokenizer",
                                 out / "tokenizer", "--bins", "6"])
    evals = [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text().splitlines() if "eval_loss" in line]
    print(f"\nvalid loss: {evals[0]['eval_loss']:.3f} before training -> {evals[-1]['eval_loss']:.3f} after "
          f"{evals[-1]['step']} steps (perplexity {evals[0]['eval_ppl']:.0f} -> {evals[-1]['eval_ppl']:.0f})")
    show_sample(out / "hf", clm)
    plots = out / "run" / "plots"
    print(f"\ncurves: {plots / 'loss.png'} and {plots / 'overview.png'} (loss, lr, grad norm, tokens/s, MFU); "
          f"the run's summary: {out / 'run' / 'summary.json'}")
    print(f"all outputs are in {out}; the same command again skips every stage that is up to date")
    return 0


def show_sample(folder: Path, clm: bool) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    torch.manual_seed(0)
    if clm:
        model = AutoModelForCausalLM.from_pretrained(folder).eval()
        for prompt in ("봄이 오면", "Im Winter"):
            ids = tokenizer(prompt, return_tensors="pt").input_ids
            generated = model.generate(ids, max_new_tokens=30, do_sample=True, top_k=20, temperature=0.8)
            print(f"\n3. generated: {tokenizer.decode(generated[0], skip_special_tokens=True)!r}")
        return
    model = AutoModelForMaskedLM.from_pretrained(folder).eval()
    for text in (f"여름에는 {tokenizer.mask_token}가 많이 옵니다.", f"Im Herbst färben sich die {tokenizer.mask_token} gelb."):
        inputs = tokenizer(text, return_tensors="pt")
        with torch.no_grad():
            logits = model(input_ids=inputs.input_ids, attention_mask=inputs.attention_mask).logits
        where = (inputs.input_ids[0] == tokenizer.mask_token_id).nonzero()[0, 0]
        best = logits[0, where].topk(5).indices.tolist()
        print(f"\n3. {text!r}: top guesses {[tokenizer.decode([i]) for i in best]}")


if __name__ == "__main__":
    sys.exit(main())
