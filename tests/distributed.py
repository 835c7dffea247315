"""Helpers to launch the trainer as users do (deepspeed launcher for several ranks) and read results."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from pretrain.distributed import free_port
from tests.conftest import ROOT, run_tool

LAUNCH_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def train_env() -> dict:
    """This environment for a launched run, without launcher variables a library may have set in it; a rank
    that dies of a signal prints its Python stack (faulthandler), so that a native abort says where it was."""
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARIABLES}
    return {**env, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore",
            "PYTHONFAULTHANDLER": "1"}


def launch(ranks: int, config: str, run_dir: Path, *overrides: str, check: bool = True, expect: int = 0,
           timeout: int = 600, extra_env: dict | None = None) -> subprocess.CompletedProcess:
    """Train with ``ranks`` processes: the deepspeed launcher for 2+, plain python for 1."""
    args = ["tools/train.py", "--config", config, f"run.dir={run_dir}", *overrides]
    if ranks > 1:
        deepspeed = shutil.which("deepspeed") or str(Path(sys.executable).parent / "deepspeed")
        command = [deepspeed, "--num_gpus", str(ranks), "--master_port", str(free_port()), *args]
    else:
        command = [sys.executable, *args]
    proc = subprocess.run(command, cwd=ROOT, env={**train_env(), **(extra_env or {})}, capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != expect:
        raise AssertionError(f"training failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def metrics(run_dir: Path) -> tuple[dict[int, float], list[dict]]:
    """(train loss by step, eval records) from run_dir/metrics.jsonl."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    losses = {r["step"]: r["loss"] for r in records if "loss" in r}
    return losses, [r for r in records if "eval_loss" in r]


def rank_logs(run_dir: Path) -> dict[int, str]:
    """rank -> the text of its own log file (RUN_DIR/logs/rankN.log): never two ranks' lines interleaved."""
    return {int(p.stem.removeprefix("rank")): p.read_text() for p in sorted((run_dir / "logs").glob("rank*.log"))}


def partition_sizes(run_dir: Path) -> dict[int, tuple[int, int]]:
    """rank -> (parameters held, total) from each rank's start-up log line in its own log file."""
    sizes = {}
    for rank, text in rank_logs(run_dir).items():
        found = re.findall(rf"rank {rank} on \S+ \(launcher: \w+\) holds ([\d,]+) of ([\d,]+) parameters", text)
        if found:
            held, total = found[-1]
            sizes[rank] = (int(held.replace(",", "")), int(total.replace(",", "")))
    return sizes


def preprocess(corpus: Path, tokenizer: Path, prefix: Path, *flags: str) -> None:
    run_tool("preprocess_data", "--input", corpus, "--tokenizer", tokenizer, "--output-prefix", prefix,
             "--no-progress", "--workers", "1", *flags)


def start_ranks(ranks: int, config: str, run_dir: Path, *overrides: str, logs: Path,
                extra_env: dict | None = None, new_session: bool = False) -> list[subprocess.Popen]:
    """Start ``ranks`` trainer processes directly, one per rank, as ``srun`` without --kill-on-bad-exit
    or ``mpirun`` would: no launcher kills the others when one dies, so each must notice on its own.
    Rank r writes logs/rank{r}.out and .err; ``new_session``: each rank leads a process group of its own
    (with its data-loader workers), as a command started in a terminal does."""
    port = free_port()
    logs.mkdir(parents=True, exist_ok=True)
    procs = []
    for rank in range(ranks):
        env = {**train_env(), **(extra_env or {}), "RANK": str(rank), "LOCAL_RANK": str(rank),
               "WORLD_SIZE": str(ranks), "LOCAL_WORLD_SIZE": str(ranks), "MASTER_ADDR": "127.0.0.1",
               "MASTER_PORT": str(port)}
        procs.append(subprocess.Popen(
            [sys.executable, "tools/train.py", "--config", config, f"run.dir={run_dir}", *overrides], cwd=ROOT,
            env=env, stdout=open(logs / f"rank{rank}.out", "w"), stderr=open(logs / f"rank{rank}.err", "w"),
            start_new_session=new_session))
    return procs


