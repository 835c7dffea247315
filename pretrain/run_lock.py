"""One run per run dir: ``RUN_DIR/LOCK`` names the host, pid and Slurm job that hold it, with a heartbeat.

A second launch on a run dir that a live run uses is refused at once, naming the holder. A lock left
by a dead run never blocks the next one:
  - on the same host, the holder's pid (and its start time, against pid reuse) is checked directly;
  - a lock of the same Slurm job (a requeued job, restarted on other nodes) is taken over;
  - on another host, the holder rewrites its heartbeat every ``HEARTBEAT_S``; a lock whose heartbeat
    is older than ``STALE_S`` belongs to a dead run.
The lock is created with ``os.link`` of a private file, which is atomic on NFS and Lustre as well as
on local disks, so two launches on two nodes cannot both win; whether the link was made is read from
the private file's link count, not from ``link``'s answer, which an NFS retry can get wrong.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger(__name__)
HEARTBEAT_S = 10.0
STALE_S = 60.0


class RunDirInUse(RuntimeError):
    """Another live run holds the run dir."""


@dataclass(frozen=True)
class Holder:
    host: str
    pid: int
    pid_start: str  # the process's start time in clock ticks (/proc/PID/stat), against pid reuse
    job: str | None
    token: str
    started: float
    heartbeat: float
    command: str

    @classmethod
    def me(cls) -> Holder:
        now = time.time()
        return cls(socket.gethostname(), os.getpid(), _start_time(os.getpid()), os.environ.get("SLURM_JOB_ID"),
                   uuid.uuid4().hex, now, now, " ".join(sys.argv)[:300])

    def describe(self) -> str:
        job = f", Slurm job {self.job}" if self.job else ""
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
        return f"host {self.host}, pid {self.pid}{job}, started {started}"


class RunLock:
    """Held by rank 0 from the start of a launch to its end; ``release()`` is idempotent."""

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.path = Path(run_dir) / "LOCK"
        self.holder = Holder.me()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(20):  # each pass either wins, refuses, or clears a dead run's lock and tries again
            if self._create():
                self._thread = threading.Thread(target=self._beat, name="run-lock-heartbeat", daemon=True)
                self._thread.start()
                return self
            other = read_holder(self.path)
            if other is None:  # being written or removed right now
                time.sleep(0.1)
                continue
            dead = why_dead(other)
            if dead is None:
                age = time.time() - other.heartbeat
                raise RunDirInUse(
                    f"{self.path.parent} is in use by another run ({other.describe()}; last heartbeat {age:.0f} s ago): "
                    f"wait for it to end or stop it (touch {self.path.parent}/STOP), or choose another run.dir. If that "
                    f"run is dead, its lock expires {STALE_S:.0f} s after its last heartbeat; to go on at once, "
                    f"delete {self.path}.")
            self._clear_dead(other, dead)
        raise RunDirInUse(f"could not take {self.path}: other launches keep taking it")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
            current = read_holder(self.path)
            if current is not None and current.token == self.holder.token:
                self.path.unlink(missing_ok=True)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def _create(self) -> bool:
        private = self.path.with_name(f"LOCK.{self.holder.host}.{self.holder.pid}.{self.holder.token[:8]}")
        private.write_text(json.dumps(asdict(self.holder)))
        try:
            os.link(private, self.path)
            return True
        except OSError as exc:
            # NFS: when the reply to a link is lost, the client retries it, and the retry reports EEXIST (or
            # another error) although the first attempt made the link. The private file's link count tells:
            # 2 means LOCK is that file, so the lock is ours (the recipe of open(2) under O_EXCL).
            if os.stat(private).st_nlink == 2:
                return True
            if isinstance(exc, FileExistsError):
                return False
            raise
        finally:
            private.unlink(missing_ok=True)

    def _clear_dead(self, other: Holder, why: str) -> None:
        """Move the dead run's lock away, unless another launch replaced it meanwhile."""
        moved = self.path.with_name(f"LOCK.dead.{self.holder.token[:8]}")
        try:
            os.rename(self.path, moved)
        except FileNotFoundError:
            return  # another launch cleared it first
        taken = read_holder(moved)
        if taken is not None and taken.token != other.token:  # a live launch's fresh lock: put it back
            os.link(moved, self.path)
            moved.unlink(missing_ok=True)
            return
        moved.unlink(missing_ok=True)
        log.warning("took over %s from a run that is gone (%s; %s)", self.path, other.describe(), why)

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            current = read_holder(self.path)
            if current is None or current.token != self.holder.token:
                log.error("%s was taken over by another launch (%s): this run no longer holds its run dir",
                          self.path, current.describe() if current else "removed")
                return
            beat = json.dumps({**asdict(self.holder), "heartbeat": time.time()})
            temp = self.path.with_name(f"LOCK.beat.{self.holder.token[:8]}")
            try:
                temp.write_text(beat)
                os.replace(temp, self.path)
            except OSError as exc:  # a full disk must not kill the run; the lock just ages
                log.warning("could not refresh %s: %s", self.path, exc)


def read_holder(path: Path) -> Holder | None:
    try:
        return Holder(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def may_be_alive(holder: Holder) -> bool:
    """Whether the holder may still be running: on this host, its process; on another, its heartbeat's age."""
    if holder.host == socket.gethostname():
        return _start_time(holder.pid) == holder.pid_start
    return time.time() - holder.heartbeat <= STALE_S


def why_dead(holder: Holder) -> str | None:
    """Why the holder is surely gone, or None if it may be alive."""
    if holder.host == socket.gethostname():
        return None if may_be_alive(holder) else f"process {holder.pid} is gone"
    if holder.job and holder.job == os.environ.get("SLURM_JOB_ID"):
        return f"an earlier launch of this Slurm job {holder.job}"
    age = time.time() - holder.heartbeat
    return f"no heartbeat for {age:.0f} s" if age > STALE_S else None


def _start_time(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""
