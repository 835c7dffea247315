"""The GPU session's script, rehearsed on CPU: a device drawn for 15 minutes must not lose them to a wrong
argument, a missing path or a wheel nobody carried (benchmarks/mfu_check.sh --dry-run)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.distributed import train_env

pytestmark = pytest.mark.slow


def test_the_device_script_runs_every_phase_on_cpu(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(["bash", "benchmarks/mfu_check.sh", "--dry-run"], cwd=ROOT, capture_output=True, text=True,
                          timeout=1500, env={**train_env(), "OUT": str(out), "BUDGET": "1200",
                                             "PYTHON": sys.executable})
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert {(r["preset"], r["variant"]) for r in records if "error" not in r} >= {
        (case, "default") for case in ("tiny-gpt2", "tiny-bert", "llama-tiny", "modernbert-tiny")}
    kernels = [json.loads(line) for line in (out / "kernels.jsonl").read_text().splitlines()]
    assert {k["kernel"] for k in kernels} >= {"LM head plain", "LM head chunked", "GPT-2 block own (compiled)"}
    assert "device check: ok" in proc.stdout and (out / "table.txt").exists()


def test_the_rehearsal_hides_what_the_device_lacks(tmp_path):
    """Under the device's package set, a package the device lacks cannot be imported, one it has can."""
    env = {**train_env(), "PRETRAIN_IMPORT_LOG": str(tmp_path),
           "PYTHONPATH": os.pathsep.join([str(ROOT / "benchmarks" / "device"), str(ROOT)])}
    code = ("import importlib.util, yaml, torch\nassert importlib.util.find_spec('wandb') is None\n"
            "try:\n    import wandb\nexcept ModuleNotFoundError as exc:\n    print('hidden:', exc)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0 and "hidden: No module named 'wandb'" in proc.stdout, proc.stderr[-2000:]
    assert "refused wandb" in next(tmp_path.glob("*.txt")).read_text()
