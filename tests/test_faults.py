"""Faults on 2 CPU ranks with real ZeRO-3 checkpoints: a rank killed with SIGKILL, a full disk while
saving, a damaged newest checkpoint, a second launch on a live run's dir, a dataset file truncated under
a running job. Each must end in a clear message within a bounded time and lose nothing: the next launch
resumes from the newest intact checkpoint.

The ranks are started directly (tests.distributed.start_ranks), as srun or mpirun start them, so that
no launcher kills the survivors for them."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT
from tests.distributed import launch, logged_step, metrics, preprocess, start_ranks, wait_until

pytestmark = pytest.mark.slow
CONFIG = "tiny_clm"
# a bound for noticing a dead peer: far below the collective timeout (train.distributed_timeout_minutes)
NOTICE_S = 60


@pytest.fixture(scope="module")
def data(tmp_path_factory, small_corpus, tokenizer_dir) -> tuple[str, ...]:
    root = tmp_path_factory.mktemp("faults-data")
    preprocess(small_corpus, tokenizer_dir, root / "data", "--append-eod")
    return data_overrides(tokenizer_dir, root / "data_text_document")


def data_overrides(tokenizer_dir, prefix) -> tuple[str, ...]:
    return (f"data.tokenizer={tokenizer_dir}", f"data.prefixes=[{prefix}]", "train.ds_config=zero3",
            "train.log_interval=1", "train.eval_interval=1000", "train.eval_samples=16", "data.split=80,20,0",
            "optim.warmup_steps=2", "train.stop_check_interval=1")


def end_all(procs, timeout: float) -> list[int]:
    """Wait for every process (the survivors must leave by themselves), then kill any left over."""
    deadline = time.monotonic() + timeout
    try:
        for proc in procs:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        raise AssertionError(f"a rank was still running {timeout} s later: it hangs") from None
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    return [proc.returncode for proc in procs]


@pytest.mark.parametrize("victim", [1, 0])
def test_a_killed_rank_stops_the_others_and_the_next_launch_resumes(victim, data, tmp_path):
    run_dir, logs = tmp_path / "run", tmp_path / "logs"
    procs = start_ranks(2, CONFIG, run_dir, *data, "train.steps=100000", "train.save_interval=3", logs=logs)
    try:
        wait_until(lambda: logged_step(run_dir) >= 7, 240, "step 7", procs)
        if victim == 1:  # meanwhile a second launch on the same dir is refused at once, naming the holder
            started = time.monotonic()
            second = launch(1, CONFIG, run_dir, *data, check=False, timeout=120)
            assert second.returncode == 2, second.stderr[-3000:]
            assert "is in use by another run" in second.stderr and f"pid {procs[0].pid}" in second.stderr
            assert time.monotonic() - started < 60
        procs[victim].kill()
        killed = time.monotonic()
        codes = end_all(procs, NOTICE_S)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    took = time.monotonic() - killed
    survivor = 1 - victim
    message = (logs / f"rank{survivor}.err").read_text()
    assert codes[survivor] == 1 and "lost contact with another rank" in message, message[-3000:]
    assert took < NOTICE_S
    latest = (run_dir / "checkpoints" / "latest").read_text().strip()
    step = int(latest.removeprefix("step"))
    done = launch(2, CONFIG, run_dir, *data, "train.save_interval=3", f"train.steps={step + 2}")
    output = done.stdout + done.stderr
    assert f"resumed from {latest}" in output
    if victim == 0:  # rank 0 held the lock and died with it: the lock of a dead process does not block
        assert "took over" in output and "is gone" in output
    assert logged_step(run_dir) == step + 2
    assert not (run_dir / "LOCK").exists()


# What a full disk does to torch.save (measured on a 200 KB tmpfs): the C++ zip writer leaves a partial file and
# raises this RuntimeError, not an OSError. Rank 1 meets it while saving step 6.
SITE_FULL_DISK = '''
import os
if os.environ.get("RANK") == "1":
    import torch
    _save = torch.save
    def _save_on_a_full_disk(obj, f, *args, **kwargs):
        if "step00000006" in str(f):
            with open(f, "wb") as partial:
                partial.write(b"PK" + bytes(100))
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")
        return _save(obj, f, *args, **kwargs)
    torch.save = _save_on_a_full_disk
'''


def test_a_full_disk_while_saving_keeps_the_previous_checkpoint(data, tmp_path):
    run_dir, logs, site = tmp_path / "run", tmp_path / "logs", tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITE_FULL_DISK)  # rank 1 cannot write step 6
    procs = start_ranks(2, CONFIG, run_dir, *data, "train.steps=9", "train.save_interval=3", logs=logs,
                        extra_env={"PYTHONPATH": str(site)})
    codes = end_all(procs, 240)
    failed = (logs / "rank1.err").read_text()
    assert codes[1] == 1 and "saving checkpoint step00000006 failed on rank 1: writing a file into step00000006 failed" \
        in failed and "unexpected pos" in failed, failed
    assert "the latest complete checkpoint is step00000003" in failed
    assert codes[0] != 0  # rank 0 noticed rank 1 leaving (or met the same error)
    checkpoints = run_dir / "checkpoints"
    assert (checkpoints / "latest").read_text().strip() == "step00000003"
    assert not (checkpoints / "step00000006" / "COMPLETE").exists()
    done = launch(2, CONFIG, run_dir, *data, "train.steps=9", "train.save_interval=3")
    assert "resumed from step00000003" in done.stdout + done.stderr
    assert (checkpoints / "step00000009" / "COMPLETE").exists() and (checkpoints / "step00000006" / "COMPLETE").exists()


def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(data, tmp_path):
    damaged, reference = tmp_path / "damaged", tmp_path / "reference"
    launch(2, CONFIG, damaged, *data, "train.steps=6", "train.save_interval=2", "train.keep_last=5")
    shutil.copytree(damaged, reference)
    newest = damaged / "checkpoints" / "step00000006"
    shard = sorted(newest.glob("*optim_states.pt"))[-1]
    raw = bytearray(shard.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # a bad copy: one bit flipped after the checkpoint was marked COMPLETE
    shard.write_bytes(bytes(raw))
    inspect = subprocess.run([sys.executable, "tools/inspect_checkpoint.py", str(damaged)], cwd=ROOT,
                             capture_output=True, text=True)
    assert inspect.returncode == 1 and "DAMAGED" in inspect.stdout and shard.name in inspect.stdout, inspect.stdout

    done = launch(2, CONFIG, damaged, *data, "train.steps=8", "train.save_interval=2", "train.keep_last=5")
    output = done.stdout + done.stderr
    assert "checkpoint step00000006 is damaged" in output and shard.name in output
    assert "resuming from step00000004 (step 4): 2 step(s) after it will be trained again" in output
    assert (damaged / "checkpoints" / "damaged" / "step00000006" / shard.name).exists()  # set aside, not deleted

    chosen = launch(2, CONFIG, reference, *data, "train.steps=8", "train.save_interval=2", "train.keep_last=5",
                    "run.resume_from=step00000004")
    assert "resumed from step00000004" in chosen.stdout + chosen.stderr
    assert (reference / "checkpoints" / "abandoned" / "step00000006").exists()
    fell_back, resumed = metrics(damaged)[0], metrics(reference)[0]
    assert [fell_back[s] for s in range(5, 9)] == [resumed[s] for s in range(5, 9)]


def test_a_dataset_file_truncated_under_a_running_job(tmp_path, tokenizer_dir, data):
    prefix = tmp_path / "data_text_document"
    source = data[1].removeprefix("data.prefixes=[").removesuffix("]")
    for suffix in (".bin", ".idx"):
        shutil.copyfile(source + suffix, str(prefix) + suffix)
    run_dir, logs = tmp_path / "run", tmp_path / "logs"
    procs = start_ranks(2, CONFIG, run_dir, *data_overrides(tokenizer_dir, prefix), "train.steps=100000",
                        "train.save_interval=1000", logs=logs)
    try:
        wait_until(lambda: logged_step(run_dir) >= 3, 240, "step 3", procs)
        bin_file = f"{prefix}.bin"
        with open(bin_file, "r+b") as handle:  # what a failed copy or a full disk leaves on a shared file system
            handle.truncate(handle.seek(0, 2) // 4)
        codes = end_all(procs, NOTICE_S + 60)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    messages = "".join((logs / f"rank{r}.err").read_text() for r in range(2))
    assert 2 in codes, messages[-3000:]
    assert f"{bin_file} ended early" in messages and "truncated or overwritten while this run read it" in messages
