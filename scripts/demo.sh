#!/usr/bin/env bash
# The whole product on its built-in corpus, on CPU, in a few minutes:
# tokenizer -> .bin/.idx -> tiny GPT-2 trained with DeepSpeed on 2 CPU ranks -> plots and a run summary ->
# Hugging Face export -> a sample.
#   bash scripts/demo.sh                   # GPT-2 (causal LM)
#   bash scripts/demo.sh --objective mlm   # BERT (masked LM)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} TOKENIZERS_PARALLELISM=false PYTHONWARNINGS=ignore
python -m pretrain.demo "$@"
