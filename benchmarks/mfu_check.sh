#!/usr/bin/env bash
# One GPU session in under 8 minutes: install what the device lacks from carried wheels, run the GPU
# tests, time the LM heads and GPT-2 blocks alone, then every speed case beside its baseline (each run
# in its own process with a deadline; results in $OUT/results.jsonl as they finish, a table last).
#   here:          bash benchmarks/prepare_device.sh     (wheels into .whl/, the previous round's code into .device/)
#   on the device: bash benchmarks/mfu_check.sh          (the device tool: carry .whl and .device)
# PHASES picks parts (default "tests kernels cases"); CASES the presets. Without a GPU it runs the
# CPU-checkable parts: the kernel tests and a 1-rank tiny model, the default plan against ZeRO-3.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/mfu_check}
PHASES=${PHASES:-tests kernels cases}
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
# DeepSpeed's JIT ops: build for this GPU only (DeepSpeed cannot parse arch names like "9.0a")
export TORCH_CUDA_ARCH_LIST=$(python3 -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())" 2>/dev/null || echo 9.0)
export MAX_JOBS=${MAX_JOBS:-16}
if ! python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "no GPU here: the CPU-checkable parts (kernel math, host syncs, a tiny model's plan against ZeRO-3)"
  python3 -m pytest -q tests/test_kernels.py -p no:cacheprovider || exit 1
  exec python3 benchmarks/mfu_check.py --cases tiny-gpt2 --baseline zero3 --steps 20 --warmup 3 --out "$OUT"
fi
if ls .whl/*.whl >/dev/null 2>&1; then  # the device's Python (3.12) lacks DeepSpeed and a few of its dependencies
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "installing the wheels in .whl failed"; exit 1; }
  export PYTHONPATH=$PYTHONPATH:/tmp/site
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/device.txt"
python3 -c "import torch, deepspeed, transformers; print('torch', torch.__version__, '| deepspeed', deepspeed.__version__,
  '| transformers', transformers.__version__)" | tee -a "$OUT/device.txt"
case " $PHASES " in *" tests "*)
  timeout "${TESTS_SECONDS:-130}" python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py > "$OUT/gpu_tests.log" 2>&1
  echo "GPU tests (status $?):"; grep -E "passed|failed|error" "$OUT/gpu_tests.log" | tail -n 3 ;;
esac
case " $PHASES " in *" kernels "*)  # also warms inductor's cache for the gpt2-medium case
  timeout "${KERNELS_SECONDS:-80}" python3 benchmarks/mfu_check.py --kernels --out "$OUT" 2>&1 | tail -n 7 ;;
esac
case " $PHASES " in *" cases "*)
  [ -d .device/baseline ] || echo "no .device/baseline (benchmarks/prepare_device.sh): the baseline is ZeRO-3 on this code"
  timeout "${CASES_SECONDS:-300}" python3 benchmarks/mfu_check.py --out "$OUT" --deadline "${DEADLINE:-70}" \
    --steps 4 --warmup 2 ${CASES:+--cases $CASES} > "$OUT/cases.log" 2>&1
  echo "cases (status $?):"
  if [ -f "$OUT/table.txt" ]; then cat "$OUT/table.txt"; else tail -n 12 "$OUT/cases.log"; fi ;;
esac
