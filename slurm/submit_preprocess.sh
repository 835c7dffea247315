#!/bin/bash
# Submit a sharded preprocessing job and the merge that runs when every shard succeeded.
#
#   bash slurm/submit_preprocess.sh SHARDS [sbatch options --] preprocess_data.py arguments
#   bash slurm/submit_preprocess.sh 64 -p cpu -- --input 'corpus/*.jsonl.zst' --tokenizer TOK \
#       --output-prefix data/ko --append-eod
#
# Prints the job ids: the array, then one merge job per --json-keys key (PREFIX_<key>_document).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=slurm/submit_args.sh
source slurm/submit_args.sh
prefix="" keys=(text) level=document
for ((i = 0; i < ${#ARGS[@]}; i++)); do
  case "${ARGS[$i]}" in
    --output-prefix) prefix=${ARGS[$((i + 1))]} ;;
    --split-sentences) level=sentence ;;
    --json-keys) keys=(); j=$((i + 1)); while [ $j -lt ${#ARGS[@]} ] && [[ ${ARGS[$j]} != --* ]]; do keys+=("${ARGS[$j]}"); j=$((j + 1)); done ;;
  esac
done
[ -n "$prefix" ] || { echo "pass --output-prefix" >&2; exit 2; }
mkdir -p logs
array=$(sbatch --parsable "${SBATCH_OPTS[@]}" --array="0-$((SHARDS - 1))" slurm/preprocess.sbatch "${ARGS[@]}")
inputs=(); for key in "${keys[@]}"; do inputs+=("${prefix}_${key}_${level}"); done
merges=()
for input in "${inputs[@]}"; do
  merge=$(sbatch --parsable "${SBATCH_OPTS[@]}" --dependency="afterok:${array%%;*}" slurm/merge.sbatch --input "$input")
  merges+=("${merge%%;*}")
done
echo "preprocess array job ${array%%;*} ($SHARDS shards), merge jobs ${merges[*]}"
