"""The learning-rate schedules: WSD's shape (warmup, stable, a 1-sqrt or linear decay over the last
optim.decay_fraction of the steps) beside cosine, its validation, and a run branched from another's
checkpoint with run.resume_from under a changed train.steps and schedule: it follows its own lr curve
from its first step on and is exactly the run trained with that schedule from the start, and a relaunch of
its command goes on from where it stopped."""

from __future__ import annotations

import math
import shutil

import pytest
import torch

from pretrain.config import Config, ConfigError, OptimConfig, validate
from pretrain.engine import follow_schedule_after_resume, lr_multiplier
from tests.distributed import launch, metrics, preprocess


def wsd(**changes) -> OptimConfig:
    return OptimConfig(**{"lr": 1e-3, "min_lr": 1e-4, "warmup_steps": 10, "decay": "wsd", **changes})


def test_wsd_warms_up_holds_then_decays_as_1_minus_sqrt():
    curve = lr_multiplier(wsd(), 100)  # the decay: the last 20 of 100 steps
    assert [curve(s) for s in range(10)] == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert all(curve(s) == 1.0 for s in range(10, 81))  # stable, the decay's first point included
    floor = 0.1
    for step in (85, 90, 95, 99):
        assert curve(step) == pytest.approx(floor + (1 - floor) * (1 - math.sqrt((step - 80) / 20)))
    assert curve(100) == pytest.approx(floor) and curve(150) == pytest.approx(floor)
    decay = [curve(s) for s in range(80, 101)]
    assert all(a > b for a, b in zip(decay, decay[1:]))
    # 1-sqrt falls fast at first: half way, the lr is below the linear decay's
    linear = lr_multiplier(wsd(wsd_shape="linear"), 100)
    assert linear(90) == pytest.approx(floor + (1 - floor) * 0.5) and curve(90) < linear(90)


def test_decay_fraction_sets_where_the_decay_starts():
    curve = lr_multiplier(wsd(decay_fraction=0.5, warmup_steps=0), 40)
    assert curve(19) == 1.0 and curve(20) == 1.0 and curve(21) < 1.0
    # 0.04 of a step rounds to none: the decay still takes one, reaching min_lr at step 40
    tiny = lr_multiplier(wsd(decay_fraction=0.001, warmup_steps=0), 40)
    assert tiny(38) == 1.0 and tiny(39) == 1.0 and tiny(40) == pytest.approx(0.1)


def test_cosine_is_unchanged():
    curve = lr_multiplier(OptimConfig(lr=1e-3, min_lr=1e-4, warmup_steps=10, decay="cosine"), 100)
    assert curve(10) == pytest.approx(1.0) and curve(100) == pytest.approx(0.1)
    assert curve(55) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))


def test_a_resumed_schedule_sets_the_next_steps_lr():
    """The optimizer and LambdaLR bring back the checkpoint's lr and base lr; the first step after a
    resume under another schedule or optim.lr must already take the new schedule's lr."""
    saved_under, resumed_under = wsd(decay_fraction=0.25, warmup_steps=2), wsd(lr=2e-3, decay_fraction=0.625,
                                                                               warmup_steps=2)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=saved_under.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_multiplier(saved_under, 12))
    for _ in range(4):
        optimizer.step()
        scheduler.step()
    resumed = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=resumed_under.lr)
    again = torch.optim.lr_scheduler.LambdaLR(resumed, lr_multiplier(resumed_under, 8))
    resumed.load_state_dict(optimizer.state_dict())
    again.load_state_dict(scheduler.state_dict())
    assert resumed.param_groups[0]["lr"] == pytest.approx(1e-3)  # the checkpoint's: what the step would take
    follow_schedule_after_resume(again, resumed_under, 8)
    curve = lr_multiplier(resumed_under, 8)
    assert curve(4) < 1 and resumed.param_groups[0]["lr"] == pytest.approx(2e-3 * curve(4))
    resumed.step()
    again.step()
    assert resumed.param_groups[0]["lr"] == pytest.approx(2e-3 * curve(5))


def optim_problems(**optim) -> list[str]:
    """validate()'s problems about the optim section of a config otherwise valid but for its data."""
    config = Config()
    config.data.tokenizer, config.train.steps = "tok", 100
    for key, value in optim.items():
        setattr(config.optim, key, value)
    with pytest.raises(ConfigError) as error:
        validate(config, 1)  # no data.prefixes: there is always a problem
    return [problem for problem in error.value.problems if "optim." in problem]


