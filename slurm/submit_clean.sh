#!/bin/bash
# Submit a sharded cleaning job: the filter stage as an array, and the dedup stage that runs when every
# shard succeeded.
#
#   bash slurm/submit_clean.sh SHARDS [sbatch options --] clean_corpus.py arguments
#   bash slurm/submit_clean.sh 64 -p cpu -- --input 'crawl/*.jsonl.zst' --output clean/de --language de
#
# Prints the job ids: the array, then the dedup job.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=slurm/submit_args.sh
source slurm/submit_args.sh
mkdir -p logs
array=$(sbatch --parsable "${SBATCH_OPTS[@]}" --array="0-$((SHARDS - 1))" slurm/clean.sbatch "${ARGS[@]}")
dedup=$(sbatch --parsable "${SBATCH_OPTS[@]}" --dependency="afterok:${array%%;*}" \
  --export="ALL,CLEAN_STAGE=dedup,NUM_SHARDS=$SHARDS" slurm/clean.sbatch "${ARGS[@]}")
echo "clean filter array job ${array%%;*} ($SHARDS shards), dedup job ${dedup%%;*}"
