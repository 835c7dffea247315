#!/usr/bin/env bash
# One GPU session: install what is missing from the wheels given, check the fused paths on the GPU,
# then time every preset with the fused paths on and off. Prints a short table last.
#   bash benchmarks/gpu_check.sh [WHEEL_DIR]        (default .whl; see README "GPU check")
# On a machine without a GPU it runs the CPU-checkable parts instead and says so.
set -uo pipefail
cd "$(dirname "$0")/.."
WHEELS=${1:-.whl}
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
if [ -d "$WHEELS" ] && ls "$WHEELS"/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl \
    || { echo "installing the wheels failed"; exit 1; }
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
# DeepSpeed's JIT ops: build for this GPU only (DeepSpeed cannot parse arch names like "9.0a")
export TORCH_CUDA_ARCH_LIST=$(python3 -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())" 2>/dev/null || echo 9.0)
export MAX_JOBS=${MAX_JOBS:-16}
if ! python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "no GPU here: running the CPU-checkable parts (kernel math, planner, a tiny sweep)"
  python3 -m pytest -q tests/test_kernels.py tests/test_planner.py -k "not two_cpu_ranks" -p no:cacheprovider
  python3 benchmarks/gpu_sweep.py --presets tiny-gpt2 tiny-bert --seq-len 64 --micro-batch 4 --steps 3 --warmup 1
  exit $?
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, deepspeed, transformers; print('torch', torch.__version__, '| deepspeed', deepspeed.__version__, '| transformers', transformers.__version__)"
python3 benchmarks/gpu_correctness.py 2>&1 | tee "$OUT/correctness.log" | grep -E "^(PASS|FAIL)|GPU checks"
timeout "${SWEEP_SECONDS:-420}" python3 benchmarks/gpu_sweep.py --json "$OUT/sweep.json" ${SWEEP_ARGS:---steps 6 --warmup 2 --profile gpt2-medium} \
  > "$OUT/sweep.log" 2>&1 || echo "the sweep stopped early (status $?): partial results in $OUT/sweep.log"
grep '^PROFILE' "$OUT/sweep.log" | cut -c1-200 | head -40
tail -n 14 "$OUT/sweep.log"
