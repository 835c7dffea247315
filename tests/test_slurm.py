"""The Slurm scripts on a real Slurm cluster (Debian's slurmctld + two slurmd, node1 and node2, on
this host; CPU mode): every launch path, preemption with requeue, sharded preprocessing, and
start-up failures that say what is wrong. Needs root (it installs and starts the daemons)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_tool, skip_outside_ci
from tests.distributed import metrics, partition_sizes, preprocess, rank_logs, train_env

STEPS = 12
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster():
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        skip_outside_ci("the Slurm test cluster needs root and apt-get (it installs and starts Debian's Slurm)")
    started = subprocess.run(["bash", "tests/slurm/cluster.sh", "start", "2"], cwd=ROOT, capture_output=True, text=True)
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        import mpi4py  # noqa: F401  (the MPI launch path needs it in this environment)
    except ImportError:
        subprocess.run([os.sys.executable, "-m", "pip", "install", "-q", "-c", "constraints.txt", "mpi4py"], cwd=ROOT,
                       check=True)
    yield
    subprocess.run(["bash", "tests/slurm/cluster.sh", "stop"], cwd=ROOT, capture_output=True)


@pytest.fixture(scope="module")
def data(cluster, tmp_path_factory, small_corpus, tokenizer_dir):
    folder = tmp_path_factory.mktemp("slurm")
    preprocess(small_corpus, tokenizer_dir, folder / "d", "--append-eod")
    return {"folder": folder, "prefix": folder / "d_text_document", "tokenizer": tokenizer_dir}


def sbatch(script: str, *args: str, options: tuple[str, ...] = (), env: dict | None = None) -> str:
    proc = subprocess.run(["sbatch", "--parsable", *options, script, *args], cwd=ROOT, capture_output=True, text=True,
                          env={**train_env(), **(env or {})})
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().split(";")[0]


def job_state(job: str) -> dict:
    out = subprocess.run(["scontrol", "show", "job", "-o", job], capture_output=True, text=True).stdout
    return dict(item.split("=", 1) for item in out.split() if "=" in item)


def nodes_idle() -> bool:
    states = subprocess.run(["sinfo", "-h", "-N", "-o", "%t"], capture_output=True, text=True).stdout.split()
    return bool(states) and all(state == "idle" for state in states)


def wait(job: str, timeout: float = 600) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        state = job_state(job)
        if state.get("JobState") in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"):
            return state
        if state.get("JobState") == "PENDING" and state.get("Reason") == "BeginTime" and nodes_idle():
            # Slurm holds a requeued job for a couple of minutes; once its nodes are clean, skip the rest
            time.sleep(3)
            subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], capture_output=True)
        time.sleep(2)
    subprocess.run(["scancel", job])
    raise AssertionError(f"job {job} did not finish in {timeout} s: {job_state(job)}")


def train_job(data, name: str, launcher: str, *overrides: str, env: dict | None = None,
              config: str = "tiny_clm") -> tuple[str, Path, Path]:
    run_dir, log = data["folder"] / f"run-{name}", data["folder"] / f"{name}-%j.out"
    job = sbatch("slurm/train.sbatch", "--config", config, f"data.tokenizer={data['tokenizer']}",
                 f"data.prefixes=[{data['prefix']}]", f"train.steps={STEPS}", "optim.warmup_steps=3",
                 "train.log_interval=1", "data.split=80,20,0", "train.eval_samples=16", "train.eval_interval=6",
                 "train.ds_config=zero3", "train.stop_check_interval=1", *overrides,
                 options=("-N2", "--ntasks-per-node=1", f"--output={log}"),
                 env={"LAUNCHER": launcher, "PRETRAIN_DEVICE": "cpu", "RUN_DIR": str(run_dir), **(env or {})})
    return job, run_dir, Path(str(log).replace("%j", job))


@pytest.fixture(scope="module")
def reference(data):
    """An uninterrupted srun run: the curve every other launch path and the preempted run must match."""
    job, run_dir, log = train_job(data, "srun", "srun")
    state = wait(job)
    return {"state": state, "run_dir": run_dir, "log": log.read_text()}


def test_srun_trains_on_both_nodes_with_zero3_partitions(reference):
    assert reference["state"]["JobState"] == "COMPLETED", reference["log"][-3000:]
    assert "rank 0 on node1 (launcher: slurm)" in reference["log"] and "rank 1 on node2 (launcher: slurm)" in reference["log"]
    sizes = partition_sizes(reference["run_dir"])
    assert set(sizes) == {0, 1} and all(held < total for held, total in sizes.values())
    losses, _ = metrics(reference["run_dir"])
    assert losses[STEPS] < losses[1] - 0.5
    assert (reference["run_dir"] / "checkpoints" / f"step{STEPS:08d}" / "COMPLETE").exists()


@pytest.mark.parametrize("launcher,expected", [("deepspeed", "slurm"), ("mpi", "mpi"), ("torchrun", "env")])
def test_every_launch_path_reaches_the_same_trainer(data, reference, launcher, expected):
    job, run_dir, log = train_job(data, launcher, launcher)
    state = wait(job)
    text = log.read_text()
    assert state["JobState"] == "COMPLETED", text[-3000:]
    assert f"on node1 (launcher: {expected})" in text and f"on node2 (launcher: {expected})" in text
    losses, _ = metrics(run_dir)
    reference_losses, _ = metrics(reference["run_dir"])
    assert losses[STEPS] == pytest.approx(reference_losses[STEPS], rel=1e-5)


def preempted_job(data, name: str, *overrides: str, config: str = "tiny_clm",
                  launcher: str = "srun") -> tuple[dict, Path, str]:
    """A job sent USR1 (what --signal=B:USR1@300 sends) after its third step: (its final state, its run dir, its
    log), once it has checkpointed, requeued and finished."""
    job, run_dir, log = train_job(data, name, launcher, "train.save_interval=100", *overrides, config=config)
    after_three_steps(job, run_dir)
    subprocess.run(["scancel", "--signal=USR1", "--batch", job], check=True)
    state = wait(job)
    return state, run_dir, log.read_text()


def after_three_steps(job: str, run_dir: Path) -> None:
    """Return once the job's run has logged 3 of its steps (and fewer than all)."""
    deadline = time.time() + 300
    while time.time() < deadline:
        done = metrics(run_dir)[0] if (run_dir / "metrics.jsonl").exists() else {}
        if len(done) >= 3:
            break
        time.sleep(0.05)  # a tiny model's 12 steps can take under a second: look often, or the run ends first
    assert len(done) < STEPS, f"job {job} logged {len(done)} of {STEPS} steps before it could be stopped"


