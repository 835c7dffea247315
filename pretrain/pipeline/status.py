"""Which stages run: each stage's stamp against its plan, in order; a stage that runs makes every later
stage run too. Also the recording of a finished stage (locally, and by the last Slurm job of a stage)."""

from __future__ import annotations

import dataclasses
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pretrain.pipeline.stages import Layout, StagePlan, stage_named
from pretrain.pipeline.stamps import Stamp, changed, files_of, settings_diff, settings_hash, snapshot

UP_TO_DATE, RUN, IN_FLIGHT, USE = "up to date", "run", "in flight", "use as is"
ALIVE = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "SUSPENDED",
         "RESIZING", "SIGNALING", "STAGE_OUT"}


class PipelineError(Exception):
    """A state of the workdir the pipeline cannot go on from; the message says what to do."""


@dataclass
class Status:
    plan: StagePlan
    stamp: Stamp | None
    action: str
    """up to date, run, in flight (its Slurm jobs are queued or running), use as is (before --from)."""
    reason: str
    replace: bool = False
    """Clear the previous outputs first (a training run is set aside) instead of resuming them."""

    @property
    def hash(self) -> str:
        return settings_hash(self.plan.settings)


def stamp_path(layout: Layout, stage: str) -> Path:
    return layout.stamps / f"{stage}.json"


