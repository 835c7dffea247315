"""Stamps: what a stage last ran with, so that a rerun skips what is up to date.

``WORKDIR/.pipeline/STAGE.json`` holds the hash of the stage's settings (and the settings, to say what
changed), its state, and the size and modification time of every input and output file. A stage is up to
date when its stamp is ``complete``, the settings hash is the same, and every input and output file still
has the size and time recorded. The stamp becomes ``complete`` only after the stage's command exited 0
and its outputs were checked: an interrupted or failed stage is never up to date.

States: ``running`` (a local run started), ``submitted`` (Slurm jobs, with their ids), ``complete``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import fnmatch
import glob
import hashlib
import json
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pretrain.atomic import atomic_write_text

Snapshot = dict[str, list[int]]  # path -> [size, mtime_ns]


def settings_hash(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode("utf-8")).hexdigest()[:16]


def files_of(specs: list[str]) -> list[str]:
    """The files named by ``specs`` (files, globs, folders walked recursively), sorted; missing ones are left out."""
    found: set[str] = set()
    for spec in specs:
        if glob.has_magic(spec):
            found.update(p for p in glob.glob(spec, recursive=True) if os.path.isfile(p))
        elif os.path.isdir(spec):
            for root, _, names in os.walk(spec):
                found.update(os.path.join(root, n) for n in names)
        elif os.path.isfile(spec):
            found.add(spec)
    return sorted(found)


def snapshot(specs: list[str]) -> Snapshot:
    """Size and modification time of each file ``specs`` name."""
    out: Snapshot = {}
    for path in files_of(specs):
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            continue
        out[path] = [stat.st_size, stat.st_mtime_ns]
    return out


def covered(path: str, specs: list[str]) -> bool:
    """Whether ``specs`` (files, globs, folders) name ``path``, whether or not it exists."""
    return any(fnmatch.fnmatchcase(path, spec) if glob.has_magic(spec) else
               path == spec or path.startswith(spec.rstrip(os.sep) + os.sep) for spec in specs)


def changed(recorded: Snapshot, specs: list[str]) -> str | None:
    """What differs between ``recorded`` and the files ``specs`` name now (None: nothing). A recorded file the
    specs no longer name (a stamp written when a stage listed more) is not looked at."""
    now = snapshot(specs)
    for path, (size, mtime) in recorded.items():
        if not covered(path, specs):
            continue
        if path not in now:
            return f"{path} is gone"
        if now[path] != [size, mtime]:
            return f"{path} changed (size {size:,} -> {now[path][0]:,}" + (
                ", modified since)" if now[path][0] == size else ")")
    extra = sorted(set(now) - set(recorded))
    if extra:
        return f"{extra[0]} is new" + (f" (and {len(extra) - 1} more files)" if len(extra) > 1 else "")
    return None


@dataclass
class Stamp:
    stage: str
    hash: str
    settings: dict
    state: str
    """running, submitted or complete."""
    inputs: list[str] = field(default_factory=list)
    """The input specs (files, globs, folders)."""
    outputs: list[str] = field(default_factory=list)
    """The output specs."""
    input_files: Snapshot = field(default_factory=dict)
    output_files: Snapshot = field(default_factory=dict)
    jobs: list[str] = field(default_factory=list)
    """Slurm job ids, the stage's last job last."""
    layout: dict = field(default_factory=dict)
    """The workdir's layout (pretrain.pipeline.stages.Layout's fields), to check the outputs when recording."""
    time: float = 0.0

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.time = time.time()
        atomic_write_text(path, json.dumps(self.__dict__, indent=1, ensure_ascii=False, sort_keys=True) + "\n")

    def moved_to(self, workdir: Path) -> Stamp:
        """This stamp with the paths under the workdir it recorded put under ``workdir``: a workdir moved
        (``mv``, which keeps file times) is the same work, not all of it changed."""
        old, new = self.layout.get("workdir"), str(workdir)
        if not old or old == new:
            return self

        def move(value):
            if isinstance(value, str) and (value == old or value.startswith(old + os.sep)):
                return new + value[len(old):]
            return [move(item) for item in value] if isinstance(value, list) else value

        return dataclasses.replace(
            self, settings={k: move(v) for k, v in self.settings.items()},
            input_files={move(p): v for p, v in self.input_files.items()},
            output_files={move(p): v for p, v in self.output_files.items()},
            layout={**self.layout, "workdir": new})

    @classmethod
    def read(cls, path: Path) -> Stamp | None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(**data)
        except FileNotFoundError:
            return None
        except (ValueError, TypeError) as exc:  # edited by hand, or a disk's fault: stamps are written atomically
            raise DamagedStamp(
                f"{path} cannot be read ({str(exc).splitlines()[0][:200]}), so whether its stage completed is not "
                "known: delete the file to run that stage and every later one again (a training run is then set "
                "aside as run.replaced-TIME, never deleted)") from None


def settings_diff(old: dict, new: dict, limit: int = 3) -> str:
    """``key: old -> new`` for the settings that differ (the first ``limit`` of them)."""
    keys = sorted(set(old) | set(new))
    diffs = [f"{k}: {_short(old.get(k, '(unset)'))} -> {_short(new.get(k, '(unset)'))}" for k in keys
             if old.get(k) != new.get(k)]
    more = f" (and {len(diffs) - limit} more)" if len(diffs) > limit else ""
    return "; ".join(diffs[:limit]) + more


def _short(value) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str) if not isinstance(value, str) else value
    return text if len(text) <= 80 else text[:77] + "..."


class DamagedStamp(Exception):
    """A stamp that cannot be read: the pipeline stops instead of guessing whether its stage completed."""


class WorkdirInUse(Exception):
    """Another pretrain-pipeline is running stages or submitting jobs in the same workdir."""


@contextlib.contextmanager
def workdir_lock(stamps: Path) -> Iterator[None]:
    """Hold ``stamps/LOCK`` (flock, dropped by the kernel when its holder dies) while stages run or are
    submitted: two pipelines in one workdir would overwrite each other's outputs and stamps."""
    stamps.mkdir(parents=True, exist_ok=True)
    with open(stamps / "LOCK", "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "a process"
            raise WorkdirInUse(f"{stamps.parent} is in use by another pretrain-pipeline ({holder}): wait for it to "
                               "end, or stop it") from None
        handle.truncate(0)
        handle.write(f"host {socket.gethostname()}, pid {os.getpid()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        handle.flush()
        yield
