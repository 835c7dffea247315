#!/usr/bin/env bash
# One GPU session that ends within TOTAL seconds (default 360) of its start, installs included, every result
# kept the moment it is measured:
#   1. install the wheels the device lacks (.whl, from benchmarks/prepare_device.sh), check that every package
#      the GPU path imports is there (optional ones only warn), and start building the previous code's
#      FusedAdam in the background;
#   2. the deciding cases (gpt2-medium, gpt2-xl, bert-large), each default beside its baseline, each run in
#      its own process with a deadline (none starts with under a minute left);
#   3. the GPU tests (CUDA kernels against the plain paths, steps under set_sync_debug_mode), cheap ones first;
#   4. the GPT-2 blocks and the LM heads timed alone, part by part;
#   5. the other cases, until the time is spent.
# $OUT gets 6 files (the device tool brings back 8 at most): results.jsonl, table.txt, kernels.jsonl,
# device.txt (the GPU, the import check and versions, the FusedAdam build), cases.log (the cases' and the
# kernels' logs, with a failed run's last 30 stderr lines), gpu_tests.log.
#   here:           bash benchmarks/prepare_device.sh          (wheels into .whl/, the previous code into .device/)
#   on the device:  bash benchmarks/mfu_check.sh               (the device tool: carry .whl and .device;
#                                                               timeout_s at least TOTAL + 30)
#   a rerun:        TOTAL=... PHASES="tests kernels rest" bash benchmarks/mfu_check.sh    (what the first run
#                   did not reach; TOTAL = the device tool's status.budget_left_s minus about 90: a machine
#                   gone cold takes 1-2 minutes of that time to start)
#   rehearsal:      bash benchmarks/mfu_check.sh --dry-run     (CPU, tiny models, only the device's packages
#                                                               importable: every phase, argument and path)
# TOTAL fixes the end once, at the start; installs and every phase count down to it. CASES and REST pick
# presets, BASELINE_VARIANT the baseline (previous, zero3 or none; default previous, else zero3).
set -uo pipefail
START=$(date +%s)
if [ -n "${BUDGET:-}" ]; then  # its old meaning (seconds after the installs) would overrun a session's time
  echo "BUDGET is no longer read: TOTAL bounds the whole script, installs included"; exit 2
fi
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/mfu_check}
PHASES=${PHASES:-deciding tests kernels rest}
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
# the GPU tests, cheap ones first (pytest keeps this order; -v: a run cut by its timeout still says which
# passed); the compiled-block test last, as the kernels phase compares the two blocks too. Left out:
# test_training_on_the_gpu_learns (two 30-step trainings, minutes), as the cases train on the GPU already
GPU_TESTS=(
  tests/test_gpu.py::test_fused_head_equals_the_plain_one_in_bf16_and_holds_less
  tests/test_gpu.py::test_chunked_head_under_autocast_with_fp32_weights
  tests/test_gpu.py::test_bert_without_padding_runs_on_the_flash_kernel_and_padded_batches_on_another
  tests/test_gpu.py::test_a_steady_state_step_passes_sync_debug_mode_error
  tests/test_gpu.py::test_own_block_and_compiled_blocks_match_on_the_gpu
)

if [ "$DRY" = 1 ]; then
  PYTHON=${PYTHON:-python3}
  CASES=${CASES:-tiny-gpt2} REST=${REST:-tiny-bert llama-tiny modernbert-tiny}
  # a CPU compiles (and DeepSpeed builds its CPU all-reduce op on first use) slowly; time is no object here
  TOTAL=${TOTAL:-2400} DEADLINE=${DEADLINE:-600} KERNEL_FLAGS=--tiny TESTS_SECONDS=300 KERNELS_SECONDS=600
  BUILD_OP=ShareMemCommBuilder  # the background build's code, on an op the CPU runs have built already
else
  PYTHON=python3
  CASES=${CASES:-gpt2-medium gpt2-xl bert-large} REST=${REST:-llama-1b modernbert-base gpt2-small bert-base}
  # the tests: about 2-3 minutes cold (compiles, two launched steps); a cut loses the compiled-block test
  TOTAL=${TOTAL:-360} DEADLINE=${DEADLINE:-110} KERNEL_FLAGS= TESTS_SECONDS=150 KERNELS_SECONDS=70
  BUILD_OP=FusedAdamBuilder
