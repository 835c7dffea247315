"""Run the whole product on the built-in corpus, on CPU: ``python -m pretrain.demo [--objective mlm]``."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
TRAIN = HERE.parent.parent / "tools" / "train.py"


def step(title: str, command: list[str]) -> None:
    print(f"\n=== {title}\n$ {' '.join(map(str, command))}", flush=True)
    started = time.perf_counter()
    subprocess.run([str(c) for c in command], check=True)
    print(f"--- {time.perf_counter() - started:.1f} s", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--objective", choices=["clm", "mlm"], default="clm", help="GPT-2 (clm) or BERT (mlm)")
    parser.add_argument("--out", default="demo_out", help="working folder (replaced)")
    parser.add_argument("--ranks", type=int, default=2, help="CPU ranks (deepspeed --num_gpus)")
    parser.add_argument("--steps", type=int, default=120)
    args = parser.parse_args()
    out = Path(args.out).resolve()
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    tools = HERE.parent.parent / "tools"
    corpus = sorted(HERE.glob("corpus/*.txt"))
    python = sys.executable
    clm = args.objective == "clm"
    step("1. train a tokenizer on the built-in Korean + German corpus",
         [python, tools / "train_tokenizer.py", "--type", "bpe" if clm else "wordpiece", "--input", *corpus,
          "--text-mode", "paragraph", "--vocab-size", "1024", "--output", out / "tokenizer"])
    step("2. tokenize it into Megatron-compatible .bin/.idx",
         [python, tools / "preprocess_data.py", "--input", *corpus, "--text-mode", "paragraph", "--tokenizer",
          out / "tokenizer", "--output-prefix", out / "corpus", "--workers", "2",
          "--append-eod" if clm else "--split-sentences"])
    prefix = out / ("corpus_text_document" if clm else "corpus_text_sentence")
    step("3. inspect the dataset", [python, tools / "inspect_dataset.py", prefix, "--document", "0", "--tokenizer",
                                    out / "tokenizer", "--bins", "6"])
    deepspeed = shutil.which("deepspeed") or str(Path(python).parent / "deepspeed")
    step(f"4. train a tiny {'GPT-2' if clm else 'BERT'} with DeepSpeed on {args.ranks} CPU ranks",
         [deepspeed, "--num_gpus", str(args.ranks), TRAIN, "--config", "tiny_clm" if clm else "tiny_mlm",
          f"data.tokenizer={out / 'tokenizer'}", f"data.prefixes=[{prefix}]", f"run.dir={out / 'run'}",
          f"train.steps={args.steps}", "train.eval_interval=20", "train.log_interval=20", "train.save_interval=60"])
    step("5. export the newest checkpoint (its manifest verified) to a Hugging Face folder",
         [python, tools / "export_hf.py", out / "run", out / "hf"])
    evals = [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text().splitlines() if "eval_loss" in line]
    print(f"\nvalid loss: {evals[0]['eval_loss']:.3f} before training -> {evals[-1]['eval_loss']:.3f} after "
          f"{evals[-1]['step']} steps (perplexity {evals[0]['eval_ppl']:.0f} -> {evals[-1]['eval_ppl']:.0f})")
    show_sample(out / "hf", clm)
    plots = out / "run" / "plots"
    print(f"\ncurves: {plots / 'loss.png'} and {plots / 'overview.png'} (loss, lr, grad norm, tokens/s, MFU); "
          f"the run's summary: {out / 'run' / 'summary.json'}")
    print(f"all outputs are in {out}")
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
            print(f"\n6. generated: {tokenizer.decode(generated[0], skip_special_tokens=True)!r}")
        return
    model = AutoModelForMaskedLM.from_pretrained(folder).eval()
    for text in (f"여름에는 {tokenizer.mask_token}가 많이 옵니다.", f"Im Herbst färben sich die {tokenizer.mask_token} gelb."):
        inputs = tokenizer(text, return_tensors="pt")
        with torch.no_grad():
            logits = model(**inputs).logits
        where = (inputs.input_ids[0] == tokenizer.mask_token_id).nonzero()[0, 0]
        best = logits[0, where].topk(5).indices.tolist()
        print(f"\n6. {text!r}: top guesses {[tokenizer.decode([i]) for i in best]}")


if __name__ == "__main__":
    sys.exit(main())