def wait_until(condition, timeout: float, what: str, procs: list[subprocess.Popen] | None = None) -> None:
    """Poll ``condition`` every 0.2 s; fail after ``timeout`` s, or at once if a process ended first."""
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        if procs and any(p.poll() is not None for p in procs):
            raise AssertionError(f"a process ended while waiting for {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.2)


def logged_step(run_dir: Path) -> int:
    """The last training step in run_dir/metrics.jsonl (0 before the first)."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return 0
    steps = [json.loads(line)["step"] for line in path.read_text().splitlines() if '"loss"' in line and
             line.endswith("}")]
    return max(steps, default=0)


def trained_model(run_dir: Path, step: int):
    """The trainer's model as the run built it (its config.yaml and tokenizer), with the weights of its
    checkpoint at ``step`` (saved without ZeRO: one model-states file), in eval mode."""
    import torch

    from pretrain.checkpoint import tag_for
    from pretrain.config import load_config
    from pretrain.model import build_model
    from pretrain.tokenization import load_tokenizer

    config = load_config(str(run_dir / "config.yaml"))
    tokenizer = load_tokenizer(run_dir / "tokenizer")
    model = build_model(config.model, tokenizer.vocab_size, tokenizer.specials.ids, sentence_order=False, seed=0,
                        ds_config=None)
    states = torch.load(run_dir / "checkpoints" / tag_for(step) / "mp_rank_00_model_states.pt", map_location="cpu",
                        weights_only=False)["module"]
    model.load_state_dict(states)
    return model.eval()


def assert_run_records(run_dir: Path, resumed_dir: Path, ranks: int, steps: int) -> None:
    """What every finished run writes, checked for any family: each timed step's TFLOP/s per device is its
    samples per second (over ``ranks`` devices) times the FLOPs of one sample as the run's model family counts
    them for the model the run built (its shape and padded vocabulary; for a masked LM the predicted rows a
    sample brings to the head), MFU equal to HFU without recompute; summary.json finished at the last step, the
    resumed copy counting the same tokens across its launches; both plots drawn."""
    import pytest

    from pretrain.config import load_config
    from pretrain.data.masking import max_predictions
    from pretrain.model.build import model_shape
    from pretrain.model.families import get_family
    from pretrain.model.hf import padded_vocab_size
    from pretrain.tokenization import load_tokenizer

    config = load_config(str(run_dir / "config.yaml"))
    shape, data, batch = model_shape(config.model), config.data, config.train.global_batch
    vocab = padded_vocab_size(load_tokenizer(run_dir / "tokenizer").vocab_size, config.model.vocab_multiple)
    head_rows = None
    if shape.objective == "mlm":
        head_rows = batch * max_predictions(data.seq_len, data.mask_prob, packed=bool(data.document_mask))
    per_sample = get_family(shape.family).flops(shape, data.seq_len, vocab, batch * data.seq_len, 0, head_rows) / batch
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    timed = [r for r in records if "tflops_per_device" in r]
    assert len(timed) == steps - 1  # every step but the launch's first
    for record in timed:
        counted = record["tflops_per_device"] * 1e12 * ranks / record["samples_per_s"]
        assert counted == pytest.approx(per_sample, rel=1e-6), (counted, per_sample, record)
        assert record["hfu"] == pytest.approx(record["mfu"]), record
    summaries = [json.loads((folder / "summary.json").read_text()) for folder in (run_dir, resumed_dir)]
    assert all(summary["status"] == "finished" and summary["step"] == steps for summary in summaries)
    assert summaries[0]["tokens_seen"] == summaries[1]["tokens_seen"] > 0
    for name in ("loss.png", "overview.png"):
        assert (run_dir / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
