"""pretrain-pipeline --slurm on the two-node test cluster (tests/test_slurm.py's): every stage as its jobs
(array jobs for cleaning and preprocessing, then dedup and merge, training, export) chained with afterok; a
rerun while they are queued submits nothing; a failed job cancels the ones after it and a rerun submits only
the stages that did not complete; the last job of each stage records it. Root only, like test_slurm.py."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from pretrain.pipeline.stamps import Stamp
from tests.conftest import ROOT, grown_documents, write_jsonl
from tests.distributed import train_env
from tests.test_slurm import cluster, job_state, wait  # noqa: F401 - the cluster fixture, shared

pytestmark = pytest.mark.slow

RECIPE = """\
name: slurmtest
input:
  paths: ["CORPUS"]
clean:
  shards: 2
tokenizer:
  vocab_size: 500
preprocess:
  shards: 2
train:
  config: tiny_clm
  overrides: [train.steps=4, train.eval_interval=2, train.eval_samples=8, train.log_interval=1, train.save_interval=4,
              optim.warmup_steps=1, "data.split=80,20,0"]
  sbatch: [-N2, --ntasks-per-node=1]
export: {}
"""


def submit(recipe, work, *args: str) -> tuple[str, list[tuple[str, str, str]]]:
    """The pipeline's output and the jobs it submitted: (stage, what, job id)."""
    proc = subprocess.run([sys.executable, "-m", "pretrain.cli.pipeline", str(recipe), "--workdir", str(work), *args],
                          cwd=ROOT, capture_output=True, text=True, env={**train_env(), "PRETRAIN_DEVICE": "cpu"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout, re.findall(r"^    (\w+) (.+?): job (\d+)$", proc.stdout, re.MULTILINE)


def state(work, stage: str) -> str | None:
    stamp = Stamp.read(work / ".pipeline" / f"{stage}.json")
    return stamp.state if stamp else None


def test_pipeline_as_slurm_jobs_chained_and_resubmitting_only_what_did_not_complete(cluster, tmp_path):  # noqa: F811
    corpus = write_jsonl(tmp_path / "corpus.jsonl", grown_documents(count=300, seed=11))
    recipe, work = tmp_path / "recipe.yaml", tmp_path / "work"
    recipe.write_text(RECIPE.replace("CORPUS", str(corpus)))
    options = ("--slurm", "--cpus-per-task=1")

    # a batch that does not divide by the 2 ranks: training fails at start-up, the export is cancelled
    out, jobs = submit(recipe, work, "train.global_batch=12", "train.micro_batch=4", *options)
    assert [(stage, what.split(" (")[0]) for stage, what, _ in jobs] == [
        ("clean", "filter array"), ("clean", "dedup"), ("tokenizer", "job"), ("preprocess", "array"),
        ("preprocess", "merge"), ("train", "job"), ("export", "job")], out
    ids = [job for _, _, job in jobs]
    assert f"squeue -j {','.join(ids)}" in out and f"{work / 'logs'}/export-{ids[-1]}.out" in out
    for before, after in zip(ids, ids[1:]):
        assert job_state(after)["Dependency"].startswith(f"afterok:{before}"), job_state(after)

    out, again = submit(recipe, work, "train.global_batch=12", "train.micro_batch=4", *options)  # while queued
    assert again == [] and "nothing to submit" in out and out.count(": in flight (jobs") == 5, out

    assert wait(ids[5])["JobState"] == "FAILED"
    assert "train.global_batch=12 is not a multiple" in (work / "logs" / f"train-{ids[5]}.out").read_text()
    wait(ids[6])
    assert job_state(ids[6]).get("JobState") in (None, "CANCELLED"), job_state(ids[6])
    assert [state(work, s) for s in ("clean", "tokenizer", "preprocess", "train", "export")] == \
        ["complete", "complete", "complete", "submitted", "submitted"]

    out, jobs = submit(recipe, work, *options)  # fixed: only training and export are submitted
    assert [stage for stage, _, _ in jobs] == ["train", "export"], out
    assert "--- clean: up to date" in out and "settings changed: train.global_batch: 12 -> 16" in out
    assert job_state(jobs[0][2])["Dependency"] in ("(null)", ""), "nothing to wait for: the data stages are done"
    assert wait(jobs[1][2])["JobState"] == "COMPLETED", (work / "logs" / f"train-{jobs[0][2]}.out").read_text()[-3000:]
    assert all(state(work, s) == "complete" for s in ("train", "export"))
    assert (work / "hf" / "model.safetensors").exists() and (work / "data" / "corpus_text_document.idx").exists()

    out, jobs = submit(recipe, work, *options)
    assert jobs == [] and out.count("up to date (completed") == 5
    out, _ = submit(recipe, work, "--dry-run", "train.steps=5", *options)
    assert re.findall(r"^=== (\w+): would be submitted", out, re.MULTILINE) == ["train", "export"]
    assert "'--dependency=afterok:<train job>'" in out

    for path in (work / "hf").iterdir():  # an output gone: only its stage is submitted
        path.unlink()
    out, jobs = submit(recipe, work, *options)
    assert [stage for stage, _, _ in jobs] == ["export"] and "output changed" in out
    assert wait(jobs[0][2])["JobState"] == "COMPLETED" and state(work, "export") == "complete"
