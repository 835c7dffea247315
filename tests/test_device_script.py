"""The GPU session's script, rehearsed on CPU: a device drawn for 15 minutes must not lose them to a wrong
argument, a missing path or a wheel nobody carried (benchmarks/mfu_check.sh --dry-run)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT
from tests.distributed import train_env

pytestmark = pytest.mark.slow


def test_the_device_script_runs_every_phase_on_cpu(tmp_path):
    out, total, started = tmp_path / "out", 1200, time.time()
    proc = subprocess.run(["bash", "benchmarks/mfu_check.sh", "--dry-run"], cwd=ROOT, capture_output=True, text=True,
                          timeout=1500, env={**train_env(), "OUT": str(out), "TOTAL": str(total),
                                             "PYTHON": sys.executable})
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "device check: ok" in proc.stdout and (out / "table.txt").exists()
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    kernels = [json.loads(line)["kernel"] for line in (out / "kernels.jsonl").read_text().splitlines()]
    collected = [line.split("::")[1] for line in (out / "gpu_tests.log").read_text().splitlines()
                 if line.startswith("tests/test_gpu.py::")]
    device = (out / "device.txt").read_text()
    kept = {path.name for path in out.iterdir() if path.name not in ("tok", "imports") and not path.name.startswith("d_")}
    checks = {  # each checked, so that one run names every one that fails
        "every case's default ran": {(r["preset"], r["variant"]) for r in records if "error" not in r} >= {
            (case, "default") for case in ("tiny-gpt2", "tiny-bert", "llama-tiny", "modernbert-tiny")},
        "the end is fixed at the script's start, not after its installs and checks":
            int(re.search(r"ends by END=(\d+)", proc.stdout).group(1)) <= started + total + 1,
        "each run names the optimizer its engine's log line reports (the previous code's too)":
            all((r.get("optimizer") or "").startswith("torch AdamW (") for r in records),
        "every kernel part ran": set(kernels) >= {"LM head plain", "LM head chunked", "GPT-2 block own (compiled)"},
        "the two blocks' cold compiles come first":
            kernels[:2] == ["GPT-2 block hf (compiled)", "GPT-2 block own (compiled)"],
        "the GPU tests by node id, cheap first, the sync test in, the compiled-block test last":
            collected[:1] == ["test_fused_head_equals_the_plain_one_in_bf16_and_holds_less[chunked]"]
            and collected[-1:] == ["test_own_block_and_compiled_blocks_match_on_the_gpu"]
            and any(name.startswith("test_a_steady_state_step_passes_sync_debug_mode_error") for name in collected),
        "a failed optional import (Liger) only warns": importlib.util.find_spec("liger_kernel") is not None
            or "device check: warning, optional: import liger_kernel" in device,
        "the background build's log says what load_op returned": "build: load_op returned" in device,
        "six files for the device tool to bring back (8 at most), besides what only a rehearsal writes":
            kept == {"results.jsonl", "table.txt", "kernels.jsonl", "device.txt", "cases.log", "gpu_tests.log"},
    }
    assert all(checks.values()), [name for name, ok in checks.items() if not ok]


FAKE_PREVIOUS = """import json, logging, os, sys, time
logging.getLogger("pretrain.engine").info("DeepSpeed engine: ZeRO stage 3, optimizer torch AdamW(fused=True) "
    "(FusedAdam unavailable: RuntimeError: Error building extension 'fused_adam'), bf16, micro batch 8 x accumulation "
    "1 x 1 ranks")
if os.environ["FAKE_PREVIOUS"] == "hang":
    print("RESULT " + json.dumps({"tokens_per_s": 1000.0, "peak_gib": None, "planned_gib": 0.1}), flush=True)
    time.sleep(600)
sys.stderr.write("Traceback (most recent call last):\\n    raise RuntimeError('CUDA error')\\n"
                 "RuntimeError: CUDA error: an illegal memory access was encountered\\n"
                 "[rank0]:[W1207 ProcessGroupNCCL.cpp:1505] Warning: WARNING: destroy_process_group() was not called "
                 "before program exit, which can leak resources.\\n")
sys.exit(1)
"""


@pytest.mark.parametrize("mode", ["hang", "fail"])
def test_a_previous_run_keeps_its_result_its_error_and_its_optimizer(tmp_path, monkeypatch, capfd, mode):
    """The previous round's harness (a stand-in): a result printed before a hang at exit is kept; a failure is
    the exception, not NCCL's warning at exit, with its last stderr lines in the log; the optimizer is named."""
    from benchmarks import mfu_check

    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "gpu_sweep.py").write_text(FAKE_PREVIOUS)
    monkeypatch.setenv("FAKE_PREVIOUS", mode)
    record = mfu_check.previous_code("tiny-gpt2", argparse.Namespace(baseline_root=str(tmp_path), steps=1, warmup=0), 5)
    assert (record.get("optimizer") or "").startswith("torch AdamW(fused=True) (FusedAdam unavailable: RuntimeError"), record
    if mode == "hang":
        assert "error" not in record and record["tokens_per_s"] == 1000.0 and "deadline" in record["exit"]
    else:
        assert record["error"] == "exit 1: RuntimeError: CUDA error: an illegal memory access was encountered"
        assert "destroy_process_group" in capfd.readouterr().err  # the tail, on the script's stderr


def test_a_failed_default_skips_its_baseline_and_says_why(tmp_path):
    """A default run that fails (no steps to time) records its exception, prints its stderr's tail, and its
    baseline is skipped; a run with less time left than a run needs is skipped for time."""
    from benchmarks.mfu_check import skip_reason

    proc = subprocess.run([sys.executable, "benchmarks/mfu_check.py", "--cases", "tiny-gpt2", "--baseline", "zero3",
                           "--steps", "0", "--warmup", "0", "--out", str(tmp_path)], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, env=train_env())
    records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert "StatisticsError" in records[0]["error"], proc.stdout[-2000:] + proc.stderr[-2000:]
    assert records[1] == {"preset": "tiny-gpt2", "variant": "zero3", "error": "skipped: its default run failed"}
    assert "--- tiny-gpt2 default failed; the last" in proc.stderr
    assert "skipped: its default run failed" in (tmp_path / "table.txt").read_text()
    assert skip_reason("default", 59, True, False).startswith("skipped for time: 59 s left")  # a GPU run needs 60
    assert skip_reason("default", 59, False, False) is None and skip_reason("zero3", 90, True, True)


def test_the_rehearsal_hides_what_the_device_lacks(tmp_path):
    """Under the device's package set, a package the device lacks cannot be imported, one it has can."""
    env = {**train_env(), "PRETRAIN_IMPORT_LOG": str(tmp_path),
           "PYTHONPATH": os.pathsep.join([str(ROOT / "benchmarks" / "device"), str(ROOT)])}
    code = ("import importlib.util, yaml, torch\nassert importlib.util.find_spec('wandb') is None\n"
            "try:\n    import wandb\nexcept ModuleNotFoundError as exc:\n    print('hidden:', exc)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0 and "hidden: No module named 'wandb'" in proc.stdout, proc.stderr[-2000:]
    assert "refused wandb" in next(tmp_path.glob("*.txt")).read_text()
