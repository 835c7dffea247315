"""A DeepSpeed op build that was killed must not hang later runs (a real build of the CPU comm op)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

PLAIN_LOAD = ("from deepspeed.accelerator import get_accelerator; "
              "get_accelerator().create_op_builder('ShareMemCommBuilder').load()")
GUARDED_LOAD = ("import logging; logging.basicConfig(level=logging.INFO); from pretrain.jit_ops import load_op; "
                "print('loaded', load_op('ShareMemCommBuilder').__name__)")


def python(code: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_a_lock_left_by_a_killed_build_is_removed_and_the_op_built_once(tmp_path):
    extensions = tmp_path / "torch_extensions"
    (extensions / "deepspeed_shm_comm").mkdir(parents=True)
    (extensions / "deepspeed_shm_comm" / "lock").touch()  # what torch leaves when its build is killed
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": str(extensions), "PYTHONWARNINGS": "ignore"}

    plain = python(PLAIN_LOAD, env)  # the hang this guards against: torch waits for the lock forever
    with pytest.raises(subprocess.TimeoutExpired):
        plain.communicate(timeout=30)
    plain.kill()
    plain.communicate()

    # two ranks of one node starting together: one removes the leftover and builds, the other waits for it
    ranks = [python(GUARDED_LOAD, env) for _ in range(2)]
    outputs = [rank.communicate(timeout=400) for rank in ranks]
    for rank, (out, err) in zip(ranks, outputs):
        assert rank.returncode == 0, err[-3000:]
        assert "loaded deepspeed_shm_comm" in out
    assert sum("left by a build of deepspeed_shm_comm that was killed" in err for _, err in outputs) == 1
    assert not (extensions / "deepspeed_shm_comm" / "lock").exists()
    assert (extensions / "deepspeed_shm_comm" / "deepspeed_shm_comm.so").exists()