def test_validation_names_the_wsd_keys():
    assert optim_problems(decay="wsd", warmup_steps=10) == []
    assert "optim.decay_fraction=0 must be above 0 and at most 1" in optim_problems(decay="wsd", decay_fraction=0)
    assert "optim.decay_fraction=1.5 must be above 0 and at most 1" in optim_problems(decay_fraction=1.5)
    [overlap] = optim_problems(decay="wsd", warmup_steps=90, decay_fraction=0.2)
    assert "the warmup (90 steps) and the decay (the last 20 of train.steps=100" in overlap
    assert optim_problems(decay="cosine", warmup_steps=90, decay_fraction=0.2) == []  # the fraction is WSD's
    assert "optim.decay='step' must be cosine, linear, constant or wsd" in optim_problems(decay="step")


@pytest.mark.slow
def test_a_branched_run_follows_its_new_schedule_exactly(tmp_path, small_corpus, tokenizer_dir):
    """A long WSD run is stopped in its stable phase at step 4; a new run dir holding that checkpoint
    resumes it with run.resume_from, train.steps=8 and a decay over the last 5 steps, which began before
    the branch point, so the branch's first step already needs another lr than the checkpoint's. The
    branch's lr curve is the new schedule's and its losses are those of a run trained with it from the
    start."""
    preprocess(small_corpus, tokenizer_dir, tmp_path / "data", "--append-eod")
    common = (f"data.tokenizer={tokenizer_dir}", f"data.prefixes=[{tmp_path / 'data_text_document'}]",
              "data.split=90,10,0", "train.global_batch=4", "train.log_interval=1", "train.save_interval=4",
              "train.eval_interval=1000", "train.eval_samples=8", "optim.warmup_steps=2", "optim.decay=wsd",
              "run.tensorboard=false", "run.plots=false")
    branch = ("train.steps=8", "optim.decay_fraction=0.625")  # decays over steps 3..8
    launch(1, "tiny_clm", tmp_path / "long", *common, "train.steps=12", "optim.decay_fraction=0.25",
           "train.exit_interval=4", expect=75)
    # the README's recipe: a new run dir holding only the checkpoint to branch from
    shutil.copytree(tmp_path / "long" / "checkpoints" / "step00000004", tmp_path / "branch" / "checkpoints" / "step00000004")
    # the branch stops at step 6; the same command again (run.resume_from kept, as in the summary's resume line)
    # goes on from step 6: the branch is taken once, never back to step 4 with steps 5-6 set aside
    command = ("tiny_clm", tmp_path / "branch", *common, *branch, "run.resume_from=step00000004", "train.exit_interval=2")
    first = launch(1, *command, expect=75)
    assert "began at step 3, before the checkpoint's step 4: the lr goes from the peak 0.003 to" in first.stderr
    assert (tmp_path / "branch" / "STOPPED").is_file()  # what slurm/train.sbatch requeues on (torchrun says 1, not 75)
    again = launch(1, *command)
    assert not (tmp_path / "branch" / "STOPPED").exists()  # a launch that goes on clears it
    assert "run.resume_from=step00000004 was taken by an earlier launch of this run" in again.stderr, again.stderr[-3000:]
    assert not (tmp_path / "branch" / "checkpoints" / "abandoned").exists()
    launch(1, "tiny_clm", tmp_path / "straight", *common, *branch)

    def records(name: str) -> dict[int, dict]:
        import json

        lines = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
        return {r["step"]: r for r in map(json.loads, lines) if "loss" in r}

    got, want = records("branch"), records("straight")
    assert sorted(got) == list(range(5, 9))
    curve = lr_multiplier(OptimConfig(lr=3e-3, min_lr=3e-4, warmup_steps=2, decay="wsd", decay_fraction=0.625), 8)
    for step in range(5, 9):  # the lr logged at a step is the one the next step takes
        assert got[step]["lr"] == pytest.approx(3e-3 * curve(step), rel=1e-9), step
        assert got[step]["loss"] == pytest.approx(want[step]["loss"], rel=1e-6, abs=1e-7), step
    assert metrics(tmp_path / "long")[0][4] == pytest.approx(want[4]["loss"], rel=1e-6)  # the same first 4 steps


def test_a_branch_is_known_past_a_damaged_newest_state(tmp_path):
    """The newest checkpoint's trainer_state.json cut short (a damaged checkpoint, set aside at resume): the
    branch is read from the next one, so the relaunch does not go back to the branch's tag."""
    import json

    from pretrain.checkpoint import branch_of, resume_candidates

    for step, state in ((4, {"step": 4}), (6, {"step": 6, "branched_from": "step00000004"}), (8, None)):
        folder = tmp_path / f"step{step:08d}"
        folder.mkdir()
        (folder / "COMPLETE").write_text("")
        (folder / "trainer_state.json").write_text(json.dumps(state) if state else '{"step": 8, "bran')
    assert branch_of(tmp_path, resume_candidates(tmp_path)) == "step00000004"
    assert branch_of(tmp_path, ["step00000004"]) is None
