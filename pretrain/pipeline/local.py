"""Run the stages that are not up to date on this machine, one command after the other.

Before a stage runs its stamp says ``running`` (with its inputs as they are then); only after its
commands exited 0 and its outputs were checked does it say ``complete``. The commands publish their
outputs atomically, so an interrupted stage leaves its previous outputs or none, and never a stamp that
calls it done.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from pretrain.pipeline.stages import Command, Layout, remove_stale
from pretrain.pipeline.status import IN_FLIGHT, RUN, PipelineError, Status, new_stamp, record, stamp_path

STOPPED = 75
INTERRUPTED = 130


def run_stages(statuses: list[Status], layout: Layout, dry_run: bool = False) -> int:
    """Run (or with ``dry_run`` show) the stages; returns 0, or the exit code of the command that failed."""
    flying = next((s for s in statuses if s.action == IN_FLIGHT), None)
    if flying is not None and any(s.action == RUN for s in statuses[statuses.index(flying):]):
        jobs = " ".join(flying.stamp.jobs)
        raise PipelineError(f"{flying.plan.name} is still running under Slurm (jobs {jobs}) and the stages after it "
                            f"read its outputs: wait for its jobs (squeue -j {jobs.replace(' ', ',')}), or queue the "
                            "rest after them with --slurm")
    for status in statuses:
        plan = status.plan
        if status.action != RUN:
            print(f"--- {plan.name}: {status.action} ({status.reason})" if status.action != "use as is" else
                  f"--- {plan.name}: {status.reason}", flush=True)
            continue
        print(f"\n=== {plan.name}: {'would run' if dry_run else 'runs'} ({status.reason})", flush=True)
        if dry_run:
            for command in plan.commands:
                print(f"$ {command}")
            continue
        if status.replace:
            note = remove_stale(plan)
            if note:
                print(note, flush=True)
        path = stamp_path(layout, plan.name)
        new_stamp(status, layout, "running").write(path)
        started = time.perf_counter()
        for command in plan.commands:
            print(f"$ {command}", flush=True)
            try:
                code = run_command(command)
            except CompletedWhenStopped:
                record(path)
                print(f"--- {plan.name}: done (it completed before the stop took effect); interrupted: the later "
                      "stages did not run", flush=True)
                return INTERRUPTED
            if code != 0:
                print(f"\n{plan.name} {'stopped' if code == STOPPED else 'failed'} (exit {code}): {_after_failure(code)}",
                      flush=True)
                return code
        record(path)
        print(f"--- {plan.name}: done in {time.perf_counter() - started:.1f} s", flush=True)
    return 0


def _after_failure(code: int) -> str:
    if code == STOPPED:
        return "training stopped early and saved a checkpoint; run the same command again to resume it"
    if code == 2:
        return "the message above says what to fix; then run the same command again (finished stages are skipped)"
    return "nothing of this stage was recorded as done; run the same command again to retry it"


def run_command(command: Command) -> int:
    """Run ``command``, passing on SIGTERM and Ctrl-C: to most commands as SIGTERM, so that they remove their
    temporary outputs; to a training run as its run.dir/STOP, so that its ranks save a checkpoint and stop
    (exit 75). Signalling a training's launcher instead would end it and leave its ranks running, or make it
    kill them before they saved."""
    if command.stop_file is not None:
        return _run_training(command, Path(command.stop_file))
    proc = subprocess.Popen(command.argv)
    try:
        return proc.wait()
    except KeyboardInterrupt:  # Ctrl-C reached the child too; SIGTERM (turned into this) reached only us
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        raise


class CompletedWhenStopped(Exception):
    """The stage's command completed although a stop was asked for (the run ended before its next stop check):
    the stage is recorded, and the later ones do not run."""


def _run_training(command: Command, stop_file: Path) -> int:
    """The training command in a session of its own (a terminal's Ctrl-C reaches only the pipeline, which asks
    for the stop; so does a SIGHUP from a closed terminal, which the training no longer gets itself); a second
    Ctrl-C or SIGTERM kills it at once."""
    proc = subprocess.Popen(command.argv, start_new_session=True)
    hangup = signal.signal(signal.SIGHUP, _hung_up)
    try:
        try:
            return proc.wait()
        except KeyboardInterrupt:
            stop_file.parent.mkdir(parents=True, exist_ok=True)
            stop_file.touch()
            print(f"\nstopping the training: {stop_file} written; its ranks save a checkpoint within "
                  "train.stop_check_interval steps, then end (Ctrl-C again ends them at once, losing the steps "
                  "since the last checkpoint)", flush=True)
        try:
            code = proc.wait()
        except KeyboardInterrupt:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
        if code == 0:
            raise CompletedWhenStopped
        return code  # 75: stopped and saved; another: its failure, reported as such
    finally:
        signal.signal(signal.SIGHUP, hangup)
        if proc.poll() is not None:  # a stop the run did not take (it ended first) must not stop the next launch
            stop_file.unlink(missing_ok=True)


def _hung_up(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")
