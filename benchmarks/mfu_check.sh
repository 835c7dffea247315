#!/usr/bin/env bash
# One GPU session of at most 6 minutes, installs included, every result kept the moment it is measured:
#   1. install the wheels the device lacks (.whl, from benchmarks/prepare_device.sh), check that every package
#      the GPU path imports is there, and start building the previous code's FusedAdam in the background;
#   2. the deciding cases (gpt2-medium, gpt2-xl, bert-large), each default beside its baseline, each run in
#      its own process with a deadline;
#   3. the GPU tests (CUDA kernels against the plain paths, steps under set_sync_debug_mode), cheap ones first;
#   4. the LM heads and GPT-2 blocks timed alone, part by part;
#   5. the other cases, until the budget is spent.
# Everything lands in $OUT (results.jsonl, table.txt, kernels.jsonl, logs).
#   here:           bash benchmarks/prepare_device.sh          (wheels into .whl/, the previous code into .device/)
#   on the device:  bash benchmarks/mfu_check.sh               (the device tool: carry .whl and .device)
#   a rerun:        PHASES="tests kernels rest" bash benchmarks/mfu_check.sh    (what the first run did not reach)
#   rehearsal:      bash benchmarks/mfu_check.sh --dry-run     (CPU, tiny models, only the device's packages
#                                                               importable: every phase, argument and path)
# BUDGET (seconds, default 330, after the installs) bounds the rest; CASES and REST pick presets.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/mfu_check}
PHASES=${PHASES:-deciding tests kernels rest}
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
T0=$(date +%s)
phase() { echo "== $1 ($(( $(date +%s) - T0 )) s in, $(left) s left)"; }
want() { case " $PHASES " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

if [ "$DRY" = 1 ]; then
  PYTHON=${PYTHON:-python3}
  CASES=${CASES:-tiny-gpt2} REST=${REST:-tiny-bert llama-tiny modernbert-tiny}
  # a CPU compiles (and DeepSpeed builds its CPU all-reduce op on first use) slowly; time is no object here
  BUDGET=${BUDGET:-2400} DEADLINE=${DEADLINE:-600} KERNEL_FLAGS=--tiny TESTS_SECONDS=300 KERNELS_SECONDS=600
  echo "== dry run on CPU: the wheels the device needs"
  $PYTHON benchmarks/device_env.py --check-list || exit 1
  rm -rf "$OUT/imports" "$OUT/tok" "$OUT"/d_text_* "$OUT"/*.jsonl "$OUT/table.txt"
  # from here on every Python process can import only what the device has (benchmarks/device/sitecustomize.py)
  export PRETRAIN_IMPORT_LOG="$OUT/imports" PYTHONPATH=$PWD/benchmarks/device:$PYTHONPATH
else
  PYTHON=python3
  CASES=${CASES:-gpt2-medium gpt2-xl bert-large} REST=${REST:-llama-1b modernbert-base gpt2-small bert-base}
  BUDGET=${BUDGET:-330} DEADLINE=${DEADLINE:-110} KERNEL_FLAGS= TESTS_SECONDS=45 KERNELS_SECONDS=70
  echo "== installing the carried wheels"
  if ls .whl/*.whl >/dev/null 2>&1; then
    $PYTHON -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
      || { echo "installing the wheels in .whl failed"; exit 1; }
    export PYTHONPATH=/tmp/site:$PYTHONPATH  # first: the carried transformers replaces the image's older one
  else
    echo "no .whl here: run benchmarks/prepare_device.sh first and carry .whl"; exit 1
  fi
  $PYTHON benchmarks/device_env.py --check-imports || exit 1
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/device.txt"
  # the previous code's optimizer is DeepSpeed's FusedAdam, built on first use: build it now, under the same
  # kernel lock its loader takes, while the first cases run (a baseline killed mid-build would rebuild it)
  if [ -d .device/baseline ]; then
    (cd .device/baseline && PYTHONPATH=$PWD:$PYTHONPATH $PYTHON -c \
      "from pretrain.jit_ops import load_op; load_op('FusedAdamBuilder')" > "$OUT/fused_adam_build.log" 2>&1 &)
  fi
fi
T0=$(date +%s)  # the budget starts once the installs are done
left() { echo $(( BUDGET - ($(date +%s) - T0) )); }
within() {  # a phase's seconds: what it asks for, cut to what the budget has left (0: no time for it)
  local rest=$(( $(left) - 5 ))
  if [ "$rest" -ge "$1" ]; then echo "$1"; elif [ "$rest" -ge 15 ]; then echo "$rest"; else echo 0; fi
}
$PYTHON -c "import torch, deepspeed, transformers; print('torch', torch.__version__, '| deepspeed', deepspeed.__version__,
  '| transformers', transformers.__version__)" | tee -a "$OUT/device.txt"
[ -d .device/baseline ] || echo "no .device/baseline (benchmarks/prepare_device.sh): the baseline is ZeRO-3 on this code"
failed=0

cases() {  # the cases given, each default then its baseline, within the budget
  $PYTHON benchmarks/mfu_check.py --out "$OUT" --until "$(( T0 + BUDGET - 5 ))" --deadline "$DEADLINE" --steps 5 \
    --warmup 2 --cases "$@" ${BASELINE:+--baseline $BASELINE} >> "$OUT/cases.log" 2>&1 || failed=1
  tail -n 1 "$OUT/results.jsonl" 2>/dev/null | cut -c1-160
}

if want deciding; then phase "the deciding cases: $CASES"; cases $CASES; fi

seconds=$(within "$TESTS_SECONDS")  # once: a second reading a moment later could be 0, and "timeout 0" never ends
if want tests && [ "$seconds" = 0 ]; then
  echo "GPU tests: not run, the session's time was up (PHASES=tests runs them in a rerun)"
elif want tests; then
  phase "GPU tests"
  if [ "$DRY" = 1 ]; then  # no GPU: they skip, but collecting them imports what they use, and their fixture preprocesses
    timeout "$TESTS_SECONDS" $PYTHON -m pytest -q -p no:cacheprovider tests/test_gpu.py --collect-only \
      > "$OUT/gpu_tests.log" 2>&1 &&
      $PYTHON tools/train_tokenizer.py --type bpe --input pretrain/demo/corpus --output "$OUT/tok" --vocab-size 1024 \
        >> "$OUT/gpu_tests.log" 2>&1 &&
      for mode in --append-eod --split-sentences; do
        $PYTHON tools/preprocess_data.py --input pretrain/demo/corpus --tokenizer "$OUT/tok" --output-prefix "$OUT/d" \
          --workers 1 --no-progress --overwrite $mode >> "$OUT/gpu_tests.log" 2>&1 || exit 1
      done
  else  # -v: a run cut by its timeout still says which tests passed; the slow compiled-block test last
    timeout "$seconds" $PYTHON -m pytest -v -p no:cacheprovider tests/test_gpu.py \
      -k "autocast or flash or sync_debug_mode or fused_head" > "$OUT/gpu_tests.log" 2>&1
  fi
  status=$?
  echo "GPU tests: status $status"; grep -E "PASSED|FAILED|ERROR|passed|failed|collected" "$OUT/gpu_tests.log" | tail -n 8
  [ "$status" != 0 ] && [ "$DRY" = 1 ] && { tail -n 20 "$OUT/gpu_tests.log"; exit 1; }
fi

seconds=$(within "$KERNELS_SECONDS")
if want kernels && [ "$seconds" = 0 ]; then
  echo "kernels: not run, the session's time was up (PHASES=kernels runs them in a rerun)"
elif want kernels; then
  phase "kernels, part by part"
  timeout "$seconds" $PYTHON benchmarks/mfu_check.py --kernels $KERNEL_FLAGS --out "$OUT" 2>"$OUT/kernels.log"
  status=$?
  [ "$status" != 0 ] && [ "$DRY" = 1 ] && { tail -n 20 "$OUT/kernels.log"; exit 1; }
fi

if want rest; then phase "the other cases: $REST"; cases $REST; fi

phase "done"
cat "$OUT/table.txt" 2>/dev/null
if [ "$DRY" = 1 ]; then  # every case must have produced a record, and every process run with the device's packages
  $PYTHON benchmarks/device_env.py --check-results "$OUT/results.jsonl" || exit 1
  $PYTHON benchmarks/device_env.py --check-log "$OUT/imports" || exit 1
fi
exit $failed
