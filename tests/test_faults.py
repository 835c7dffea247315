"""Faults on 2 CPU ranks with real ZeRO-3 checkpoints: a rank killed with SIGKILL (while training and
while saving), a full disk while saving, a damaged newest checkpoint, one without a manifest, a second
launch on a live run's dir, a dataset file truncated, overwritten or deleted under a running job. Each
must end in a clear message within a bounded time and lose nothing: the next launch resumes from the
newest intact checkpoint and reproduces the losses of a run that met no fault.

The ranks are started directly (tests.distributed.start_ranks), as srun or mpirun start them, so that
no launcher kills the survivors for them."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

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


# the undisturbed run every fault below is measured against: checkpoints at steps 2, 4 and 6
REFERENCE = ("train.steps=6", "train.save_interval=2", "train.keep_last=5")


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory) -> Path:
    """A run of 6 steps that met no fault (its run dir); tests copy it, never change it."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    launch(2, CONFIG, run_dir, *data, *REFERENCE)
    return run_dir


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


def test_ctrl_c_saves_and_stops_a_second_quits_and_a_stop_file_is_taken_once(data, tmp_path):
    """A run in a terminal: the first Ctrl-C saves a checkpoint and stops (exit 75), a second quits at once
    without a traceback (exit 130); a stop asked for with run.dir/STOP removes the file once its checkpoint is
    saved, so that the next launch trains on instead of stopping at its first check."""
    import signal

    run_dir, logs = tmp_path / "run", tmp_path / "logs"
    for ctrl_c in (1, 2, 0):  # 0: run.dir/STOP
        before = logged_step(run_dir)
        # with two Ctrl-C, the first must not have stopped the run before the second comes: no stop check
        checks = "train.stop_check_interval=100000" if ctrl_c == 2 else "train.stop_check_interval=1"
        procs = start_ranks(1, CONFIG, run_dir, *data, "train.steps=100000", "train.save_interval=100000", checks,
                            "data.num_workers=2", logs=logs, new_session=True)
        try:
            wait_until(lambda target=before + 2: logged_step(run_dir) >= target, 240, "two steps", procs)
            if ctrl_c:  # as a terminal sends it: to the rank's whole process group, its loader workers too
                os.killpg(procs[0].pid, signal.SIGINT)
                if ctrl_c == 2:  # once the first was taken (two at once would be handled as one)
                    wait_until(lambda: "Ctrl-C again" in (logs / "rank0.err").read_text(), 60, "the first", procs)
                    os.killpg(procs[0].pid, signal.SIGINT)
            else:
                (run_dir / "STOP").touch()
            code = end_all(procs, NOTICE_S)[0]
        finally:
            procs[0].kill()
        err = (logs / "rank0.err").read_text()
        if ctrl_c == 2:
            assert code == 130 and "interrupted: quit without saving" in err and "Traceback" not in err, err[-3000:]
            continue
        assert code == 75 and "stopping at step" in err, err[-3000:]
        assert err.count("Ctrl-C again quits at once") == (ctrl_c == 1)  # once: not again by each loader worker
        assert not (run_dir / "STOP").exists() and (run_dir / "STOPPED").exists()
    step = int((run_dir / "checkpoints" / "latest").read_text().strip().removeprefix("step"))
    done = launch(1, CONFIG, run_dir, *data, f"train.steps={step + 1}")  # not stopped again by the STOP file
    assert logged_step(run_dir) == step + 1 and "stopping at step" not in done.stdout + done.stderr


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


def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(data, reference, tmp_path):
    undisturbed = reference
    damaged, reference = tmp_path / "damaged", tmp_path / "reference"
    shutil.copytree(undisturbed, damaged)
    shutil.copytree(undisturbed, reference)
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


# A node dies while the checkpoint of step 6 is written: rank 1 is killed (SIGKILL) inside torch.save, after
# part of a file is on disk, as a lost node leaves it.
SITE_KILLED_WHILE_SAVING = '''
import os, signal
if os.environ.get("RANK") == "1":
    import torch
    _save = torch.save
    def _save_and_die(obj, f, *args, **kwargs):
        if "step00000006" in str(f):
            with open(f, "wb") as partial:
                partial.write(b"PK" + bytes(100))
            os.kill(os.getpid(), signal.SIGKILL)
        return _save(obj, f, *args, **kwargs)
    torch.save = _save_and_die
'''


