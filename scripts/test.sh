#!/usr/bin/env bash
# Set up everything (Python packages; Debian's Slurm + Open MPI for the cluster tests when run as
# root) and run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
python -m ruff check pretrain tools tests benchmarks
python -m pytest -q tests "$@"
