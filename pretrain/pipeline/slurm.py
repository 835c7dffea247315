"""Submit the stages that are not up to date as Slurm jobs, each after the previous one (``afterok``).

Cleaning and preprocessing are array jobs (slurm/clean.sbatch, slurm/preprocess.sbatch) followed by their
dedup and merge jobs; training is slurm/train.sbatch (its preemption and requeue included); the
tokenizer and the export run through slurm/step.sbatch. The last job of each stage records it complete
(``PIPELINE_STAMP``: slurm/common.sh's ``record_stage``), after checking its outputs. A failed job
cancels the jobs that wait for it (``--kill-on-invalid-dep=yes``); running the pipeline again then
submits only the stages that did not complete, and waits for stages still queued or running.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

from pretrain.pipeline.stages import Job, Layout, remove_stale
from pretrain.pipeline.status import IN_FLIGHT, RUN, PipelineError, Status, new_stamp, stamp_path

REPOSITORY = Path(__file__).resolve().parents[2]


def submit_stages(statuses: list[Status], layout: Layout, name: str, options: list[str], dry_run: bool = False) -> int:
    """Submit (or with ``dry_run`` show) the jobs of every stage that runs; print how to follow them."""
    if not (REPOSITORY / "slurm" / "train.sbatch").exists():
        raise PipelineError(f"--slurm submits the batch scripts in the repository's slurm/ folder, which "
                            f"{REPOSITORY} does not have: run it from a clone of the repository")
    if not dry_run and not shutil.which("sbatch"):
        raise PipelineError("--slurm: sbatch is not on PATH: run it on a Slurm login node")
    waits_for: str | None = None
    submitted: list[tuple[str, str, str]] = []  # (stage, what, job id)
    for status in statuses:
        plan = status.plan
        if status.action == IN_FLIGHT:
            waits_for = status.stamp.jobs[-1]
            print(f"--- {plan.name}: in flight ({status.reason}); what follows waits for job {waits_for}")
            continue
        if status.action != RUN:
            print(f"--- {plan.name}: {status.reason}" if status.action == "use as is" else
                  f"--- {plan.name}: {status.action} ({status.reason})")
            continue
        print(f"\n=== {plan.name}: {'would be submitted' if dry_run else 'submitted'} ({status.reason})", flush=True)
        if not dry_run:
            layout.logs.mkdir(parents=True, exist_ok=True)
            if status.replace:
                note = remove_stale(plan)
                if note:
                    print(note)
        path = stamp_path(layout, plan.name)
        ids = []
        for index, job in enumerate(plan.jobs):
            last = index == len(plan.jobs) - 1
            command = _sbatch(job, plan.name, name, layout, waits_for, [*options, *plan.sbatch])
            env = {**job.env, **({"PIPELINE_STAMP": str(path), "PIPELINE_HASH": status.hash} if last else {})}
            shown = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
            print(f"$ {shown + ' ' if shown else ''}{shlex.join(command)}")
            if dry_run:
                waits_for = f"<{plan.name} {job.what}>"
                continue
            waits_for = _run_sbatch(command, env)
            ids.append(waits_for)
            submitted.append((plan.name, job.what, waits_for))
            print(f"    {plan.name} {job.what}: job {waits_for}", flush=True)
        if not dry_run:
            new_stamp(status, layout, "submitted", ids).write(path)
    if not dry_run:
        _how_to_follow(submitted, layout)
    return 0


def _sbatch(job: Job, stage: str, name: str, layout: Layout, waits_for: str | None, options: list[str]) -> list[str]:
    log = layout.logs / (f"{stage}-%A_%a.out" if job.array else f"{stage}-%j.out")
    command = ["sbatch", "--parsable", f"--job-name={name}-{stage}", f"--output={log}"]
    if waits_for:
        command += [f"--dependency=afterok:{waits_for}", "--kill-on-invalid-dep=yes"]
    if job.array:
        command.append(f"--array=0-{job.array - 1}")
    return [*command, *options, str(REPOSITORY / job.script), *job.args]


def _run_sbatch(command: list[str], env: dict[str, str]) -> str:
    base = {k: v for k, v in os.environ.items() if k not in ("PIPELINE_STAMP", "PIPELINE_HASH")}
    proc = subprocess.run(command, capture_output=True, text=True,
                          env={**base, "PRETRAIN_HOME": str(REPOSITORY), **env})
    if proc.returncode != 0:
        raise PipelineError(f"sbatch refused the job ({proc.stderr.strip() or proc.stdout.strip()}): "
                            f"{shlex.join(command)}")
    return proc.stdout.strip().split(";")[0]


def _how_to_follow(submitted: list[tuple[str, str, str]], layout: Layout) -> None:
    if not submitted:
        print("\nnothing to submit: every stage is up to date or in flight")
        return
    ids = [job for _, _, job in submitted]
    print(f"\nsubmitted {len(ids)} job(s): " + "; ".join(f"{stage} {what} {job}" for stage, what, job in submitted))
    print(f"follow them:  squeue -j {','.join(ids)}")
    print(f"logs:         {layout.logs}/STAGE-JOBID.out, e.g. tail -f {layout.logs}/{submitted[-1][0]}-{ids[-1]}.out")
    print("a failed job cancels those after it; run the same command again to resubmit what did not complete")