def test_a_checkpoint_half_written_when_a_rank_died_is_never_resumed(data, reference, tmp_path):
    """README (Slurm: "a checkpoint a dying node left half-written has no COMPLETE marker and is never resumed
    from"): the relaunch resumes from the previous complete checkpoint and reproduces the undisturbed losses."""
    run_dir, logs, site = tmp_path / "run", tmp_path / "logs", tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITE_KILLED_WHILE_SAVING)
    procs = start_ranks(2, CONFIG, run_dir, *data, *REFERENCE, logs=logs, extra_env={"PYTHONPATH": str(site)})
    codes = end_all(procs, 240)
    assert codes[1] == -9 and codes[0] == 1, (logs / "rank0.err").read_text()[-3000:]
    checkpoints = run_dir / "checkpoints"
    half = checkpoints / "step00000006"
    assert half.is_dir() and any(half.iterdir()) and not (half / "COMPLETE").exists()
    (checkpoints / "latest").write_text("step00000006\n")  # even where `latest` names it: never trusted
    done = launch(2, CONFIG, run_dir, *data, *REFERENCE)
    assert "resumed from step00000004" in done.stdout + done.stderr
    assert (half / "COMPLETE").exists() and (checkpoints / "latest").read_text().strip() == "step00000006"
    assert metrics(run_dir)[0] == metrics(reference)[0]  # steps 1-6: the same losses as the undisturbed run


def test_a_checkpoint_without_a_manifest_is_refused_at_launch(data, reference, tmp_path):
    """Its files cannot be checked: the launch stops (exit 2) and says how to go on (test_runs: the way on)."""
    run_dir = tmp_path / "run"
    shutil.copytree(reference, run_dir)
    (run_dir / "checkpoints" / "step00000006" / "MANIFEST.json").unlink()
    refused = launch(1, CONFIG, run_dir, *data, "train.steps=8", check=False, timeout=300)
    assert refused.returncode == 2, refused.stderr[-3000:]
    assert "error: checkpoint step00000006 is marked complete but has no MANIFEST.json" in refused.stderr
    assert "--write-manifest step00000006" in refused.stderr and "Traceback" not in refused.stderr
    message = readme_message("a checkpoint marked complete but without `MANIFEST.json`")
    assert any(message.fullmatch(line) for line in refused.stderr.splitlines()), (message.pattern, refused.stderr)
    assert (run_dir / "checkpoints" / "step00000006").is_dir()  # nothing moved or deleted


def readme_message(row_start: str) -> re.Pattern:
    """The message the README's "What can go wrong" row starting with ``row_start`` quotes, as a pattern:
    R a rank, PREFIX and RUN_DIR paths, N a number, T a time, "..." any text."""
    row = next(line for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
               if line.startswith(f"| {row_start}"))
    cell = row.split(" | ")[1]  # "what you see": its first quote (in ``...`` where the message holds a `)
    quoted = re.search(r"``(.+?)``" if "``" in cell else r"`([^`]+)`", cell).group(1)
    pattern = re.escape(quoted)
    for placeholder, meaning in (("PREFIX", r"\S+"), ("RUN_DIR", r"\S+"), (r"rank\ R", r"rank \d+"), (r"\ N\ ", r" [\d,]+ "),
                                 (r"\ T", r" [\d: -]+"), (r"\.\.\.", ".*")):
        pattern = pattern.replace(placeholder, meaning)
    return re.compile(pattern)


def copy_dataset(data: tuple[str, ...], prefix: Path) -> None:
    source = data[1].removeprefix("data.prefixes=[").removesuffix("]")
    for suffix in (".bin", ".idx"):
        shutil.copyfile(source + suffix, str(prefix) + suffix)


