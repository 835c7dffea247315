#!/usr/bin/env bash
# Here, before a GPU session: what benchmarks/mfu_check.sh needs on the device that the device lacks.
#   .whl/               the wheels of benchmarks/device/wheels.txt for the device's Python 3.12 (its image has
#                       torch, not DeepSpeed and its small dependencies, and an older transformers)
#   .device/baseline/   the code of the previous round (BASELINE_COMMIT), the baseline the cases run beside
#                       (benchmarks/mfu_check.sh's BASELINE_VARIANT picks which baseline runs: a name of its own,
#                       so that exporting one cannot break the other)
# Both are ignored by git; name them in the device tool's carry list (64 MiB in all).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${BASELINE:-}" ]; then  # its old name here: refused rather than silently archiving the default commit
  echo "BASELINE is no longer read here: BASELINE_COMMIT names the previous round's commit"; exit 2
fi
BASELINE_COMMIT=${BASELINE_COMMIT:-5165965}
. .venv/bin/activate
python benchmarks/device_env.py --check-list
rm -rf .whl && mkdir -p .whl
wheels=$(grep -v '^#' benchmarks/device/wheels.txt | grep -v '^deepspeed==' | tr '\n' ' ')
python -m pip wheel -q "$(grep '^deepspeed==' benchmarks/device/wheels.txt)" --no-deps --no-build-isolation -w .whl
python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl $wheels
rm -rf .device/baseline && mkdir -p .device/baseline
git archive "$BASELINE_COMMIT" | tar -x -C .device/baseline
du -sh .whl .device/baseline
