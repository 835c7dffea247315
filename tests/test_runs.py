"""What a person sees of a run and the guards around it, without training: plots and plot_runs, the
summary, checkpoint manifests and inspect_checkpoint, and the run-dir lock (live, dead, other hosts)."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pretrain import manifest
from pretrain.metrics import read_metrics
from pretrain.plots import DPI, OVERVIEW_SIZE, RedrawSchedule, write_run_plots
from pretrain.run_lock import STALE_S, Holder, RunDirInUse, RunLock
from pretrain.run_summary import build_summary, summary_lines
from tests.conftest import ROOT, skip_outside_ci


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) of a PNG, after checking its signature and header chunk."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", f"{path} is not a PNG"
    assert data.rstrip(b"\x00")[-8:-4] == b"IEND", f"{path} is cut short"
    return struct.unpack(">II", data[16:24])


def write_metrics(run_dir: Path, steps: range, start_loss: float, resumed_at: int | None = None) -> None:
    """A metrics.jsonl as the trainer writes it (with the steps after ``resumed_at`` logged twice, as a
    resumed launch leaves them when a crash came before truncation)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    lines = []
    for step in steps:
        loss = start_loss - 0.01 * step
        lines.append({"step": step, "tokens": step * 4096, "loss": loss, "lr": 1e-3, "grad_norm": 1.0,
                      "tokens_per_s": 1000.0 + step, "mfu": 0.3})
        if step % 10 == 0:
            lines.append({"step": step, "tokens": step * 4096, "eval_loss": loss + 0.1, "eval_ppl": math.exp(loss + 0.1)})
    if resumed_at is not None:
        lines += [r for r in lines if r["step"] > resumed_at]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"step": 9')


BLUE, RED = (31, 119, 180), (214, 39, 40)  # the first two runs' colours (pretrain.plots' palette)
TRAIN_BLUE = (143, 187, 217)  # the first run's training loss: blue at alpha 0.5 on white