fi
END=$(( START + TOTAL ))  # fixed once: the installs, every phase and every run's deadline count down to it
left() { echo $(( END - $(date +%s) )); }
phase() { echo "== $1 ($(( $(date +%s) - START )) s in, $(left) s left)"; }
want() { case " $PHASES " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
within() {  # a phase's seconds: what it asks for, cut to what is left before the end (0: no time for it)
  local rest=$(( $(left) - 5 ))
  if [ "$rest" -ge "$1" ]; then echo "$1"; elif [ "$rest" -ge 15 ]; then echo "$rest"; else echo 0; fi
}
echo "== ends by END=$END, $TOTAL s after its start"

if [ "$DRY" = 1 ]; then
  echo "== dry run on CPU: the wheels the device needs"
  $PYTHON benchmarks/device_env.py --check-list || exit 1
  rm -rf "$OUT/imports" "$OUT/tok" "$OUT"/d_text_* "$OUT"/*.jsonl "$OUT"/*.log "$OUT/table.txt"
  # from here on every Python process can import only what the device has (benchmarks/device/sitecustomize.py)
  export PRETRAIN_IMPORT_LOG="$OUT/imports" PYTHONPATH=$PWD/benchmarks/device:$PYTHONPATH
  echo "CPU (dry run)" > "$OUT/device.txt"
else
  phase "installing the carried wheels"
  if ls .whl/*.whl >/dev/null 2>&1; then
    $PYTHON -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
      || { echo "installing the wheels in .whl failed"; exit 1; }
    export PYTHONPATH=/tmp/site:$PYTHONPATH  # first: the carried transformers replaces the image's older one
  else
    echo "no .whl here: run benchmarks/prepare_device.sh first and carry .whl"; exit 1
  fi
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$OUT/device.txt"
fi
# the GPU path's imports (a dry run: under the device's package set), the versions found, into device.txt
$PYTHON benchmarks/device_env.py --check-imports 2>&1 | tee -a "$OUT/device.txt"
[ "${PIPESTATUS[0]}" = 0 ] || exit 1
# the previous code's optimizer is DeepSpeed's FusedAdam, built on first use: build it now, under the same
# kernel lock its loader takes, while the first cases run (a baseline killed mid-build would rebuild it); the
# log says what load_op gave, as a failed build makes the baseline fall back to torch's fused AdamW
BUILD="import time, traceback
from pretrain.jit_ops import load_op
began = time.time()
try:
    op = load_op('$BUILD_OP')
except BaseException as exc:
    traceback.print_exc()
    print(f'$BUILD_OP build: load_op raised {type(exc).__name__} after {time.time() - began:.0f} s: the baseline'
          ' falls back to torch AdamW(fused=True), its log line says so')
else:
    print(f'$BUILD_OP build: load_op returned {op!r} after {time.time() - began:.0f} s'
          + (' (None: DeepSpeed finds the op incompatible here)' if op is None else ''))"
if [ -d .device/baseline ]; then
  (cd .device/baseline && PYTHONPATH=$PWD:$PYTHONPATH $PYTHON -c "$BUILD" >> "$OUT/device.txt" 2>&1 &)
elif [ "$DRY" = 1 ]; then  # a rehearsal without the previous code (CI): the build's code on this tree
  ($PYTHON -c "$BUILD" >> "$OUT/device.txt" 2>&1 &)
else
  echo "no .device/baseline (benchmarks/prepare_device.sh): the baseline is ZeRO-3 on this code"
fi
failed=0

cases() {  # the cases given, each default then its baseline, all ending 5 s before the end
  $PYTHON benchmarks/mfu_check.py --out "$OUT" --until "$(( END - 5 ))" --deadline "$DEADLINE" --steps 5 \
    --warmup 2 --cases "$@" ${BASELINE_VARIANT:+--baseline "$BASELINE_VARIANT"} >> "$OUT/cases.log" 2>&1 || failed=1
  tail -n 1 "$OUT/results.jsonl" 2>/dev/null | cut -c1-160
}

if want deciding; then phase "the deciding cases: $CASES"; cases $CASES; fi

seconds=$(within "$TESTS_SECONDS")  # once: a second reading a moment later could be 0, and "timeout 0" never ends
if want tests && [ "$seconds" = 0 ]; then
  echo "GPU tests: not run, the session's time was up (PHASES=tests runs them in a rerun)"
elif want tests; then
  phase "GPU tests"
  if [ "$DRY" = 1 ]; then  # no GPU: they skip, but collecting them imports what they use, and their fixture preprocesses
    timeout "$seconds" $PYTHON -m pytest -q -p no:cacheprovider --collect-only "${GPU_TESTS[@]}" \
      > "$OUT/gpu_tests.log" 2>&1 &&
      $PYTHON tools/train_tokenizer.py --type bpe --input pretrain/demo/corpus --output "$OUT/tok" --vocab-size 1024 \
        >> "$OUT/gpu_tests.log" 2>&1 &&
      for mode in --append-eod --split-sentences; do
        $PYTHON tools/preprocess_data.py --input pretrain/demo/corpus --tokenizer "$OUT/tok" --output-prefix "$OUT/d" \
          --workers 1 --no-progress --overwrite $mode >> "$OUT/gpu_tests.log" 2>&1 || exit 1
      done
  else
    timeout "$seconds" $PYTHON -m pytest -v -p no:cacheprovider "${GPU_TESTS[@]}" > "$OUT/gpu_tests.log" 2>&1
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
  echo "== kernels" >> "$OUT/cases.log"
  timeout "$seconds" $PYTHON benchmarks/mfu_check.py --kernels $KERNEL_FLAGS --out "$OUT" 2>>"$OUT/cases.log"
  status=$?
  [ "$status" != 0 ] && [ "$DRY" = 1 ] && { tail -n 20 "$OUT/cases.log"; exit 1; }
fi

if want rest; then phase "the other cases: $REST"; cases $REST; fi

phase "done"
cat "$OUT/table.txt" 2>/dev/null
if [ "$DRY" = 1 ]; then  # every case must have produced a record, and every process run with the device's packages
  $PYTHON benchmarks/device_env.py --check-results "$OUT/results.jsonl" || exit 1
  $PYTHON benchmarks/device_env.py --check-log "$OUT/imports" || exit 1
fi
exit $failed