def assert_resumed_to_the_same_losses(state: dict, run_dir: Path, text: str, reference_dir: Path) -> None:
    assert state["JobState"] == "COMPLETED" and state.get("Restarts") == "1", text[-3000:]
    assert "requeueing job" in text and "resumed from step" in text
    losses, _ = metrics(run_dir)
    reference_losses, _ = metrics(reference_dir)
    assert sorted(losses) == list(range(1, STEPS + 1))
    for step in range(1, STEPS + 1):
        assert losses[step] == pytest.approx(reference_losses[step], rel=1e-5), step


def test_preemption_checkpoints_requeues_and_resumes_to_the_same_loss(data, reference):
    assert_resumed_to_the_same_losses(*preempted_job(data, "preempt"), reference["run_dir"])


def test_a_stop_asked_for_with_the_stop_file_ends_the_job_without_a_requeue(data):
    """RUN_DIR/STOP (what the run-dir lock's refusal tells a user to touch): the ranks save and stop, and the job
    ends there (exit 75), where a time limit or a preemption requeues it."""
    job, run_dir, log = train_job(data, "userstop", "srun", "train.save_interval=100")
    after_three_steps(job, run_dir)
    (run_dir / "STOP").touch()
    state, text = wait(job), log.read_text()
    assert state["JobState"] == "FAILED" and state["ExitCode"] == "75:0" and state.get("Restarts") == "0", text[-3000:]
    assert "not requeued" in text and "requeueing" not in text
    assert (run_dir / "STOPPED").read_text().startswith("stopped early (run.dir/STOP)")
    assert (run_dir / "checkpoints" / "latest").exists()


def test_preemption_under_the_deepspeed_launcher_checkpoints_and_resumes(data, reference):
    """DeepSpeed's launcher dies of USR1 (its runner handles INT and TERM only), which killed its ranks before they
    saved: the script leaves it alone, and its ranks read RUN_DIR/STOP, save and stop; the requeued job resumes to
    the same losses."""
    state, run_dir, text = preempted_job(data, "preempt-ds", launcher="deepspeed")
    # the job waited for its ranks' checkpoint before requeueing (a killed launcher let the script requeue at once)
    assert "stopping at step" in text and text.index("stopping at step") < text.index("requeueing job"), text[-3000:]
    assert_resumed_to_the_same_losses(state, run_dir, text, reference["run_dir"])


@pytest.mark.parametrize("config", ["tiny_llama", "modernbert_tiny"])
def test_the_new_families_train_on_both_nodes_and_resume_after_preemption(data, config):
    """The Llama-style decoder and the ModernBERT encoder as GPT-2 is run above: across the two nodes under
    ZeRO-3 (partitioned), on packed documents masked from each other (their default), and a preempted job's
    losses after its requeue equal the uninterrupted job's step by step."""
    job, run_dir, log = train_job(data, f"{config}-srun", "srun", config=config)
    state, text = wait(job), log.read_text()
    assert state["JobState"] == "COMPLETED", text[-3000:]
    assert "rank 0 on node1 (launcher: slurm)" in text and "rank 1 on node2 (launcher: slurm)" in text
    sizes = partition_sizes(run_dir)
    assert set(sizes) == {0, 1} and all(held < total for held, total in sizes.values())
    assert "document mask" in rank_logs(run_dir)[0]
    losses, evals = metrics(run_dir)
    assert losses[STEPS] < losses[1] - 0.3 and evals and evals[-1]["step"] == STEPS
    assert (run_dir / "checkpoints" / f"step{STEPS:08d}" / "COMPLETE").exists()
    assert_resumed_to_the_same_losses(*preempted_job(data, f"{config}-preempt", config=config), run_dir)


