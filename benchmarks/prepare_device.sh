#!/usr/bin/env bash
# Here, before a GPU session: what benchmarks/mfu_check.sh needs on the device that the device lacks.
#   .whl/               DeepSpeed and its small dependencies (and Liger-Kernel) as wheels for the device's
#                       Python 3.12: its image has torch and transformers, not these
#   .device/baseline/   the code of the previous round (BASELINE, a commit), the baseline the cases run beside
# Both are ignored by git; name them in the device tool's carry list.
set -euo pipefail
cd "$(dirname "$0")/.."
BASELINE=${BASELINE:-5165965}
. .venv/bin/activate
rm -rf .whl && mkdir -p .whl
python -m pip wheel -q deepspeed==0.19.8 --no-deps --no-build-isolation -w .whl
python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
  hjson==3.1.0 pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.7.0 typing-inspection==0.4.5 \
  liger-kernel==0.8.5
rm -rf .device/baseline && mkdir -p .device/baseline
git archive "$BASELINE" | tar -x -C .device/baseline
du -sh .whl .device/baseline
