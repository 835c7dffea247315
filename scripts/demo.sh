#!/usr/bin/env bash
# The whole product on its built-in corpus, on CPU, in a few minutes: the pipeline's demo recipe
# (pretrain/recipes/demo.yaml) cleans it -> tokenizer -> .bin/.idx -> tiny GPT-2 trained with DeepSpeed on
# 2 CPU ranks -> plots and a run summary -> Hugging Face export; then a sample from the model.
#   bash scripts/demo.sh                   # GPT-2 (causal LM), into ./demo_out
#   bash scripts/demo.sh --arch llama      # a Llama-style decoder (RMSNorm, rotary, SwiGLU, GQA)
#   bash scripts/demo.sh --arch bert       # BERT (masked LM); --arch modernbert: a ModernBERT-style encoder
#   bash scripts/demo.sh --fresh           # start over (otherwise stages already complete are skipped)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} TOKENIZERS_PARALLELISM=false PYTHONWARNINGS=ignore
python -m pretrain.demo "$@"
