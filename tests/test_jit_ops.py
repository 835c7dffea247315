"""A DeepSpeed op build that was killed must not hang later runs (a real build of the CPU comm op)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pretrain import jit_ops
from tests.conftest import ROOT

PLAIN_LOAD = ("from deepspeed.accelerator import get_accelerator; "
              "builder = get_accelerator().create_op_builder('ShareMemCommBuilder'); "
              "print('loading', flush=True); builder.load()")
GUARDED_LOAD = ("import logging; logging.basicConfig(level=logging.INFO); from pretrain.jit_ops import load_op; "
                "print('loaded', load_op('ShareMemCommBuilder').__name__)")


def python(code: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_a_lock_left_by_a_killed_build_is_removed_and_the_op_built_once(tmp_path):
    # no TORCH_EXTENSIONS_DIR: the op goes to this environment's own folder under the user's cache
    env = {key: value for key, value in os.environ.items() if key != "TORCH_EXTENSIONS_DIR"}
    env.update(XDG_CACHE_HOME=str(tmp_path / "cache"), PYTHONWARNINGS="ignore")
    root = subprocess.run([sys.executable, "-c", "from pretrain.jit_ops import environment_build_root as r; print(r())"],
                          cwd=ROOT, env=env, text=True, capture_output=True, check=True).stdout.strip()
    assert root.startswith(str(tmp_path / "cache" / "torch_extensions"))
    extensions = Path(root)
    (extensions / "deepspeed_shm_comm").mkdir(parents=True)
    (extensions / "deepspeed_shm_comm" / "lock").touch()  # what torch leaves when its build is killed

    # the hang this guards against: torch waits for the lock forever, before it writes its build file (a
    # build that started would have, 10 s after load() was called)
    plain = python(PLAIN_LOAD, {**env, "TORCH_EXTENSIONS_DIR": root})
    assert any(line.strip() == "loading" for line in iter(plain.stdout.readline, ""))
    with pytest.raises(subprocess.TimeoutExpired):
        plain.communicate(timeout=10)
    assert not (extensions / "deepspeed_shm_comm" / "build.ninja").exists()
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
    assert [path.name for path in (tmp_path / "cache" / "torch_extensions").iterdir()] == [extensions.name]


def test_each_environment_builds_into_its_own_folder(tmp_path, monkeypatch):
    """Two virtual environments of one user must not share builds (each would rebuild the other's at every
    launch); one reached through a link is the same environment; a set TORCH_EXTENSIONS_DIR is kept."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    (tmp_path / "env-a").mkdir()
    (tmp_path / "env-b").mkdir()
    (tmp_path / "link-to-a").symlink_to(tmp_path / "env-a")
    roots = {}
    for name in ("env-a", "env-b", "link-to-a"):
        monkeypatch.setattr(sys, "prefix", str(tmp_path / name))
        roots[name] = jit_ops.environment_build_root()
    assert roots["env-a"] != roots["env-b"]
    assert roots["env-a"] == roots["link-to-a"]
    assert roots["env-a"].parent == tmp_path / "torch_extensions"

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", "")  # recorded, so the value set below is undone after the test
    monkeypatch.delenv("TORCH_EXTENSIONS_DIR")
    jit_ops.use_environment_build_root()
    assert os.environ["TORCH_EXTENSIONS_DIR"] == str(roots["link-to-a"])
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", "/somewhere/chosen")
    jit_ops.use_environment_build_root()
    assert os.environ["TORCH_EXTENSIONS_DIR"] == "/somewhere/chosen"


def test_without_flock_a_lock_file_is_left_to_whoever_holds_it(tmp_path, monkeypatch):
    """On a file system without flock (Lustre's noflock, NFS nolock) nothing says a torch lock file is a dead
    build's: it may be a live build's on another node. _exclusive says it holds no lock, and load_op removes a
    leftover only while it holds one."""
    import errno

    def no_flock(handle, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    with jit_ops._exclusive(tmp_path / "a.flock", "op") as locked:
        assert locked
    monkeypatch.setattr(jit_ops.fcntl, "flock", no_flock)
    with jit_ops._exclusive(tmp_path / "b.flock", "op") as locked:
        assert not locked