def jobs_alive(jobs: list[str]) -> bool:
    """Whether the last of ``jobs`` is still queued or running (squeue; False where there is none)."""
    if not jobs:
        return False
    try:
        out = subprocess.run(["squeue", "-h", "-o", "%T", "-j", jobs[-1]], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return any(state in ALIVE for state in out.stdout.split())


def decide(plans: list[StagePlan], layout: Layout, start: str | None = None, until: str | None = None,
           alive: Callable[[list[str]], bool] = jobs_alive) -> list[Status]:
    """The status of each stage from the first to ``until``; stages before ``start`` are used as they are."""
    names = [p.name for p in plans]
    for option, value in (("--from", start), ("--until", until)):
        if value is not None and value not in names:
            raise PipelineError(f"{option} {value}: this recipe's stages are {', '.join(names)}")
    if start and until and names.index(until) < names.index(start):
        raise PipelineError(f"--until {until} comes before --from {start}")
    statuses: list[Status] = []
    forced = None
    for plan in plans:
        stamp = Stamp.read(stamp_path(layout, plan.name))
        stamp = stamp.moved_to(layout.workdir) if stamp is not None else None
        if start and names.index(plan.name) < names.index(start):
            statuses.append(_before_start(plan, stamp, layout, start))
        else:
            if plan.name == start:
                forced = f"--from {start}"
            status = _status(plan, stamp, layout, forced, alive)
            statuses.append(status)
            if status.action == RUN and forced is None:
                forced = f"{plan.name} runs before it"
        if plan.name == until:
            break
    return statuses


def settings_changed(stamp: Stamp, plan: StagePlan) -> list[str]:
    """The settings that differ between the stamp and the plan, those that only change how it runs left out."""
    keys = (set(stamp.settings) | set(plan.settings)) - plan.run_only
    return sorted(k for k in keys if stamp.settings.get(k) != plan.settings.get(k))


def _grew(old, new) -> bool:
    """A number past the old one (more steps than the run has: it goes on); anything else makes the outputs
    stale (a run cannot resume past its own end)."""
    numbers = (int, float)
    return isinstance(old, numbers) and isinstance(new, numbers) and not isinstance(old, bool) and new > old


def _diff(stamp: Stamp, plan: StagePlan) -> str:
    return settings_diff({k: v for k, v in stamp.settings.items() if k not in plan.run_only}, plan.settings)


def _status(plan: StagePlan, stamp: Stamp | None, layout: Layout, forced: str | None,
            alive: Callable[[list[str]], bool]) -> Status:
    if stamp is not None and stamp.state == "submitted" and alive(stamp.jobs):
        if settings_changed(stamp, plan):
            raise PipelineError(f"{plan.name}: its Slurm jobs {', '.join(stamp.jobs)} are still queued or running with "
                                f"other settings ({_diff(stamp, plan)}): wait for them or "
                                f"scancel {' '.join(stamp.jobs)}, then run again")
        if forced is None:
            return Status(plan, stamp, IN_FLIGHT, f"jobs {', '.join(stamp.jobs)} are queued or running")
        raise PipelineError(f"{plan.name} would run again ({forced}) while its Slurm jobs {', '.join(stamp.jobs)} are "
                            f"queued or running: wait for them or scancel {' '.join(stamp.jobs)}")
    if forced is not None:
        return Status(plan, stamp, RUN, forced, replace=True)
    if stamp is None:
        return Status(plan, stamp, RUN, "no record of an earlier run", replace=True)
    differing = settings_changed(stamp, plan)
    goes_on = all(k in plan.continued_by and _grew(stamp.settings.get(k) if plan.reached is None else plan.reached,
                                                    plan.settings.get(k)) for k in differing)
    if differing and not goes_on:
        return Status(plan, stamp, RUN, f"settings changed: {_diff(stamp, plan)}", replace=True)
    resumes = plan.replace == "set aside"  # a training run goes on from its newest checkpoint
    if stamp.state != "complete":
        what = "its Slurm jobs ended before it completed" if stamp.state == "submitted" else \
            "it was interrupted or failed before it completed"
        moved = stamp.input_files and changed(stamp.input_files, plan.inputs)
        if moved:
            return Status(plan, stamp, RUN, f"{what}, and its input changed since: {moved}", replace=True)
        return Status(plan, stamp, RUN, f"{what}: {'the run resumes' if resumes else 'it runs again'}")
    why = changed(stamp.input_files, plan.inputs)
    if why:
        return Status(plan, stamp, RUN, f"input changed: {why}", replace=True)
    if differing:
        return Status(plan, stamp, RUN, f"settings changed: {_diff(stamp, plan)}: the run goes on from its newest "
                                        "checkpoint, its learning-rate schedule recomputed for the new length")
    why = changed(stamp.output_files, plan.outputs) or stage_named(plan.name).incomplete(layout)
    if why:  # a training run's own files touched by hand: it resumes from its newest complete checkpoint
        return Status(plan, stamp, RUN, f"output changed: {why}" + (": the run resumes" if resumes else ""),
                      replace=not resumes)
    return Status(plan, stamp, UP_TO_DATE, f"completed {time.strftime('%Y-%m-%d %H:%M', time.localtime(stamp.time))}")


def _before_start(plan: StagePlan, stamp: Stamp | None, layout: Layout, start: str) -> Status:
    incomplete = stage_named(plan.name).incomplete(layout)
    if stamp is None or stamp.state != "complete" or incomplete:
        raise PipelineError(f"--from {start} uses the outputs of {plan.name}, which has not completed"
                            f"{f' ({incomplete})' if incomplete else ''}: run without --from (or --from {plan.name})")
    why = (f"settings changed ({_diff(stamp, plan)})" if settings_changed(stamp, plan)
           else changed(stamp.input_files, plan.inputs) or changed(stamp.output_files, plan.outputs))
    note = f"out of date ({why}) but --from {start} uses it as it is" if why else "up to date"
    return Status(plan, stamp, USE, note)


def check_inputs(statuses: list[Status], raw_inputs: list[str]) -> None:
    """Refuse before anything runs where a stage that will run reads a recipe input that matches no file (else
    it is found hours later, or after a Slurm queue)."""
    absent = [spec for spec in raw_inputs if not files_of([spec])]
    readers = [s.plan.name for s in statuses if s.action == RUN and set(raw_inputs) & set(s.plan.inputs)]
    if absent and readers:
        more = f" (nor do {len(absent) - 1} more)" if len(absent) > 1 else ""
        raise PipelineError(f"input.paths: {absent[0]} matches no file{more}, and the {readers[0]} stage reads it: "
                            f"check the path (a relative one is taken from the current directory, {Path.cwd()})")


def new_stamp(status: Status, layout: Layout, state: str, jobs: list[str] | None = None) -> Stamp:
    plan = status.plan
    return Stamp(stage=plan.name, hash=status.hash, settings=plan.settings, state=state, inputs=plan.inputs,
                 outputs=plan.outputs, input_files=snapshot(plan.inputs) if state == "running" else {},
                 jobs=jobs or [], layout={"workdir": str(layout.workdir), "key": layout.key, "level": layout.level})


def record(path: Path, expect_hash: str | None = None) -> Stamp:
    """Mark the stage of the stamp at ``path`` complete once its outputs are: its inputs (unless recorded
    when it started) and outputs snapshotted. Raises PipelineError when the outputs are not complete."""
    stamp = Stamp.read(path)
    if stamp is None:
        raise PipelineError(f"{path}: no stamp to complete (was the workdir removed?)")
    if expect_hash and stamp.hash != expect_hash:
        raise PipelineError(f"{path}: a newer submission (settings {stamp.hash}) replaced the one this job belongs to "
                            f"({expect_hash}); not recording it")
    fields = {f.name for f in dataclasses.fields(Layout)}
    layout = Layout(**{k: (Path(v) if k == "workdir" else v) for k, v in stamp.layout.items() if k in fields})
    why = stage_named(stamp.stage).incomplete(layout)
    if why:
        raise PipelineError(f"{stamp.stage} did not complete: {why}")
    if not stamp.input_files:
        stamp.input_files = snapshot(stamp.inputs)
    stamp.output_files = snapshot(stamp.outputs)
    stamp.state = "complete"
    stamp.write(path)
    return stamp