def test_preprocess_array_and_merge_equal_one_process(data, tmp_path):
    """Two JSON keys: one merge job per key, every one of them reported and waited for."""
    from tests.conftest import grown_documents

    folder, tokenizer = data["folder"], data["tokenizer"]
    corpus = tmp_path / "two_keys.jsonl"
    with open(corpus, "w", encoding="utf-8") as handle:
        for doc in grown_documents(count=200, seed=5):
            handle.write(json.dumps({"text": doc, "title": doc[:20]}, ensure_ascii=False) + "\n")
    again = tmp_path / "two_keys_again.jsonl"  # a copy: the same file given twice is refused
    again.write_bytes(corpus.read_bytes())
    single = folder / "single"
    keys = ("--json-keys", "text", "title")
    run_tool("preprocess_data", "--input", corpus, again, *keys, "--tokenizer", tokenizer, "--output-prefix",
             single, "--append-eod", "--no-progress")
    out = subprocess.run(["bash", "slurm/submit_preprocess.sh", "3", "--cpus-per-task=1", f"--output={folder}/pp-%A_%a.out",
                          "--", "--input", str(corpus), str(again), *keys, "--tokenizer", str(tokenizer),
                          "--output-prefix", str(folder / "sharded"), "--append-eod"],
                         cwd=ROOT, capture_output=True, text=True, env=train_env())
    assert out.returncode == 0, out.stderr
    merge_jobs = out.stdout.split("merge jobs")[-1].split()
    assert len(merge_jobs) == 2, out.stdout
    for job in merge_jobs:
        assert wait(job)["JobState"] == "COMPLETED", out.stdout
    for key in ("text", "title"):
        for suffix in (".bin", ".idx"):
            assert (folder / f"sharded_{key}_document{suffix}").read_bytes() == \
                (folder / f"single_{key}_document{suffix}").read_bytes()


def test_clean_array_and_dedup_equal_one_process(data, tmp_path):
    """The filter stage as an array of 3 shards, then the dedup job: the single process's documents."""
    from tests.conftest import grown_documents, write_jsonl
    from tests.test_cleaning import read_parts

    folder = data["folder"]
    docs = grown_documents(count=300, seed=8)
    corpus = write_jsonl(tmp_path / "dups.jsonl", docs + docs[:30])
    run_tool("clean_corpus", "--input", corpus, "--output", folder / "clean-one", "--workers", "1", "--no-progress")
    out = subprocess.run(["bash", "slurm/submit_clean.sh", "3", "--cpus-per-task=1", f"--output={folder}/cl-%A_%a.out",
                          "--", "--input", str(corpus), "--output", str(folder / "clean-array")],
                         cwd=ROOT, capture_output=True, text=True, env=train_env())
    assert out.returncode == 0, out.stderr
    dedup_job = out.stdout.split()[-1]
    assert wait(dedup_job)["JobState"] == "COMPLETED", out.stdout
    assert read_parts(folder / "clean-array") == read_parts(folder / "clean-one")


def test_unreachable_master_fails_with_a_clear_message(data):
    job, _, log = train_job(data, "badmaster", "srun", env={"MASTER_ADDR": "192.0.2.1", "PRETRAIN_RENDEZVOUS_TIMEOUT": "10"})
    state = wait(job)
    text = log.read_text()
    assert state["JobState"] == "FAILED"
    assert "MASTER_ADDR=192.0.2.1" in text and ("is not an address of this host" in text or "cannot reach" in text)
    assert "Traceback" not in text


def test_port_in_use_fails_with_a_clear_message(data):
    with socket.socket() as holder:
        holder.bind(("", 0))
        holder.listen()
        port = holder.getsockname()[1]
        job, _, log = train_job(data, "busyport", "srun", env={"MASTER_PORT": str(port)})
        state = wait(job)
    text = log.read_text()
    assert state["JobState"] == "FAILED" and f"MASTER_PORT={port} is already in use" in text and "Traceback" not in text


def test_batch_that_does_not_divide_by_the_world_size(data):
    job, _, log = train_job(data, "badbatch", "srun", "train.global_batch=12", "train.micro_batch=4")
    state = wait(job)
    text = log.read_text()
    assert state["JobState"] == "FAILED" and "train.global_batch=12 is not a multiple" in text and "4 x 2 = 8" in text


def test_rank_that_cannot_reach_the_master_says_so():
    """The non-zero-rank side of the rendezvous check, on a port nobody listens on."""
    from pretrain.distributed import DistEnv, RendezvousError, check_rendezvous, free_port

    env = DistEnv("slurm", 1, 0, 2, 1, "127.0.0.1", free_port())
    started = time.time()
    with pytest.raises(RendezvousError, match="cannot reach the master 127.0.0.1") as err:
        check_rendezvous(env, timeout=3)
    assert time.time() - started < 20 and "connection refused" in str(err.value)
    assert json.dumps(str(err.value))  # a plain message