def panel_pixels(path: Path, rows: int, columns: int, color: tuple[int, int, int]) -> list[list[np.ndarray]]:
    """For each panel of a rows x columns figure (its share of the image), a mask of the pixels drawn in
    ``color`` (within antialiasing): a blank panel has none."""
    from matplotlib.image import imread

    image = (imread(path)[..., :3] * 255).round().astype(int)
    near = np.abs(image - np.array(color)).max(axis=-1) < 30
    height, width = near.shape
    return [[near[r * height // rows:(r + 1) * height // rows, c * width // columns:(c + 1) * width // columns]
             for c in range(columns)] for r in range(rows)]


def slope(mask: np.ndarray) -> float:
    """How far the drawn line rises from the panel's left third to its right third, in pixel rows."""
    rows, columns = np.nonzero(mask)
    third = mask.shape[1] // 3
    left, right = rows[columns < third], rows[columns >= 2 * third]
    assert len(left) and len(right), "the line does not span the panel"
    return float(left.mean() - right.mean())


def test_plots_are_redrawn_at_most_once_per_interval_and_always_at_the_end():
    """A drawing holds every rank for about a second: after evaluations at most once per interval (counted from
    the start, so a short run draws once, at its end); the end always; interval 0 after every evaluation."""
    now = [100.0]
    schedule = RedrawSchedule(300.0, clock=lambda: now[0])
    drawn = []
    for at in (100.0, 250.0, 399.0, 401.0, 500.0, 702.0, 710.0):
        now[0] = at
        if schedule.due():
            drawn.append(at)
    assert drawn == [401.0, 702.0]
    now[0] = 711.0
    assert schedule.due(final=True)
    every = RedrawSchedule(0.0, clock=lambda: now[0])
    assert all(every.due() for _ in range(3))


def test_run_plots_draw_every_curve_in_its_panel(tmp_path):
    write_metrics(tmp_path / "run", range(1, 41), 7.0)  # loss falls, tokens/s rises, the rest is flat
    paths = write_run_plots(tmp_path / "run")
    assert [p.name for p in paths] == ["loss.png", "overview.png"]
    assert png_size(paths[1]) == (int(OVERVIEW_SIZE[0] * DPI), int(OVERVIEW_SIZE[1] * DPI))
    # overview: loss by step and by tokens (train and eval), learning rate, gradient norm, tokens/s, MFU
    solid, train = panel_pixels(paths[1], 2, 3, BLUE), panel_pixels(paths[1], 2, 3, TRAIN_BLUE)
    drawn = [[int(mask.sum()) for mask in row] for row in solid]
    assert all(count > 150 for row in drawn for count in row), f"blue pixels per panel: {drawn}"
    assert train[0][0].sum() > 150 and train[0][1].sum() > 150, "no training loss curve"
    assert slope(train[0][1]) < -20, "the loss by tokens does not fall"
    assert slope(solid[1][1]) > 20, "tokens/s does not rise"
    loss_solid, loss_train = (panel_pixels(paths[0], 1, 1, color)[0][0] for color in (BLUE, TRAIN_BLUE))
    assert loss_solid.sum() > 300 and loss_train.sum() > 300, "loss.png has no loss curves"
    assert not any(mask.any() for row in panel_pixels(paths[1], 2, 3, RED) for mask in row)  # one run, one colour


def test_a_resumed_run_reads_as_one_curve(tmp_path):
    write_metrics(tmp_path / "run", range(1, 31), 7.0, resumed_at=20)
    run = read_metrics(tmp_path / "run")
    assert [r["step"] for r in run.train] == list(range(1, 31))
    assert [r["step"] for r in run.evals] == [10, 20, 30]


def test_plot_runs_overlays_two_runs(tmp_path):
    write_metrics(tmp_path / "ko", range(1, 31), 7.0)
    write_metrics(tmp_path / "de", range(1, 21), 6.0)
    out = tmp_path / "compare.png"
    done = subprocess.run([sys.executable, "tools/plot_runs.py", str(tmp_path / "ko"), str(tmp_path / "de"), "--output",
                           str(out)], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "2 runs: ko, de" in done.stdout
    assert png_size(out) == (int(OVERVIEW_SIZE[0] * DPI), int(OVERVIEW_SIZE[1] * DPI))
    for color in (BLUE, RED):  # each run's curves in every panel
        drawn = [[int(mask.sum()) for mask in row] for row in panel_pixels(out, 2, 3, color)]
        assert all(count > 50 for row in drawn for count in row), f"{color} pixels per panel: {drawn}"
    missing = subprocess.run([sys.executable, "tools/plot_runs.py", str(tmp_path / "nope"), "--output", str(out)],
                             cwd=ROOT, capture_output=True, text=True)
    assert missing.returncode == 2 and "metrics.jsonl does not exist" in missing.stderr


def test_summary_reads_the_whole_run(tmp_path):
    write_metrics(tmp_path / "run", range(1, 31), 7.0)
    summary = build_summary(tmp_path / "run", status="finished", step=30, steps=30, tokens_seen=30 * 4096,
                            wall_seconds=7200, launch_seconds=60, checkpoint="ckpt", resume="python x")
    assert summary["final_eval_loss"] == pytest.approx(7.0 - 0.3 + 0.1)
    assert summary["best_eval_step"] == 30 and summary["final_eval_step"] == 30
    assert summary["mean_tokens_per_s"] == pytest.approx(1000 + 15.5)
    assert summary["mean_mfu"] == pytest.approx(0.3)
    text = "\n".join(summary_lines(summary))
    assert "122,880 tokens seen, 2.00 h" in text and "resume: python x" in text and "pretrain-export" in text


# ------------------------------------------------------------------------------------------- manifests
def fake_checkpoint(folder: Path) -> None:
    folder.mkdir(parents=True)
    (folder / "zero_pp_rank_0_mp_rank_00_optim_states.pt").write_bytes(os.urandom(300_000))
    (folder / "trainer_state.json").write_text(json.dumps({"step": 4, "consumed_samples": 32, "world_size": 2,
                                                            "zero_stage": 3}))
    names = manifest.files_of(folder)
    manifest.write(folder, manifest.describe(folder, names))
    (folder / "COMPLETE").write_text("")


def test_manifest_finds_a_flipped_byte_a_truncation_and_a_missing_file(tmp_path):
    folder = tmp_path / "step00000004"
    fake_checkpoint(folder)
    assert manifest.verify(folder) == []
    states = folder / "zero_pp_rank_0_mp_rank_00_optim_states.pt"
    data = bytearray(states.read_bytes())
    data[150_000] ^= 0xFF
    states.write_bytes(bytes(data))
    assert "checksum differs" in manifest.verify(folder)[0]
    states.write_bytes(bytes(data[:1000]))
    assert "1,000 bytes, the manifest says 300,000" in manifest.verify(folder)[0]
    states.unlink()
    assert manifest.verify(folder)[0].endswith("missing")
    assert [len(manifest.verify(folder, rank, 2) or []) for rank in (0, 1)] == [0, 1]  # ranks share the files


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_real_torch_write_failure_is_told_as_a_checkpoint_write_failure(tmp_path):
    """torch.save onto a device that is always full fails inside its C++ writer with a RuntimeError."""
    import torch

    from pretrain.checkpoint import _is_torch_write_failure, _write_failure

    with pytest.raises(RuntimeError) as failure:
        torch.save(torch.zeros(100_000), "/dev/full")
    assert _is_torch_write_failure(failure.value)
    said = _write_failure(failure.value, tmp_path / "step00000006")
    assert said.startswith("writing a file into step00000006 failed (") and "GiB free" in said
    assert not _is_torch_write_failure(RuntimeError("[../gloo/transport/tcp/pair.cc:534] Connection closed by peer"))


def test_inspect_checkpoint_lists_and_flags_a_damaged_one(tmp_path):
    checkpoints = tmp_path / "run" / "checkpoints"
    fake_checkpoint(checkpoints / "step00000004")
    (checkpoints / "step00000006").mkdir()  # died while saving
    command = [sys.executable, "tools/inspect_checkpoint.py", str(tmp_path / "run")]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "complete, verified" in done.stdout and "incomplete" in done.stdout
    (checkpoints / "step00000004" / "trainer_state.json").write_text("{}")
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 1 and "DAMAGED" in done.stdout and "trainer_state.json" in done.stdout


def test_a_checkpoint_without_a_manifest_is_refused_until_its_files_are_recorded(tmp_path):
    """A complete checkpoint without MANIFEST.json (saved before manifests, or copied without it) cannot be
    checked: it is refused (a launch exits 2 with this message: test_faults) instead of resumed unchecked;
    --write-manifest records its files, and then it is resumed from (and checked like any other)."""
    from pretrain.checkpoint import CheckpointError, find_resumable

    run_dir = tmp_path / "run"
    checkpoints = run_dir / "checkpoints"
    fake_checkpoint(checkpoints / "step00000004")
    fake_checkpoint(checkpoints / "step00000006")
    (checkpoints / "step00000006" / "MANIFEST.json").unlink()
    with pytest.raises(CheckpointError) as refused:
        find_resumable(checkpoints, 0, 1, None)
    fix = f"pretrain-inspect-checkpoint {run_dir} --write-manifest step00000006"
    assert "step00000006 is marked complete but has no MANIFEST.json" in str(refused.value) and fix in str(refused.value)
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step00000004", "step00000006"]  # nothing moved


    inspect = [sys.executable, "tools/inspect_checkpoint.py", str(run_dir)]
    listed = subprocess.run(inspect, cwd=ROOT, capture_output=True, text=True)
    assert listed.returncode == 0 and "NO MANIFEST" in listed.stdout, listed.stdout
    wrote = subprocess.run([*inspect, "--write-manifest", "step00000006"], cwd=ROOT, capture_output=True, text=True)
    assert wrote.returncode == 0 and "recorded 2 files of step00000006" in wrote.stdout, wrote.stdout + wrote.stderr
    again = subprocess.run([*inspect, "--write-manifest", "step00000006"], cwd=ROOT, capture_output=True, text=True)
    assert again.returncode == 2 and "already has MANIFEST.json" in again.stderr
    assert find_resumable(checkpoints, 0, 1, None) == "step00000006"
    (checkpoints / "step00000006" / "trainer_state.json").write_text("{}")  # and from now on it is checked
    assert find_resumable(checkpoints, 0, 1, None) == "step00000004"


# ------------------------------------------------------------------------------------------- run lock
def lock_file(run_dir: Path, **changes) -> Path:
    holder = {**Holder.me().__dict__, **changes}
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "LOCK").write_text(json.dumps(holder))
    return run_dir / "LOCK"


def test_a_live_run_holds_its_dir_and_lets_go(tmp_path):
    with RunLock(tmp_path) as held:
        with pytest.raises(RunDirInUse, match=f"host {socket.gethostname()}, pid {os.getpid()}"):
            RunLock(tmp_path).acquire()
        assert json.loads((tmp_path / "LOCK").read_text())["token"] == held.holder.token
    assert not (tmp_path / "LOCK").exists()
    RunLock(tmp_path).acquire().release()


def test_a_dead_runs_lock_does_not_block(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock_file(tmp_path / "same-host", pid=int(dead.stdout))  # that process is gone
    RunLock(tmp_path / "same-host").acquire().release()
    lock_file(tmp_path / "reused-pid", pid=os.getpid(), pid_start="1")  # this pid, but another process's start time
    RunLock(tmp_path / "reused-pid").acquire().release()
    lock_file(tmp_path / "other-host", host="node-that-died", heartbeat=time.time() - STALE_S - 5)
    RunLock(tmp_path / "other-host").acquire().release()


def test_a_live_run_on_another_node_is_refused_unless_it_is_this_jobs(tmp_path, monkeypatch):
    lock_file(tmp_path, host="gpu-node-7", pid=4242, job="1234", heartbeat=time.time() - 5)
    with pytest.raises(RunDirInUse, match="host gpu-node-7, pid 4242, Slurm job 1234"):
        RunLock(tmp_path).acquire()
    monkeypatch.setenv("SLURM_JOB_ID", "1234")  # the same job, requeued onto other nodes
    RunLock(tmp_path).acquire().release()


@pytest.mark.parametrize("answer", [FileExistsError(17, "File exists"), OSError(5, "Input/output error")])
def test_a_link_that_was_made_but_reported_failed_still_takes_the_lock(tmp_path, monkeypatch, answer):
    """On NFS a link whose reply was lost is retried, and the retry answers EEXIST (or fails) although the
    link exists: the lock is ours, told by the private file's link count, not a refusal naming this very
    process. A link that truly failed still refuses."""
    import pretrain.run_lock as run_lock

    real_link = os.link

    def made_but_reported_failed(source, target):
        real_link(source, target)
        raise answer

    monkeypatch.setattr(run_lock.os, "link", made_but_reported_failed)
    lock = RunLock(tmp_path).acquire()
    assert json.loads((tmp_path / "LOCK").read_text())["token"] == lock.holder.token
    assert sorted(p.name for p in tmp_path.iterdir()) == ["LOCK"]  # the private file is gone
    monkeypatch.setattr(run_lock.os, "link", real_link)
    with pytest.raises(RunDirInUse, match=f"pid {os.getpid()}"):
        RunLock(tmp_path).acquire()
    lock.release()
    assert not (tmp_path / "LOCK").exists()

    def failed(source, target):
        raise answer

    monkeypatch.setattr(run_lock.os, "link", failed)
    if isinstance(answer, FileExistsError):  # another launch made LOCK: refused, once the holder is read
        lock_file(tmp_path, host="gpu-node-7", pid=4242, heartbeat=time.time() - 5)
        with pytest.raises(RunDirInUse, match="host gpu-node-7, pid 4242"):
            RunLock(tmp_path).acquire()
    else:  # a file system error is said as such, never taken for a lock
        with pytest.raises(OSError, match="Input/output error"):
            RunLock(tmp_path).acquire()
        assert not (tmp_path / "LOCK").exists()


def test_a_wandb_that_cannot_start_or_fails_later_costs_only_the_mirror(tmp_path, monkeypatch, caplog):
    """The real wandb, online without an API key (a cluster node that was never logged in): a warning, and
    every record still reaches metrics.jsonl; a W&B that fails mid-run ends the mirror, not the run."""
    if importlib.util.find_spec("wandb") is None:
        skip_outside_ci("wandb is not installed (the [test] extra installs it)")
    from pretrain.metrics import MetricsWriter

    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.netrc or wandb settings with a key
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    (tmp_path / "run").mkdir()
    writer = MetricsWriter(tmp_path / "run", True, False, "pretrain-test", {"a": 1})
    assert writer.wandb is None and "W&B did not start" in caplog.text
    writer.write({"step": 1, "loss": 7.0})

    class FailingRun:
        calls = 0

        def log(self, scalars):
            FailingRun.calls += 1
            raise ConnectionError("wandb service process exited")

        def finish(self):
            raise ConnectionError("wandb service process exited")

    writer.wandb = FailingRun()
    for step in (2, 3):
        writer.write({"step": step, "loss": 7.0 - step / 10})
    writer.close()
    assert FailingRun.calls == 1 and "W&B stopped taking records (wandb service process exited)" in caplog.text
    assert [r["step"] for r in read_metrics(tmp_path / "run").train] == [1, 2, 3]


@pytest.mark.slow
def test_wandb_mirrors_a_run_and_its_resumed_launch_as_one_wandb_run(tmp_path, monkeypatch, small_corpus, tokenizer_dir):
    """run.wandb with WANDB_MODE=offline (no network): both launches log into the same W&B run id; a third
    launch whose W&B cannot start trains on without it."""
    if importlib.util.find_spec("wandb") is None:
        skip_outside_ci("wandb is not installed (the [test] extra installs it)")
    from tests.distributed import launch, preprocess

    monkeypatch.setenv("WANDB_MODE", "offline")
    preprocess(small_corpus, tokenizer_dir, tmp_path / "data", "--append-eod")
    run_dir = tmp_path / "run"
    common = (f"data.tokenizer={tokenizer_dir}", f"data.prefixes=[{tmp_path / 'data_text_document'}]",
              "data.split=80,20,0", "train.eval_samples=16", "train.eval_interval=3", "train.log_interval=1",
              "optim.warmup_steps=1", "run.wandb=pretrain-test")
    launch(1, "tiny_clm", run_dir, *common, "train.steps=3")
    launch(1, "tiny_clm", run_dir, *common, "train.steps=5")
    run_id = (run_dir / "wandb_id").read_text().strip()
    offline = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 2 and all(folder.name.endswith(f"-{run_id}") for folder in offline)
    logged = [(folder / f"run-{run_id}.wandb").read_bytes() for folder in offline]
    assert all(b"eval_loss" in data and b"tokens_per_s" in data for data in logged)
    # a third launch where W&B cannot start (online, no API key): the run goes on and logs as before
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    third = launch(1, "tiny_clm", run_dir, *common, "train.steps=7")
    assert "W&B did not start" in third.stderr and [r["step"] for r in read_metrics(run_dir).train] == list(range(1, 8))


def test_ranks_wait_for_a_conversion_by_its_files_and_stop_when_rank_0_is_gone(tmp_path, monkeypatch):
    """A big model's conversion to the universal format (resuming on another number of ranks) takes longer than
    the collective timeout: the other ranks poll its folder, and stop with rank 0's failure, or when rank 0's
    run lock says it is gone (on another node: its heartbeat, even within the same Slurm job) or is released."""
    import torch

    from pretrain.checkpoint import COMPLETE, CONVERSION_FAILED, CheckpointError, wait_for_conversion

    target, lock = tmp_path / "step00000006_universal", tmp_path / "LOCK"
    target.mkdir()
    lock_file(tmp_path, host="gpu-node-7", heartbeat=time.time() - 5)  # alive, converting
    (target / CONVERSION_FAILED).write_text("ds_to_universal: out of memory")
    with pytest.raises(CheckpointError, match="rank 0 could not convert step00000006"):
        wait_for_conversion(target, lock, poll_s=0.01)
    (target / CONVERSION_FAILED).unlink()
    lock_file(tmp_path, host="gpu-node-7", job=os.environ.get("SLURM_JOB_ID") or "77",
              heartbeat=time.time() - STALE_S - 5)
    with pytest.raises(torch.distributed.DistError, match="is gone"):
        wait_for_conversion(target, lock, poll_s=0.01)
    lock.unlink()  # rank 0 released its run (it stopped without COMPLETE or FAILED: a full disk)
    with pytest.raises(torch.distributed.DistError, match="without converting"):
        wait_for_conversion(target, lock, poll_s=0.01, grace_s=0.05)
    (target / COMPLETE).write_text("")
    wait_for_conversion(target, lock, poll_s=0.01)
    from pretrain.run_lock import may_be_alive, read_holder, why_dead

    lock_file(tmp_path, host="gpu-node-7", job="77", heartbeat=time.time() - 5)
    monkeypatch.setenv("SLURM_JOB_ID", "77")  # rank 0 of this very job, on another node: alive, although a lock
    assert may_be_alive(read_holder(lock)) and why_dead(read_holder(lock))  # takeover calls it an earlier launch's
