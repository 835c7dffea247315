#!/usr/bin/env bash
# Create ./.venv (once) and install pretrain with everything the demo and the tests need.
# Re-running is cheap: nothing is reinstalled unless setup.py or constraints.txt changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
stamp=$(cat setup.py constraints.txt | sha256sum | cut -c1-16)
if [ "$(cat .venv/.pretrain-installed 2>/dev/null)" != "$stamp" ]; then
  python -m pip install -q --upgrade pip
  # torch first and pinned: a bare "torch" requirement on a machine without it pulls a multi-GB CUDA build
  python -m pip install -q -c constraints.txt torch
  python -m pip install -q -c constraints.txt -e ".[test]"
  echo "$stamp" > .venv/.pretrain-installed
fi
