#!/usr/bin/env bash
# Set up everything (Python packages; Debian's Slurm + Open MPI for the cluster tests when run as
# root) and run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
python -m ruff check pretrain tools tests benchmarks
# -rs: the summary at the end lists every skipped test with its reason (a non-root run skips the Slurm
# tests; a checkout without ../shared the tests on the real corpora). In CI (CI=true) those skips fail.
# --durations: the slowest tests, so that what the suite's 30 minutes go to is in every CI log.
targets=(tests)
for arg in "$@"; do
  if [[ $arg != -* && -e ${arg%%::*} ]]; then targets=(); fi
done
python -m pytest -q -rs "${targets[@]}" --durations=25 "$@"
