"""The run summary: what a run did and how to go on, printed by rank 0 at the end of every launch (also
when it stops early) and written to ``run.dir/summary.json``.

Figures come from metrics.jsonl (the whole run, resumed launches included) and the trainer's state:
tokens seen, wall time, final and best eval loss and perplexity, mean tokens/s and MFU, the newest
checkpoint, and the commands that resume and export the run.
"""

from __future__ import annotations

import json
import math
import shlex
import sys
from pathlib import Path
from statistics import fmean

from pretrain.atomic import atomic_write_text
from pretrain.metrics import read_metrics


def resume_command(config_file: Path, world_size: int, local_world_size: int, launcher: str) -> str:
    """A command that resumes the run: the run dir's own config.yaml holds every setting, run.dir included."""
    script = Path(sys.argv[0]).resolve() if sys.argv and sys.argv[0].endswith(".py") else None
    train = shlex.quote(str(script)) if script else "-m pretrain.cli.train"
    config = f"--config {shlex.quote(str(config_file))}"
    if world_size == 1:
        return f"python {train} {config}"
    if launcher == "slurm":
        run_dir = shlex.quote(str(config_file.parent))  # train.sbatch's own default would start a new run
        return (f"RUN_DIR={run_dir} sbatch (the job's options) slurm/train.sbatch {config}   (or, inside an "
                f"allocation: srun pretrain-train {config})")
    if launcher == "mpi":
        return f"mpirun -np {world_size} pretrain-train {config}"
    nodes = world_size // max(local_world_size, 1)
    if nodes > 1:
        return f"the same launch command as before (e.g. deepspeed --hostfile HOSTS {train} {config})"
    launch = f"deepspeed --num_gpus {local_world_size}"
    return f"{launch} {train} {config}" if script else f"{launch} --module pretrain.cli.train {config}"


def build_summary(run_dir: Path, *, status: str, step: int, steps: int, tokens_seen: int, wall_seconds: float,
                  launch_seconds: float, checkpoint: str | None, resume: str) -> dict:
    run = read_metrics(run_dir)
    evals = [r for r in run.evals if math.isfinite(r["eval_loss"])]
    timed = [r for r in run.train if "tokens_per_s" in r]
    best = min(evals, key=lambda r: r["eval_loss"]) if evals else None
    final = evals[-1] if evals else None
    return {
        "run_dir": str(run_dir), "status": status, "step": step, "steps": steps, "tokens_seen": tokens_seen,
        "wall_time_s": round(wall_seconds, 1), "this_launch_s": round(launch_seconds, 1),
        "final_train_loss": run.train[-1]["loss"] if run.train else None,
        "final_eval_loss": final["eval_loss"] if final else None, "final_eval_ppl": final["eval_ppl"] if final else None,
        "final_eval_step": final["step"] if final else None,
        "best_eval_loss": best["eval_loss"] if best else None, "best_eval_ppl": best["eval_ppl"] if best else None,
        "best_eval_step": best["step"] if best else None,
        "mean_tokens_per_s": fmean(r["tokens_per_s"] for r in timed) if timed else None,
        "mean_mfu": fmean(r["mfu"] for r in timed) if timed else None,
        "checkpoint": checkpoint,
        "plots": sorted(str(p) for p in (run_dir / "plots").glob("*.png")),
        "resume_command": resume,
        "export_command": f"pretrain-export {shlex.quote(str(run_dir))} {shlex.quote(str(run_dir / 'hf'))}",
    }


def write_summary(run_dir: Path, summary: dict) -> None:
    atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=1) + "\n")


def summary_lines(summary: dict) -> list[str]:
    def number(value, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    hours = summary["wall_time_s"] / 3600
    lines = [
        f"run summary ({summary['status']}): step {summary['step']:,} of {summary['steps']:,}, "
        f"{summary['tokens_seen']:,} tokens seen, {hours:.2f} h of training ({summary['this_launch_s']:,.0f} s this launch)",
        f"  eval loss: final {number(summary['final_eval_loss'], '.4f')} (perplexity "
        f"{number(summary['final_eval_ppl'], '.2f')}, step {number(summary['final_eval_step'], ',')}), best "
        f"{number(summary['best_eval_loss'], '.4f')} (perplexity {number(summary['best_eval_ppl'], '.2f')}, step "
        f"{number(summary['best_eval_step'], ',')})",
        f"  speed: {number(summary['mean_tokens_per_s'], ',.0f')} tokens/s, MFU "
        f"{number(summary['mean_mfu'] and 100 * summary['mean_mfu'], '.2f')}% (means over logged steps)",
        f"  newest checkpoint: {summary['checkpoint'] or 'none'}",
    ]
    if summary["plots"]:
        lines.append(f"  plots: {', '.join(summary['plots'])}")
    lines += [f"  resume: {summary['resume_command']}", f"  export: {summary['export_command']}",
              f"  (this summary: {Path(summary['run_dir']) / 'summary.json'})"]
    return lines