@pytest.mark.parametrize("change", ["truncated", "overwritten"])
def test_a_dataset_file_changed_under_a_running_job_stops_it(change, tmp_path, tokenizer_dir, data):
    """Truncated (a failed copy, a full disk), or overwritten in place with other tokens of the same size
    (which reads would hand out without a sign): every rank stops with the README's message, exit 2."""
    prefix = tmp_path / "data_text_document"
    copy_dataset(data, prefix)
    run_dir, logs = tmp_path / "run", tmp_path / "logs"
    procs = start_ranks(2, CONFIG, run_dir, *data_overrides(tokenizer_dir, prefix), "train.steps=100000",
                        "train.save_interval=1000", logs=logs)
    try:
        wait_until(lambda: logged_step(run_dir) >= 3, 240, "step 3", procs)
        bin_file = f"{prefix}.bin"
        with open(bin_file, "r+b") as handle:
            if change == "truncated":  # what a failed copy or a full disk leaves on a shared file system
                handle.truncate(handle.seek(0, 2) // 4)
            else:  # another dataset of the same size written over it (cp onto the file, a bad sync)
                tokens = bytearray(handle.read())
                handle.seek(0)
                handle.write(bytes(tokens[2:] + tokens[:2]))
        codes = end_all(procs, NOTICE_S + 60)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    messages = "".join((logs / f"rank{r}.err").read_text() for r in range(2))
    assert 2 in codes, messages[-3000:]
    said = [line for line in messages.splitlines() if line.startswith("error (rank")]
    assert said and all(f"{bin_file} changed while this run read it" in line for line in said), messages[-3000:]
    message = readme_message("a dataset `.bin` truncated or overwritten")
    assert all(message.fullmatch(line) for line in said), (message.pattern, said)
    assert "Traceback" not in messages


def test_a_dataset_file_deleted_under_a_running_job(tmp_path, tokenizer_dir, data, reference):
    """Deleted while the run reads it: the run goes on with the file it opened (the same losses as the run
    that met no fault), warning at each checkpoint that a relaunch would not find it."""
    prefix = tmp_path / "data_text_document"
    copy_dataset(data, prefix)
    run_dir, logs = tmp_path / "run", tmp_path / "logs"
    overrides = (*data_overrides(tokenizer_dir, prefix), *REFERENCE)
    procs = start_ranks(2, CONFIG, run_dir, *overrides, logs=logs)
    try:
        wait_until(lambda: logged_step(run_dir) >= 1, 240, "step 1", procs)
        Path(f"{prefix}.bin").unlink()
        codes = end_all(procs, 240)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    said = (logs / "rank0.err").read_text()
    assert codes == [0, 0], said[-3000:]
    assert metrics(run_dir)[0] == metrics(reference)[0]
    warning = readme_message("a dataset `.bin` deleted or replaced")
    warned = [line.split(" WARNING ", 1)[1] for line in said.splitlines() if " WARNING " in line and ".bin" in line]
    assert warned and all(warning.fullmatch(line) for line in warned), (warning.pattern, warned)
    assert f"{prefix}.bin was deleted while this run reads it" in warned[0]


def test_the_reader_stops_at_a_file_changed_in_place_and_keeps_the_one_it_opened_when_moved(tmp_path):
    """The reader alone, for every way a .bin can change under it: truncated or overwritten in place (same
    size, other tokens) stops the next read; deleted or replaced by a rename goes on with the file it
    opened, and ``changed_on_disk`` (the warning at each checkpoint) says what happened."""
    import numpy as np

    from pretrain.data.indexed import DataFileError, IndexedDataset, IndexedDatasetWriter

    def dataset(name: str, first: int) -> IndexedDataset:
        with IndexedDatasetWriter(tmp_path / name, np.uint16) as writer:
            for doc in range(20):
                writer.add_document([np.arange(first + doc, first + doc + 50)])
            writer.finalize()
        return IndexedDataset(tmp_path / name)

    for change in ("truncated", "overwritten"):
        data = dataset(change, 0)
        before = data.document(3).tolist()
        with open(f"{data.prefix}.bin", "r+b") as handle:
            if change == "truncated":
                handle.truncate(1000)
            else:
                handle.write(np.arange(1000, 1000 + 20 * 50, dtype=np.uint16).tobytes())
        with pytest.raises(DataFileError, match=r"changed while this run read it .* it was truncated or overwritten"):
            data.document(3)
        assert before == list(range(3, 53))
    for change in ("deleted", "replaced by another file"):
        data = dataset(change.split()[0], 0)
        if change == "deleted":
            Path(f"{data.prefix}.bin").unlink()
        else:
            other = dataset("other", 500)
            Path(f"{other.prefix}.bin").rename(f"{data.prefix}.bin")
        assert data.document(3).tolist() == list(range(3, 53))  # the file it opened
        assert data.changed_on_disk() == f"{data.prefix}.bin was {change}"
