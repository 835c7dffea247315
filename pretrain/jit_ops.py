"""Load DeepSpeed's just-in-time built C++ ops without inheriting a hang from a build that was killed.

torch builds an extension while holding a ``lock`` file in its build folder and deletes the file when
done; every other process that wants the op waits, with no timeout and no message, until the file is
gone. A build killed midway (a preempted Slurm job, Ctrl-C, a test's timeout) leaves the file behind,
and from then on every run on that machine hangs at start-up. DeepSpeed loads such an op in every run:
its shared-memory all-reduce on CPUs, FusedAdam/FusedLamb on GPUs, CPU Adam when offloading.

Here each build runs under a kernel lock (``flock``), which the kernel drops when its holder dies. A
process that holds it knows no other cooperating builder is alive, so a ``lock`` file it finds is a
leftover: it removes it, says so, and builds. DeepSpeed caches loaded ops per process, so its own later
``load()`` of the same op returns the module loaded here.

Each Python environment builds into its own folder. torch's default, one folder per Python and CUDA
version under ``~/.cache/torch_extensions``, is shared by every virtual environment of a user (on a
cluster, by every node through the shared home): a launch from one environment finds the op built with
the other's DeepSpeed sources and builds it again, and the next launch from the other does the same
(25-70 s per launch on CPU, a few minutes for FusedAdam). ``TORCH_EXTENSIONS_DIR``, where set, is kept.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

log = logging.getLogger(__name__)


def load_op(builder_name: str) -> ModuleType | None:
    """Build if needed and load DeepSpeed's op ``builder_name`` (e.g. "FusedAdamBuilder").

    None when this accelerator has no such op or it cannot be built here (DeepSpeed's own compatibility
    check); build errors are raised as DeepSpeed raises them.
    """
    use_environment_build_root()
    import deepspeed.ops
    from deepspeed.accelerator import get_accelerator
    from deepspeed.git_version_info import installed_ops
    from torch.utils.cpp_extension import _get_build_directory

    builder = get_accelerator().create_op_builder(builder_name)
    if builder is None or not deepspeed.ops.__compatible_ops__.get(builder.NAME, False):
        return None
    if installed_ops.get(builder.NAME, False):
        return builder.load(verbose=False)  # compiled when DeepSpeed was installed: no build, no lock
    build_dir = Path(_get_build_directory(builder.NAME, verbose=False))
    with _exclusive(build_dir / "pretrain-build.flock", builder.NAME) as locked:
        leftover = build_dir / "lock"
        if leftover.exists() and locked:  # unlocked, it may be a live build's (another node's): torch waits for it
            log.warning("removing %s, left by a build of %s that was killed (torch would wait for it forever)",
                        leftover, builder.NAME)
            leftover.unlink(missing_ok=True)
        return builder.load(verbose=False)


def use_environment_build_root() -> None:
    """Point ``TORCH_EXTENSIONS_DIR`` at this environment's folder, unless it is set; children inherit it, so
    DeepSpeed's own later builds (and every rank this process starts) use the same folder."""
    if not os.environ.get("TORCH_EXTENSIONS_DIR"):
        os.environ["TORCH_EXTENSIONS_DIR"] = str(environment_build_root())


def environment_build_root() -> Path:
    """``<torch's default root>/py311-torch2.13.0+cpu-<hash of this environment's path>``: the environment's
    resolved path tells two virtual environments apart (torch's version is there for the reader)."""
    import torch
    from torch.utils.cpp_extension import get_default_build_root

    environment = os.path.realpath(sys.prefix)
    digest = hashlib.sha256(environment.encode()).hexdigest()[:12]
    python = f"py{sys.version_info.major}{sys.version_info.minor}{getattr(sys, 'abiflags', '')}"
    return Path(get_default_build_root()) / f"{python}-torch{torch.__version__}-{digest}"


def prebuilt(builder_name: str) -> bool:
    """Whether DeepSpeed was installed with op ``builder_name`` compiled (loading it then builds nothing)."""
    from deepspeed.accelerator import get_accelerator
    from deepspeed.git_version_info import installed_ops

    builder = get_accelerator().create_op_builder(builder_name)
    return builder is not None and bool(installed_ops.get(builder.NAME, False))


@contextmanager
def _exclusive(path: Path, what: str) -> Iterator[bool]:
    """Hold an exclusive flock on ``path`` (closing the file drops it): True. Without flock support, go on
    unlocked: False."""
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another process that is building or loading %s", what)
            fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError as exc:  # e.g. a network filesystem mounted without lock support
            log.warning("cannot lock %s (%s); building %s without protection from a killed build (a torch lock "
                        "file left by one is not removed: delete it by hand if no build is running)", path, exc, what)
            yield False
            return
        yield True
