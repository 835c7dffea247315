"""Sample-index arrays cached on disk: built once, by one rank, while the others wait.

An index is a folder of ``.npy`` files named by a hash of everything it depends on (dataset file
identity, split, sequence length, sample count, seed, format version), loaded memory-mapped.

Who builds: ranks race to create ``NAME.lock`` with O_EXCL. On a shared filesystem exactly one
rank in the job wins; on node-local disks one rank per node wins. The builder writes into a
temporary folder and renames it into place (atomic), then drops the lock. Everybody else polls
for the folder, saying every 30 s what it waits for and who holds the lock. A lock left by a dead
process on this host is taken over; a lock from another host is waited on until the timeout.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)
FORMAT_VERSION = 1


class IndexWaitTimeout(RuntimeError):
    pass


def cache_name(key: dict) -> str:
    blob = json.dumps({**key, "format": FORMAT_VERSION}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


def dataset_identity(prefix: str) -> dict:
    """What identifies a dataset's content cheaply: path, sizes and modification times."""
    stats = [os.stat(f"{prefix}{suffix}") for suffix in (".idx", ".bin")]
    return {"prefix": os.path.abspath(prefix), "sizes": [s.st_size for s in stats],
            "mtimes": [s.st_mtime_ns for s in stats]}


def load_or_build(
    cache_dir: str | os.PathLike,
    key: dict,
    build: Callable[[], dict[str, np.ndarray]],
    describe: str,
    may_build: bool = True,
    wait_minutes: float = 120.0,
) -> dict[str, np.ndarray]:
    """The cached arrays for ``key``, building them with ``build()`` if this rank wins the lock."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    name = cache_name(key)
    final, lock = cache_dir / name, cache_dir / f"{name}.lock"
    deadline = time.monotonic() + wait_minutes * 60
    next_note = time.monotonic() + 30
    while not (final / "DONE").exists():
        if may_build and _acquire(lock):
            try:
                if not (final / "DONE").exists():
                    _build_into(final, key, build, describe)
            finally:
                lock.unlink(missing_ok=True)
            break
        if time.monotonic() > deadline:
            raise IndexWaitTimeout(
                f"waited {wait_minutes:g} min for the sample index of {describe} at {final}; "
                f"{_holder(lock)}. If no job is building it, delete {lock} and restart "
                "(data.index_wait_minutes sets the wait).")
        if time.monotonic() > next_note:
            log.info("waiting for the sample index of %s at %s (%s)", describe, final, _holder(lock))
            next_note = time.monotonic() + 30
        time.sleep(0.5)
    return {p.stem: np.load(p, mmap_mode="r").view(np.ndarray) for p in sorted(final.glob("*.npy"))}


def _build_into(final: Path, key: dict, build: Callable[[], dict[str, np.ndarray]], describe: str) -> None:
    started = time.perf_counter()
    arrays = build()
    staging = final.with_name(f"{final.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    for array_name, array in arrays.items():
        np.save(staging / f"{array_name}.npy", np.ascontiguousarray(array))
    (staging / "key.json").write_text(json.dumps(key, indent=1, sort_keys=True))
    (staging / "DONE").write_text("")
    if final.exists():  # a half-published folder without DONE (a crash): replace it
        shutil.rmtree(final)
    os.rename(staging, final)
    log.info("built the sample index of %s in %.2f s -> %s", describe, time.perf_counter() - started, final)


def _acquire(lock: Path) -> bool:
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        if _stale(lock):
            lock.unlink(missing_ok=True)
            return _acquire(lock)
        return False
    with os.fdopen(fd, "w") as handle:
        json.dump({"host": socket.gethostname(), "pid": os.getpid(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}, handle)
    return True


def _read_lock(lock: Path) -> dict | None:
    try:
        return json.loads(lock.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _stale(lock: Path) -> bool:
    """A lock held by a process of this host that no longer exists."""
    holder = _read_lock(lock)
    if not holder or holder.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _holder(lock: Path) -> str:
    holder = _read_lock(lock)
    if holder is None:
        return "no rank holds the build lock yet"
    return f"being built by {holder['host']} pid {holder['pid']} since {holder['since']}"
